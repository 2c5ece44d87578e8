"""What a local worker finished and has not yet handed to its pipe, kept in a file.

A worker reports finished tasks in batches (about every half second), from a
thread of its own, so at any moment some finished tasks exist only in its
memory. If it dies (SIGKILL, the out-of-memory killer, a task that kills its
parent) or is stopped (Ctrl-C), the scheduler reads this log to report those
tasks with their real outcome instead of calling them lost.

One entry a finished task, written with a single ``write`` before the worker
starts its next task, so a killed worker leaves whole entries (a torn last
one is skipped): which chunk (the worker's count of chunks begun), which task
of it, and its outcome — a built-in sleep as its two clock readings, anything
else as its ``Outcome``. The worker empties the log when it starts a chunk
and every earlier report is in the pipe (whose complete messages the
scheduler still reads after the worker died).
"""

import os
import struct
from pathlib import Path

import msgspec

from worker.result import Outcome

#: (kind, chunk sequence, task index, body length) before every entry's body.
_HEADER = struct.Struct("<BIII")
#: A sleep's body: when it began and ended, on time.perf_counter_ns.
_SPAN = struct.Struct("<qq")

_SLEEP, _OUTCOME = 0, 1

_encode_outcome = msgspec.msgpack.Encoder().encode
_decode_outcome = msgspec.msgpack.Decoder(Outcome).decode

#: A built-in sleep that ran: its start and end on ``time.perf_counter_ns``.
SleepSpan = tuple[int, int]


class TaskLog:
    """The writing end, in the worker."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)

    def sleep(self, chunk: int, index: int, began: int, ended: int) -> None:
        os.write(self._fd, _HEADER.pack(_SLEEP, chunk, index, 16) + _SPAN.pack(began, ended))

    def outcome(self, chunk: int, index: int, outcome: Outcome) -> None:
        body = _encode_outcome(outcome)
        os.write(self._fd, _HEADER.pack(_OUTCOME, chunk, index, len(body)) + body)

    def empty(self) -> None:
        """Everything logged so far is in the pipe: forget it."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


def read_task_log(path: Path) -> dict[int, dict[int, Outcome | SleepSpan]]:
    """Every whole entry of a dead worker's log: by chunk sequence, by task index."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    found: dict[int, dict[int, Outcome | SleepSpan]] = {}
    at = 0
    while at + _HEADER.size <= len(data):
        kind, chunk, index, size = _HEADER.unpack_from(data, at)
        body = data[at + _HEADER.size : at + _HEADER.size + size]
        if len(body) < size:
            break  # torn: the worker died writing it
        at += _HEADER.size + size
        try:
            entry: Outcome | SleepSpan = (
                _SPAN.unpack(body) if kind == _SLEEP else _decode_outcome(body)
            )
        except (struct.error, msgspec.DecodeError):
            break
        found.setdefault(chunk, {})[index] = entry
    return found
