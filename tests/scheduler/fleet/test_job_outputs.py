"""Bringing fleet tasks' files back, against the session's moto_server: a tar
that is not what a task's may be writes nothing and is named in the record."""

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from scheduler.fleet.job_outputs import OutputFetcher
from worker.output_pack import object_key
from worker.result import Outcome, Result, Status, make_result
from worker.usage import UsageMeter


def tar_of(*members: tuple[str, bytes, bytes]) -> bytes:
    """A tar of (name, type, data) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


def record_of(s3: Any, body: bytes, key: str | None = None) -> Result:
    key = key or object_key("job1", 1, 7, hashlib.sha256(body).hexdigest())
    s3.put_object(Bucket="files", Key=key, Body=body)
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1000.0, files_object=key)
    return make_result("job1:1:7", "job1", "dir/w.txt", 7, "x", "i-1", outcome)


def fetcher(s3: Any, tmp_path: Path) -> OutputFetcher:
    return OutputFetcher(s3, UsageMeter(), "files", "job1", tmp_path / "out")


def test_a_tasks_tar_comes_back_under_its_folder_and_the_record_names_its_files(
    s3: Any, tmp_path: Path
) -> None:
    body = tar_of(("a.txt", tarfile.REGTYPE, b"one"), ("d/b.txt", tarfile.REGTYPE, b"two"))
    record = fetcher(s3, tmp_path).bring_back(record_of(s3, body))
    assert [(f.path, f.size) for f in record.files or ()] == [("a.txt", 3), ("d/b.txt", 3)]
    assert record.files_error is None
    assert (tmp_path / "out" / "w.txt-7" / "d" / "b.txt").read_bytes() == b"two"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".taskfleet-partial", "w.txt-7"]
    assert list((tmp_path / "out" / ".taskfleet-partial").iterdir()) == []


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (("../x", tarfile.REGTYPE, b"x"), "'../x' leads out of its folder"),
        (("/tmp/abs", tarfile.REGTYPE, b"x"), "'/tmp/abs' leads out of its folder"),
        (("pw", tarfile.SYMTYPE, b""), "'pw' is not a regular file"),
    ],
)
def test_a_tar_with_an_escape_is_refused_named_in_the_record_and_writes_nothing(
    s3: Any, tmp_path: Path, member: tuple[str, bytes, bytes], named: str
) -> None:
    body = tar_of(("first.txt", tarfile.REGTYPE, b"1"), member)
    record = fetcher(s3, tmp_path).bring_back(record_of(s3, body))
    assert record.files == ()
    assert record.files_error == f"not brought back: {named}"
    assert not (tmp_path / "out" / "w.txt-7").exists()
    assert not (tmp_path / "x").exists()
    assert list((tmp_path / "out" / ".taskfleet-partial").iterdir()) == []


def test_a_tar_altered_on_the_way_or_of_another_job_is_refused(s3: Any, tmp_path: Path) -> None:
    body = tar_of(("a.txt", tarfile.REGTYPE, b"one"))
    altered = record_of(s3, body, object_key("job1", 1, 7, "0" * 64))
    record = fetcher(s3, tmp_path).bring_back(altered)
    assert record.files_error is not None
    assert "does not match its name's sha256" in record.files_error
    other = record_of(s3, body, object_key("job2", 1, 7, hashlib.sha256(body).hexdigest()))
    record = fetcher(s3, tmp_path).bring_back(other)
    assert record.files_error is not None
    assert "is not a tar of this job's" in record.files_error
    assert not (tmp_path / "out" / "w.txt-7").exists()
