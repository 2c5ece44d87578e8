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
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.output_budget import OutputBudget
from worker.contracts import JobFiles
from worker.output_pack import PackError, key_sha256, unpack
from worker.outputs import COPY_BUFFER_BYTES, MAX_BYTES_PER_TASK
from worker.result import MAX_FILES_PER_TASK, OutputFile, Result
from worker.usage import UsageMeter
from worker.workdir import PARTIAL, place, remove_tree, task_label

#: Largest tar a task's files may travel in: its limit, and a tar's headers
#: (512 bytes each, a long name's in a second: 2 KiB a file is ample).
MAX_TAR_BYTES = MAX_BYTES_PER_TASK + (MAX_FILES_PER_TASK + 2) * 2048


class OutputFetcher:
    """Fetches and unpacks one job's tasks' tars under ``output_dir``."""

    def __init__(self, s3: Any, meter: UsageMeter, bucket: str, job: str, output_dir: Path) -> None:
        self.s3 = s3
        self.meter = meter  # the fetches are charged to the job
        self.bucket = bucket
        self.job = job
        self.output_dir = output_dir

    def bring_back(self, record: Result) -> Result:
        """The record, its files (if it names a tar) brought back and named."""
        if record.files_object is None:
            return record
        label = task_label(record.file, record.line)
        partial = self.output_dir / PARTIAL
        partial.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=partial))
        try:
            files = self._unpack(record.files_object, work)
            if files:
                place(work / "files", self.output_dir / label)
        except (PackError, BotoCoreError, ClientError, OSError) as error:
            said = f"not brought back: {error}"
            error_text = f"{record.files_error}; {said}" if record.files_error else said
            return msgspec.structs.replace(record, files=(), files_error=error_text)
        finally:
            remove_tree(work)
        return msgspec.structs.replace(record, files=files)

    def _unpack(self, key: str, work: Path) -> tuple[OutputFile, ...]:
        expected = key_sha256(key)
        if expected is None or not key.startswith(f"{JobFiles.OUTPUTS}{self.job}/"):
            raise PackError(f"{key!r} is not a tar of this job's")
        tar = work / "task.tar"
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
        return unpack(tar, work / "files")


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
