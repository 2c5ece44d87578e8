"""A job's inputs on an instance, fetched from the session's moto_server."""

from pathlib import Path
from typing import Any

import pytest

from worker.input_manifest import ManifestEntry, blob_key, encode_manifest, manifest_key
from worker.instance_inputs import InputFetchError, InstanceInputs

SHA_OF_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"  # b"a"


def listed(s3: Any, job: str, *entries: ManifestEntry) -> None:
    s3.put_object(Bucket="files", Key=manifest_key(job), Body=encode_manifest(list(entries)))


def test_an_input_altered_in_the_bucket_is_refused(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket="files", Key=blob_key(SHA_OF_A), Body=b"b")
    listed(s3, "job1", ManifestEntry("a.txt", 1, SHA_OF_A))
    with pytest.raises(InputFetchError, match="another sha256"):
        InstanceInputs(lambda: s3, tmp_path / "instance").of("job1", "files")


@pytest.mark.parametrize("name", ["../a.txt", "/etc/a.txt", "d/../../a.txt"])
def test_an_input_named_out_of_its_tree_is_refused(s3: Any, tmp_path: Path, name: str) -> None:
    s3.put_object(Bucket="files", Key=blob_key(SHA_OF_A), Body=b"a")
    listed(s3, "job1", ManifestEntry(name, 1, SHA_OF_A))
    with pytest.raises(InputFetchError, match="leads out"):
        InstanceInputs(lambda: s3, tmp_path / "instance").of("job1", "files")
    assert not (tmp_path / "a.txt").exists()


def test_a_list_that_is_not_one_is_refused(s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket="files", Key=manifest_key("job1"), Body=b'[{"name": 1}]')
    with pytest.raises(InputFetchError, match="not one"):
        InstanceInputs(lambda: s3, tmp_path / "instance").of("job1", "files")


def test_an_input_a_task_changed_is_fetched_again_for_the_next_job(s3: Any, tmp_path: Path) -> None:
    # A task run as the worker's own user owns its inputs' links and may make one
    # writable; another job must still get what the bucket holds.
    s3.put_object(Bucket="files", Key=blob_key(SHA_OF_A), Body=b"a")
    listed(s3, "job1", ManifestEntry("a.txt", 1, SHA_OF_A))
    listed(s3, "job2", ManifestEntry("a.txt", 1, SHA_OF_A))
    inputs = InstanceInputs(lambda: s3, tmp_path / "instance")
    first = inputs.of("job1", "files").root / "a.txt"
    first.chmod(0o644)
    first.write_bytes(b"poisoned")
    assert (inputs.of("job2", "files").root / "a.txt").read_bytes() == b"a"
    assert (tmp_path / "instance").stat().st_mode & 0o777 == 0o700  # the worker's alone
