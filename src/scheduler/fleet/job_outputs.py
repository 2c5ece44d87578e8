"""Bringing a fleet job's output files back (``run --remote --output-dir``).

A record from the fleet names the tar its task's files travelled in
(``files_object``; ``worker.output_pack``). As each record arrives, its tar is
fetched, checked against the sha256 its key names, and unpacked beside the
output directory, then moved into ``DIR/<file>-<line>/`` whole, as the local
path does (``worker.workdir.place``): the same folders, the same safety rules,
and ``files`` in the record names what was written. A tar that cannot be had
or is not what it should be leaves nothing in ``DIR``; the record says why.
"""

import hashlib
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from scheduler.output_budget import OutputBudget
from worker.contracts import JobFiles
from worker.output_pack import MAX_TAR_BYTES, PackError, bring_back, key_sha256
from worker.outputs import COPY_BUFFER_BYTES
from worker.result import Result
from worker.usage import UsageMeter
from worker.workdir import PARTIAL, remove_tree


class TarFetcher:
    """Fetches one job's tasks' tars from the bucket, each checked against the
    sha256 its key names."""

    def __init__(self, s3: Any, meter: UsageMeter, bucket: str, job: str) -> None:
        self.s3 = s3
        self.meter = meter  # the fetches are charged to the job
        self.bucket = bucket
        self.job = job

    def fetch(self, key: str, tar: Path) -> None:
        """Write the tar at ``key`` to ``tar``; ``PackError`` if it is not this
        job's, larger than a task's files may be, or not what its key names."""
        expected = key_sha256(key)
        if expected is None or not key.startswith(f"{JobFiles.OUTPUTS}{self.job}/"):
            raise PackError(f"{key!r} is not a tar of this job's")
        digest = hashlib.sha256()
        size = 0
        with self.meter.charged_to(self.job):
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            with tar.open("wb") as writing:
                while block := body.read(COPY_BUFFER_BYTES):
                    size += len(block)
                    if size > MAX_TAR_BYTES:
                        raise PackError(f"{key}: larger than a task's files may be")
                    digest.update(block)
                    writing.write(block)
        if digest.hexdigest() != expected:
            raise PackError(f"{key}: its content does not match its name's sha256")


class OutputFetcher:
    """Fetches and unpacks one job's tasks' tars under ``output_dir``."""

    def __init__(self, s3: Any, meter: UsageMeter, bucket: str, job: str, output_dir: Path) -> None:
        self.tars = TarFetcher(s3, meter, bucket, job)
        self.output_dir = output_dir

    def bring_back(self, record: Result) -> Result:
        """The record, its files (if it names a tar) brought back and named."""
        key = record.files_object
        if key is None:
            return record
        errors = (BotoCoreError, ClientError)
        return bring_back(record, self.output_dir, lambda tar: self.tars.fetch(key, tar), errors)


class OutputsBack:
    """A job's tasks' files brought back under ``output_dir`` as its records are
    written (``run --remote --output-dir``, ``results --stack --files``): each
    record's tar fetched and unpacked, the job's limit kept (OutputBudget)."""

    def __init__(self, s3: Any, meter: UsageMeter, bucket: str, job: str, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = output_dir
        self.fetcher = OutputFetcher(s3, meter, bucket, job, output_dir)
        self.budget = OutputBudget(output_dir)

    def records(self, records: list[Result]) -> list[Result]:
        """The records, their files brought back and named."""
        return self.budget.admit([self.fetcher.bring_back(record) for record in records])

    def close(self) -> None:
        """Remove what tars cut off (Ctrl-C) had begun to bring back."""
        remove_tree(self.output_dir / PARTIAL)
