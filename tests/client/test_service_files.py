"""A service job's files at the client: inputs sent by content, outputs brought
back only as the record names them and never outside the output folder (the
scheduler stubbed)."""

import hashlib
import io
import tarfile
from pathlib import Path
from typing import cast

from client.service_client import SchedulerClient
from client.service_files import ServiceOutputs, send_inputs
from worker.input_manifest import decode_manifest
from worker.inputs import check_uploads
from worker.result import OutputFile, Result, Status


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StubScheduler:
    """Answers as a scheduler would: it lacks what it was never sent; serves tars."""

    def __init__(self, tar: bytes = b"") -> None:
        self.have: set[str] = set()
        self.sent: list[str] = []
        self.tar = tar

    def add_inputs(self, manifest: bytes) -> tuple[str, list[str]]:
        wanted = {entry.sha256 for entry in decode_manifest(manifest)}
        return "id", sorted(wanted - self.have)

    def put_blob(self, sha256: str, path: Path, size: int) -> None:
        assert sha(path.read_bytes()) == sha256
        assert path.stat().st_size == size
        self.sent.append(sha256)
        self.have.add(sha256)

    def task_files(self, _job_id: str, _label: str, into: Path, _max_bytes: int) -> None:
        into.write_bytes(self.tar)


def tar_of(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def record(*files: tuple[str, bytes]) -> Result:
    named = tuple(OutputFile(name, len(data), sha(data)) for name, data in files)
    return Result(
        id="0b000001:1:1", job="0b000001", file="w.txt", line=1, task="make",
        status=Status.SUCCEEDED, exit_code=0, worker="local-1", started_at=0.0,
        finished_at=0.0, duration_ms=1.0, error=None, stdout="", stderr="", truncated=False,
        files=named,
    )  # fmt: skip


def test_only_the_contents_the_scheduler_lacks_are_sent(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"same")
    (tmp_path / "b").write_bytes(b"same")
    (tmp_path / "c").write_bytes(b"other")
    uploads = check_uploads([str(tmp_path / "d"), str(tmp_path / "b"), str(tmp_path / "c")])
    stub = StubScheduler()
    first = send_inputs(cast(SchedulerClient, stub), uploads)
    assert (first.files, first.sent, first.present) == (3, 2, 0)
    second = send_inputs(cast(SchedulerClient, stub), uploads)
    assert (second.files, second.sent, second.present) == (3, 0, 2)
    assert sorted(stub.sent) == sorted({sha(b"same"), sha(b"other")})


def test_a_tasks_files_come_back_under_its_label(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stub = StubScheduler(tar_of(("r/x", b"ex")))
    outputs = ServiceOutputs(cast(SchedulerClient, stub), "0b000001", out)
    [back] = outputs.records([record(("r/x", b"ex"))])
    assert back.files_error is None
    assert (out / "w.txt-1" / "r" / "x").read_bytes() == b"ex"


def test_a_tar_that_leads_out_or_differs_from_the_record_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for tar, named in (
        (tar_of(("../escaped", b"x")), ("../escaped", b"x")),
        (tar_of(("x", b"forged")), ("x", b"genuine")),
        (tar_of(("x", b"x"), ("extra", b"e")), ("x", b"x")),
    ):
        stub = StubScheduler(tar)
        outputs = ServiceOutputs(cast(SchedulerClient, stub), "0b000001", out)
        [back] = outputs.records([record(named)])
        outputs.close()
        assert back.files == ()
        assert back.files_error is not None
        assert "not brought back" in back.files_error
        assert not (tmp_path / "escaped").exists()
        assert list(out.iterdir()) == []
