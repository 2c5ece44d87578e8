"""What one job's tasks may bring back in all (``--output-dir``).

A task's own limits are the worker's (worker.outputs); the job's can only be
kept where every task's files arrive: here. A task whose files would take the
job past its limit has them removed again, and its record says so.
"""

from collections.abc import Iterable
from pathlib import Path

import msgspec

from worker.result import Result
from worker.workdir import remove_tree, task_label

#: Files and bytes all of a job's tasks may bring back.
MAX_FILES_PER_JOB = 1_000_000
MAX_BYTES_PER_JOB = 100 * 1024**3


class OutputBudget:
    """Counts what a job's tasks brought back, and takes back what is over."""

    def __init__(
        self,
        output_dir: Path,
        max_files: int = MAX_FILES_PER_JOB,
        max_bytes: int = MAX_BYTES_PER_JOB,
    ) -> None:
        self.output_dir = output_dir
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.files = 0
        self.bytes = 0

    def admit(self, records: Iterable[Result]) -> list[Result]:
        """The records, with the files of any task over the job's limit taken back."""
        return [self._admit(record) for record in records]

    def _admit(self, record: Result) -> Result:
        if not record.files:
            return record
        size = sum(file.size for file in record.files)
        if self.files + len(record.files) <= self.max_files and self.bytes + size <= self.max_bytes:
            self.files += len(record.files)
            self.bytes += size
            return record
        remove_tree(self.output_dir / task_label(record.file, record.line))
        said = (
            f"{len(record.files)} files not kept: over the job's limit of"
            f" {self.max_files} files or {self.max_bytes} bytes"
        )
        error = f"{record.files_error}; {said}" if record.files_error else said
        return msgspec.structs.replace(record, files=(), files_error=error)
