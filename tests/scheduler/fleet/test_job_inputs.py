"""Shipping a job's inputs and fetching them on instances, against a real moto_server."""

import base64
import datetime
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest

from scheduler.fleet import job_inputs
from scheduler.fleet.job_inputs import ship_inputs
from worker.inputs import check_uploads
from worker.instance_inputs import InstanceInputs


def counted_s3() -> tuple[Any, Counter[str]]:
    """An S3 client (the emulator's, from the environment) and the requests it sends."""
    s3 = boto3.client("s3")
    sent: Counter[str] = Counter()
    s3.meta.events.register("before-send.s3.*", lambda request, **_: sent.update([request.method]))
    return s3, sent


@pytest.mark.usefixtures("moto_endpoint")
def test_an_unchanged_file_is_not_sent_again_and_an_instance_fetches_it_once(
    tmp_path: Path,
) -> None:
    s3, sent = counted_s3()
    s3.create_bucket(Bucket="files")
    sent.clear()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"\7" * 3_000_000)
    (tmp_path / "data" / "copy.bin").write_bytes(b"\7" * 3_000_000)  # same content
    (tmp_path / "small.txt").write_text("small")
    files = check_uploads([str(tmp_path / "data"), str(tmp_path / "small.txt")])

    assert ship_inputs(s3, "files", "job1", files) == (2, 0)
    assert sent == {"HEAD": 2, "PUT": 3}  # two contents, then the job's list
    sent.clear()
    assert ship_inputs(s3, "files", "job2", files) == (0, 2)
    assert sent == {"HEAD": 2, "PUT": 1}  # only the list: nothing sent again
    sent.clear()

    instance = InstanceInputs(lambda: s3, tmp_path / "instance")
    for job in ("job1", "job1", "job2", "job2"):  # several tasks, two jobs
        staged = instance.of(job, "files")
        assert sorted(staged.files) == ["data/big.bin", "data/copy.bin", "small.txt"]
    assert sent == {"GET": 4}  # two lists, two contents: each fetched once
    task = tmp_path / "task"
    task.mkdir()
    staged.link_into(task)
    assert (task / "data" / "copy.bin").read_bytes() == b"\7" * 3_000_000
    assert (task / "small.txt").read_text() == "small"
    # A worker started again on the instance builds the job's tree afresh (a
    # task may have changed the last one) from the contents it has: only the
    # job's list is fetched again.
    sent.clear()
    assert sorted(InstanceInputs(lambda: s3, tmp_path / "instance").of("job1", "files").files)
    assert sent == {"GET": 1}


@pytest.mark.usefixtures("moto_endpoint")
def test_an_input_found_old_is_renewed_so_it_outlives_the_job_that_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, sent = counted_s3()
    s3.create_bucket(Bucket="files")
    (tmp_path / "a.txt").write_text("a")
    files = check_uploads([str(tmp_path / "a.txt")])
    ship_inputs(s3, "files", "job1", files)
    sent.clear()
    monkeypatch.setattr(job_inputs, "RENEW_AFTER", datetime.timedelta(0))
    assert ship_inputs(s3, "files", "job2", files) == (0, 1)
    assert sent == {"HEAD": 1, "PUT": 2}  # the copy onto itself, then the list


@pytest.mark.usefixtures("moto_endpoint")
def test_each_input_goes_up_with_its_sha256_for_s3_to_check(tmp_path: Path) -> None:
    # S3 refuses a body whose checksum is not the one given (a file written to
    # while it is sent), so no object under inputs/sha256/ holds other bytes.
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="files")
    given: list[bytes] = []
    s3.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: given.append(request.headers.get("x-amz-checksum-sha256", b"")),
    )
    (tmp_path / "in.txt").write_bytes(b"a")
    ship_inputs(s3, "files", "job1", check_uploads([str(tmp_path / "in.txt")]))
    assert given[0] == base64.b64encode(
        hashlib.sha256(b"a").digest()
    )  # the input; the job's list follows it
