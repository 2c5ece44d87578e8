"""A fleet job's inputs on an instance: fetched once, seen by every task.

An instance keeps each input it fetched under its sha256 (``blobs/``) and, per
job, a read-only tree of hard links to them named as the job's list says
(``jobs/<job>/``): the tree its tasks' directories link to
(worker.inputs.Staged). A file another job shipped with the same content is
not fetched again. Slots ask at once: one fetches, the others wait for it.
The cache lives as long as the instance's worker directory: instances are
short-lived (they end themselves when idle), so nothing is evicted.

Tasks of other jobs must not read a job's inputs, so the cache is the worker's
alone (0700): a task reaches the files only through the links in its own
directory. And a task that runs as the worker's own user (no task user) owns
the files it was given, so it could make one writable and change it: a blob is
hashed again before another job uses it, and a job's tree is built afresh by
each worker, never taken as a worker before it left it.
"""

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.input_manifest import blob_key, decode_manifest, manifest_key
from worker.inputs import READ_ONLY_DIR, READ_ONLY_FILE, Staged
from worker.output_pack import plain_name, sha256_of
from worker.workdir import remove_tree

FETCH_BUFFER_BYTES = 1024 * 1024


class InputFetchError(Exception):
    """A job's inputs could not be fetched as its list names them."""


class InstanceInputs:
    """The inputs of the jobs this instance ran, under ``root``; ``s3`` makes the
    S3 client (once, when a job first has inputs)."""

    def __init__(self, s3: Callable[[], Any], root: Path) -> None:
        self._s3_factory = s3
        self._s3: Any = None
        self.blobs = root / "blobs"
        self.jobs = root / "jobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.jobs.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        self._staged: dict[str, Staged] = {}
        self._lock = threading.Lock()

    def of(self, job: str, bucket: str) -> Staged:
        """The job's inputs, staged: fetched now from ``bucket`` unless this
        instance has them; ``InputFetchError`` (or botocore's) if they cannot be."""
        with self._lock:  # one fetch a job; a second slot waits for it
            if job not in self._staged:
                if self._s3 is None:
                    self._s3 = self._s3_factory()
                self._staged[job] = self._stage(job, bucket)
            return self._staged[job]

    def _stage(self, job: str, bucket: str) -> Staged:
        tree = self.jobs / job
        remove_tree(tree)  # a worker before this one, on this instance, left it
        body = self._s3.get_object(Bucket=bucket, Key=manifest_key(job))["Body"].read()
        try:
            entries = decode_manifest(body)
        except ValueError as error:  # msgspec's errors are ValueErrors
            raise InputFetchError(f"job {job}: its input list is not one: {error}") from error
        building = self.jobs / f".{job}.partial"
        remove_tree(building)  # what a worker that died while building it left
        building.mkdir()
        for entry in entries:
            if not plain_name(entry.name):
                raise InputFetchError(f"job {job}: input name {entry.name!r} leads out")
            blob = self._blob(bucket, entry.sha256)
            target = building / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(blob, target)
        for directory, _, _ in os.walk(building, topdown=False):
            Path(directory).chmod(READ_ONLY_DIR)
        building.rename(tree)
        return Staged.read(tree)

    def _blob(self, bucket: str, sha256: str) -> Path:
        """The input with this content, fetched unless it is here; its hash checked."""
        blob = self.blobs / sha256
        if blob.exists():
            if sha256_of(blob) == sha256:
                return blob
            blob.unlink()  # changed by a task (see above): fetched again
        partial = self.blobs / f".{sha256}.partial"
        partial.unlink(missing_ok=True)  # a worker that died while fetching it left it
        digest = hashlib.sha256()
        body = self._s3.get_object(Bucket=bucket, Key=blob_key(sha256))["Body"]
        with partial.open("wb") as file:
            while block := body.read(FETCH_BUFFER_BYTES):
                digest.update(block)
                file.write(block)
        if digest.hexdigest() != sha256:
            partial.unlink()
            raise InputFetchError(f"input {sha256}: what was fetched has another sha256")
        partial.chmod(READ_ONLY_FILE)
        partial.rename(blob)
        return blob
