"""What a local worker finished and has not yet handed to its pipe, kept in a file.

A worker reports finished tasks in batches (about every half second), from a
thread of its own, so at any moment some finished tasks exist only in its
memory. If it dies (SIGKILL, the out-of-memory killer, a task that kills its
parent) or is stopped (Ctrl-C), the scheduler reads this log to report those
tasks with their real outcome instead of calling them lost.

One entry a finished task, before the worker starts its next task: which
chunk (the worker's count of chunks begun), which task of it, and its
outcome. A command's ``Outcome`` goes to a file, with a single ``write`` (a
killed worker leaves whole entries; a torn last one is skipped), and the file
is emptied when the worker starts a chunk and every earlier report is whole
in the pipe (whose complete messages the scheduler still reads after the
worker died). A built-in sleep, which may take a microsecond, cannot afford a
system call: its two clock readings go to a ring in memory the scheduler
shares, big enough for every task that can be finished and not yet in the
pipe (the chunk running and the reports waiting: ``RING_TASKS``).
"""

import ctypes
import os
import struct
from collections.abc import Callable
from pathlib import Path

import msgspec

from worker.result import Outcome

#: Most tasks one chunk holds (the scheduler's chunk sizer keeps to it).
MAX_CHUNK_TASKS = 4096

#: Reports a worker keeps waiting to be sent, besides the one in the pipe.
QUEUED_REPORTS = 2

#: Sleeps the ring holds: enough for every task not yet whole in the pipe (the
#: chunk running, the reports waiting and the one being written).
RING_TASKS = (QUEUED_REPORTS + 2) * MAX_CHUNK_TASKS

#: The ring: a count of sleeps logged, then (chunk, index, began, ended) each.
_COUNT = struct.Struct("<q")
_RING_ENTRY = struct.Struct("<qqqq")
RING_BYTES = _COUNT.size + RING_TASKS * _RING_ENTRY.size

#: (chunk sequence, task index, body length) before every outcome in the file.
_HEADER = struct.Struct("<III")

_encode_outcome = msgspec.msgpack.Encoder().encode
_decode_outcome = msgspec.msgpack.Decoder(Outcome).decode

#: A built-in sleep that ran: its start and end on ``time.perf_counter_ns``.
SleepSpan = tuple[int, int]


def new_ring() -> "ctypes.Array[ctypes.c_char]":
    """Zeroed memory for a ring (shared with a worker when made before it starts)."""
    return (ctypes.c_char * RING_BYTES)()


class TaskLog:
    """The writing end, in the worker: ``path`` for outcomes, ``ring`` for sleeps."""

    def __init__(self, path: Path, ring: "ctypes.Array[ctypes.c_char]") -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        self._ring = memoryview(ring).cast("B")
        self._sleeps = 0

    def sleep(self, chunk: int, index: int, began: int, ended: int) -> None:
        self.sleeps_of(chunk)(index, began, ended)

    def sleeps_of(self, chunk: int) -> Callable[[int, int, int], None]:
        """A function logging a sleep of ``chunk`` by its index and clock readings:
        what the hot loop calls, with everything it needs at hand."""
        ring, pack_entry, pack_count = self._ring, _RING_ENTRY.pack_into, _COUNT.pack_into
        header, size, slots = _COUNT.size, _RING_ENTRY.size, RING_TASKS

        def log(index: int, began: int, ended: int) -> None:
            count = self._sleeps
            pack_entry(ring, header + (count % slots) * size, chunk, index, began, ended)
            self._sleeps = count = count + 1
            pack_count(ring, 0, count)  # after the entry: it is whole

        return log

    def outcome(self, chunk: int, index: int, outcome: Outcome) -> None:
        body = _encode_outcome(outcome)
        os.write(self._fd, _HEADER.pack(chunk, index, len(body)) + body)

    def empty(self) -> None:
        """Everything logged so far is in the pipe: forget it."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


def read_task_log(
    path: Path, ring: "ctypes.Array[ctypes.c_char]"
) -> dict[int, dict[int, Outcome | SleepSpan]]:
    """Every whole entry of a dead worker's log: by chunk sequence, by task index."""
    found: dict[int, dict[int, Outcome | SleepSpan]] = {}
    view = memoryview(ring).cast("B")
    (sleeps,) = _COUNT.unpack_from(view, 0)
    for n in range(max(0, sleeps - RING_TASKS), sleeps):
        chunk, index, began, ended = _RING_ENTRY.unpack_from(
            view, _COUNT.size + (n % RING_TASKS) * _RING_ENTRY.size
        )
        found.setdefault(chunk, {})[index] = (began, ended)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return found
    at = 0
    while at + _HEADER.size <= len(data):
        chunk, index, size = _HEADER.unpack_from(data, at)
        body = data[at + _HEADER.size : at + _HEADER.size + size]
        if len(body) < size:
            break  # torn: the worker died writing it
        at += _HEADER.size + size
        try:
            found.setdefault(chunk, {})[index] = _decode_outcome(body)
        except msgspec.DecodeError:
            break
    return found
