"""Reading workload files: checked in full before anything runs, then streamed.

A workload is never held in memory whole: ``check_workload`` reads every file
once to refuse bad input with ``FILE:LINE: reason`` and count the tasks, and
``TaskReader`` reads them again, a batch at a time, while they are dispatched.
"""

import os
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple, NoReturn

from worker.errors import EmptyWorkloadError, TaskLineError, WorkloadError
from worker.task import check_line

#: Tasks read per batch while a workload is only being checked.
CHECK_BATCH = 8192

#: Bytes of a workload file read, decoded and filtered at once.
READ_BLOCK_BYTES = 64 * 1024


class WorkloadCounts(NamedTuple):
    """How many tasks a submission holds, in all and per file."""

    total: int
    per_file: tuple[int, ...]


class TaskBatch(NamedTuple):
    """Consecutive tasks of one file, as two parallel lists (they pickle fast)."""

    lines: list[int]  # line numbers, from 1
    texts: list[str]  # the task lines, stripped


class TaskReader:
    """The task lines of one workload file, checked, read a batch at a time.

    Use it as a context manager; every error is a ``WorkloadError`` naming
    the file, and the line when there is one. With ``check`` false (the
    dispatch pass, after a checking pass) lines are only split from comments
    and blanks: workers parse what they run, and refuse a line that changed.
    """

    def __init__(self, path: str, *, check: bool = True) -> None:
        self.path = path
        self.check = check
        if not os.path.exists(path):
            raise WorkloadError(path, None, "no such file")
        if os.path.isdir(path):
            raise WorkloadError(path, None, "is a directory, not a workload file")
        try:
            self._handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as error:
            raise WorkloadError(path, None, f"cannot be read: {error.strerror}") from error
        self._number = 0  # lines read so far
        self._lines: list[int] = []  # tasks read and not yet handed out
        self._texts: list[str] = []

    def __enter__(self) -> "TaskReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def read(self, count: int) -> TaskBatch:
        """Up to ``count`` tasks; an empty batch at the end of the file."""
        while len(self._lines) < count and self._fill():
            pass
        lines, texts = self._lines[:count], self._texts[:count]
        del self._lines[:count], self._texts[:count]
        return TaskBatch(lines, texts)

    def _fill(self) -> bool:
        """Read, decode and filter the next block of lines; False at the end of the file."""
        try:
            raws = self._handle.readlines(READ_BLOCK_BYTES)
        except OSError as error:
            raise WorkloadError(self.path, None, f"cannot be read: {error.strerror}") from error
        if not raws:
            return False
        first = self._number + 1
        self._number += len(raws)
        try:
            block = b"".join(raws).decode("utf-8")
        except UnicodeDecodeError:
            self._refuse_encoding(raws, first)
        # Decoded as one block, split back into exactly the lines readlines()
        # found: on "\n" only (str.splitlines() knows more line breaks and
        # would shift line numbers).
        stripped = list(map(str.strip, block.split("\n", len(raws) - 1)))
        numbers: Sequence[int] = range(first, first + len(raws))
        if "#" in block or "" in stripped:  # blank lines and comments carry no task
            numbers = [
                n for n, text in zip(numbers, stripped, strict=True) if text and text[0] != "#"
            ]
            stripped = [text for text in stripped if text and text[0] != "#"]
        if self.check:
            for number, text in zip(numbers, stripped, strict=True):
                try:
                    check_line(text)
                except TaskLineError as error:
                    raise WorkloadError(self.path, number, str(error)) from error
        self._lines.extend(numbers)
        self._texts.extend(stripped)
        return True

    def _refuse_encoding(self, raws: list[bytes], first: int) -> NoReturn:
        """Name the first line of a block that is not valid UTF-8."""
        for number, raw in enumerate(raws, first):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                bad = raw[error.start]
                reason = f"is not valid UTF-8 (byte 0x{bad:02x} at column {error.start + 1})"
                raise WorkloadError(self.path, number, reason) from error
        raise AssertionError("a block failed to decode but none of its lines did")


def count_tasks(path: str) -> int:
    """Check every line of one file and count its tasks."""
    total = 0
    with TaskReader(path) as reader:
        while batch := len(reader.read(CHECK_BATCH).lines):
            total += batch
    return total


def check_workload(paths: Sequence[str]) -> WorkloadCounts:
    """Read every file once; raise on the first bad line, or on a file without tasks
    (in a submission of several, an empty one is most likely the wrong file)."""
    if not paths:
        raise EmptyWorkloadError("no workload file given")
    per_file = []
    for path in paths:
        count = count_tasks(path)
        if count == 0:
            raise EmptyWorkloadError(f"{path}: no tasks (only blank lines and # comments)")
        per_file.append(count)
    return WorkloadCounts(sum(per_file), tuple(per_file))
