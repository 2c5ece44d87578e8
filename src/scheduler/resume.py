"""``run --resume``: which tasks of a workload an earlier results file shows done.

A task is done when the earlier file's last record for its file and line says
``succeeded`` and carries the same task text: a line that changed since, or
failed, timed out or was lost, runs again (as GNU parallel's
``--resume-failed`` does with its job log, but on taskfleet's own records).
"""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

from worker.errors import TaskfleetError
from worker.result import Status, decode
from worker.workload import TaskBatch, TaskReader

#: Tasks not to run, as (file as given, line, text).
Done = frozenset[tuple[str, int, str]]


class ResumeError(TaskfleetError):
    """An earlier results file cannot be read."""


class Resumption(NamedTuple):
    """The tasks to skip, as (file as given, line, text), and how many there are."""

    done: frozenset[tuple[str, int, str]]
    tasks: int  # the tasks of the workload these are (a file named twice counts twice)


def succeeded_tasks(results: Path) -> dict[tuple[str, int], str]:
    """(file, line) -> task text of every task whose last record in ``results`` succeeded."""
    last: dict[tuple[str, int], tuple[Status, str]] = {}
    try:
        with results.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = decode(line)
                except msgspec.DecodeError as error:
                    raise ResumeError(
                        f"{results}:{number}: not a taskfleet result record: {error}"
                    ) from error
                last[(record.file, record.line)] = (record.status, record.task)
    except OSError as error:
        raise ResumeError(f"{results}: cannot read earlier results: {error.strerror}") from error
    return {key: text for key, (status, text) in last.items() if status == Status.SUCCEEDED}


def plan_resumption(paths: Sequence[str], results: Path) -> Resumption:
    """The tasks of ``paths`` that ``results`` shows done (a pass over the files,
    which the checking pass has already found sound)."""
    succeeded = succeeded_tasks(results)
    files = {file for file, _ in succeeded}
    done: set[tuple[str, int, str]] = set()
    for path in dict.fromkeys(paths):
        if path not in files:
            continue
        with TaskReader(path, check=False) as reader:
            while (batch := reader.read(4096)).lines:
                for line, text in zip(batch.lines, batch.texts, strict=True):
                    if succeeded.get((path, line)) == text:
                        done.add((path, line, text))
    # A file named twice holds the same tasks twice: each copy counts.
    per_file = Counter(file for file, _, _ in done)
    return Resumption(frozenset(done), sum(per_file[path] for path in paths))


def not_done(path: str, batch: TaskBatch, done: Done) -> TaskBatch:
    """The tasks of a batch read from ``path`` that ``done`` does not hold: what
    `run --resume` runs, locally and on the fleet."""
    if not done:
        return batch
    kept = [
        (line, text)
        for line, text in zip(batch.lines, batch.texts, strict=True)
        if (path, line, text) not in done
    ]
    return TaskBatch([line for line, _ in kept], [text for _, text in kept])
