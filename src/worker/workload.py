"""Reading workload files: checked in full before anything runs, then streamed.

A workload is never held in memory whole: ``check_workload`` reads every file
once to refuse bad input with ``FILE:LINE: reason`` and count the tasks, and
``TaskReader`` reads them again, a batch at a time, while they are dispatched.
"""

import os
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple

from worker.errors import EmptyWorkloadError, WorkloadError
from worker.task import check_line

#: Tasks read per batch while a workload is only being checked.
CHECK_BATCH = 8192


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
        self._number = 0

    def __enter__(self) -> "TaskReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def read(self, count: int) -> TaskBatch:
        """Up to ``count`` tasks; an empty batch at the end of the file."""
        numbers: list[int] = []
        texts: list[str] = []
        number = self._number
        try:
            for raw in self._handle:
                number += 1
                # Decoded a line at a time, so an encoding error names its line.
                text = raw.decode("utf-8").strip()
                if not text or text[0] == "#":
                    continue  # blank lines and comments carry no task
                if self.check:
                    check_line(text)
                numbers.append(number)
                texts.append(text)
                if len(numbers) == count:
                    break
        except UnicodeDecodeError as error:
            bad = error.object[error.start]
            reason = f"is not valid UTF-8 (byte 0x{bad:02x} at column {error.start + 1})"
            raise WorkloadError(self.path, number, reason) from error
        except ValueError as error:
            raise WorkloadError(self.path, number, str(error)) from error
        except OSError as error:
            raise WorkloadError(self.path, number, f"cannot be read: {error.strerror}") from error
        finally:
            self._number = number
        return TaskBatch(numbers, texts)


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
