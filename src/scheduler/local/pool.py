"""A pool of local worker processes, one pipe each, with dead workers replaced.

The scheduler assigns chunks to particular workers, so when a worker dies (or
is stopped) it knows exactly which tasks were on it. A worker's reports lag
behind its work, so what it had done is read from what it leaves behind (see
``worker.local``): the reports whole in its pipe, then its task log for the
tasks it finished since; the task it had in hand is lost (it may have run),
unless it was a command that had not been forked yet (see ``orphans``), and the
tasks it never started, in its pipe or after the one in hand, can be dispatched
again.
"""

import contextlib
import ctypes
import os
import signal
import tempfile
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import NamedTuple

from scheduler.errors import PoolError
from scheduler.local.orphans import (
    adopt_orphans,
    children,
    end,
    ended_orphans,
    reap,
    started_commands,
)
from worker.execute import SPAWNING, plan
from worker.local import Chunk, ChunkReport, Ready, part, report, serve
from worker.record_ring import RecordRing
from worker.result import Outcome
from worker.task_log import MAX_CHUNK_TASKS, RING_BYTES, SleepSpan, read_task_log
from worker.workdir import TaskFiles, remove_tree

#: Seconds a starting worker has to report ready.
START_TIMEOUT_SECONDS = 60.0

#: Seconds a stopping worker has to exit before it is killed.
STOP_TIMEOUT_SECONDS = 5.0

#: Seconds between collections of ended orphans (see ``orphans``).
REAP_INTERVAL_SECONDS = 5.0


def start_context() -> ForkContext | ForkServerContext:
    """How to start a worker now: a plain fork while this process has one thread
    (`taskfleet run` forks all its workers before it starts any: a few
    milliseconds each, where a fresh interpreter costs a few hundred); with other
    threads about (the service), a fork server, since a fork copies locks other
    threads may hold. The fork server is one clean process, started once, that
    has the worker's modules loaded and forks each worker from itself."""
    if threading.active_count() == 1:
        return ForkContext()
    context = ForkServerContext()
    context.set_forkserver_preload(["__main__", "worker.local"])
    return context


class WorkerLost(NamedTuple):
    """A worker died or was stopped: what became of the tasks it had."""

    worker: str
    exit_code: int | None
    finished: list[tuple[Chunk, ChunkReport]]  # finished and not reported: from its task log
    in_hand: list[Chunk]  # the task it was running (a chunk of one): it may have run
    unstarted: list[Chunk]  # never started: to be dispatched again


class _Worker:
    """A worker process, its end of the pipe, and the chunks assigned to it in order."""

    def __init__(
        self,
        name: str,
        process: BaseProcess,
        conn: Connection,
        started: ctypes.c_uint64,
        position: "ctypes.Array[ctypes.c_int64]",
        log: Path,
        ring: "ctypes.Array[ctypes.c_char]",
        records: RecordRing | None,
    ) -> None:
        self.name = name
        self.process = process
        self.conn = conn
        self.started = started  # chunks the worker began, counted by the worker
        # [chunk count, task index] of the task it is on, the pid of its command
        # (0 until that command has started), and when it began to start one
        self.position = position
        self.log, self.ring = log, ring  # its task log: a file and a ring in shared memory
        self.records = records  # where its reports' records are, when not in the pipe
        self.finished = 0  # chunks whose last report arrived
        self.assigned: deque[Chunk] = deque()
        self.reported = 0  # tasks of assigned[0] already reported

    def receive(self) -> object:
        """The next message from the worker (None at the end of its pipe), a
        report's records copied out of its ring."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            return None
        if isinstance(message, ChunkReport) and message.in_ring is not None:
            assert self.records is not None, "a report in a ring the worker was not given"
            records = self.records.take(*message.in_ring)
            return message._replace(records=records, in_ring=None)
        return message

    def close(self) -> None:
        self.conn.close()
        if self.records is not None:
            self.records.close()


class LocalPool:
    """N worker processes fed chunk by chunk."""

    def __init__(self, workers: int, timeout: float | None, files: TaskFiles | None = None) -> None:
        """``files``: where tasks get and leave files; without it, each task still
        gets a directory of its own, under the pool's."""
        if workers < 1:
            raise PoolError("workers must be at least 1")
        self.size = workers
        self.timeout = timeout
        self._workers: dict[str, _Worker] = {}
        self._spawned = 0
        self._logs = Path(tempfile.mkdtemp(prefix="taskfleet-workers-"))  # 0700
        self.files = files or TaskFiles(str(self._logs))
        self._adopting = adopt_orphans()
        self._own: set[int] = set()  # children that are not workers: a fork server, ...
        self._next_reap = 0.0

    def __enter__(self) -> "LocalPool":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(graceful=exc[0] is None)

    def start(self) -> None:
        """Start every worker and wait until each reports ready."""
        for _ in range(self.size):
            self._spawn()
        pending = {w.conn: w for w in self._workers.values()}
        while pending:
            ready = wait(list(pending), timeout=START_TIMEOUT_SECONDS)
            if not ready:
                raise PoolError(f"workers did not start within {START_TIMEOUT_SECONDS:g} s")
            for conn in ready:
                worker = pending.pop(conn)  # type: ignore[call-overload]
                message = worker.receive()
                if not isinstance(message, Ready):
                    raise PoolError(f"worker {worker.name} failed to start")
        self._own = set(children())
        # Nothing has been left behind yet: the first collection can wait its turn.
        self._next_reap = time.monotonic() + REAP_INTERVAL_SECONDS

    def _known(self) -> set[int]:
        return self._own | {w.process.pid for w in self._workers.values() if w.process.pid}

    def _reap(self) -> None:
        """Collect ended orphans, unless a worker may have died while starting a
        command: whether its command exists is told by what it left behind."""
        self._next_reap = time.monotonic() + REAP_INTERVAL_SECONDS
        ended = ended_orphans(self._known())  # before the check: see orphans
        if any(w.position[2] == SPAWNING for w in self._workers.values()):
            return  # (a live worker starting a command is seldom seen: next time)
        reap(ended)

    def _spawn(self) -> _Worker:
        self._spawned += 1
        name = f"local-{self._spawned}"
        context = start_context()
        parent, child = context.Pipe()
        started = context.RawValue(ctypes.c_uint64, 0)
        position = context.RawArray(ctypes.c_int64, [0, -1, 0, 0])
        ring = context.RawArray(ctypes.c_char, RING_BYTES)
        # Shared by inheritance: only a worker forked from here can have one.
        records = RecordRing() if isinstance(context, ForkContext) else None
        log = self._logs / f"{name}.log"
        process = context.Process(
            target=serve,
            args=(
                child,
                name,
                self.timeout,
                started,
                position,
                str(log),
                ring,
                records,
                self.files,
            ),
            name=f"taskfleet {name}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(name, process, parent, started, position, log, ring, records)
        self._workers[name] = worker
        return worker

    def load(self) -> dict[str, int]:
        """Chunks assigned to each worker and not finished yet."""
        return {name: len(worker.assigned) for name, worker in self._workers.items()}

    def assign(self, worker_name: str, chunk: Chunk) -> None:
        if len(chunk.tasks.lines) > MAX_CHUNK_TASKS:
            # Its worker's task log could not account for all of it after a death.
            raise PoolError(f"a chunk holds at most {MAX_CHUNK_TASKS} tasks")
        worker = self._workers[worker_name]
        worker.assigned.append(chunk)
        # If it died, wait() reports the loss, with this chunk among its unstarted.
        with contextlib.suppress(BrokenPipeError, OSError):
            worker.conn.send(chunk)

    def wait(self, timeout: float) -> list[tuple[Chunk, ChunkReport] | WorkerLost]:
        """Block up to ``timeout`` seconds for results; return them and any worker deaths."""
        by_handle: dict[object, _Worker] = {}
        for worker in self._workers.values():
            by_handle[worker.conn] = worker
            by_handle[worker.process.sentinel] = worker
        events: list[tuple[Chunk, ChunkReport] | WorkerLost] = []
        dead: set[str] = set()
        if self._adopting and time.monotonic() >= self._next_reap:
            self._reap()
        for handle in wait(list(by_handle), timeout=timeout):  # type: ignore[arg-type]
            worker = by_handle[handle]
            if worker.name in dead:
                continue
            if handle is worker.conn:
                message = worker.receive()
                if isinstance(message, ChunkReport):
                    events.append((self._record(worker, message), message))
                    continue
            # Sentinel ready or pipe closed: it died.
            events.extend(self._drain(worker))
            events.append(self._collect(worker))
            del self._workers[worker.name]
            self._spawn_ready()
            dead.add(worker.name)
        return events

    @staticmethod
    def _record(worker: _Worker, progress: ChunkReport) -> Chunk:
        chunk = worker.assigned[0]
        if progress.done:
            worker.assigned.popleft()
            worker.finished += 1
            worker.reported = 0
        else:
            worker.reported = progress.first + progress.size
        return chunk

    def _drain(self, worker: _Worker) -> list[tuple[Chunk, ChunkReport]]:
        """The reports a dead worker left whole in its pipe."""
        drained = []
        while worker.conn.poll():
            message = worker.receive()
            if not isinstance(message, ChunkReport):
                break  # the end of the pipe, or a report cut off by the death
            drained.append((self._record(worker, message), message))
        return drained

    def _collect(self, worker: _Worker) -> WorkerLost:
        """What became of a dead worker's tasks (its pipe drained already)."""
        worker.process.join(STOP_TIMEOUT_SECONDS)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.close()
        # Read once the process is gone, so nothing changes any more.
        begun = worker.started.value - worker.finished
        in_hand_sequence, in_hand_index, command, spawning_since = worker.position
        if command == SPAWNING and self._adopting:
            forked = started_commands(self._known(), spawning_since)
            if forked:
                end(forked)  # its command, forked before the pid was noted, and its tree
            else:
                command = 0  # it died before its command was forked: nothing left behind
        logged = read_task_log(worker.log, worker.ring)
        worker.log.unlink(missing_ok=True)
        lost = WorkerLost(worker.name, worker.process.exitcode, [], [], [])
        for n, chunk in enumerate(worker.assigned):
            if n >= begun:
                lost.unstarted.append(chunk)
                continue
            sequence = worker.finished + 1 + n
            first = worker.reported if n == 0 else 0
            entries = logged.get(sequence, {})
            done: list[Outcome | SleepSpan] = []
            while first + len(done) in entries:
                done.append(entries[first + len(done)])
            upto = first + len(done)
            size = len(chunk.tasks.lines)
            if done:
                progress = report(worker.name, chunk, first, done, 0.0, done=upto == size)
                lost.finished.append((chunk, progress))
            in_hand = upto < size and (in_hand_sequence, in_hand_index) == (sequence, upto)
            is_command = in_hand and plan(chunk.tasks.texts[upto]).is_command
            if in_hand and not (is_command and command == 0):
                # In hand: it may have run (a sleep had begun; a command was being
                # started, or had been), so it is never run again. A command whose
                # start had not begun runs elsewhere with the rest.
                if is_command and command > 0:
                    # Its command runs in a session of its own and outlived its worker.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(command, signal.SIGKILL)
                lost.in_hand.append(part(chunk, upto, upto + 1))
                upto += 1
            if upto < size:
                lost.unstarted.append(part(chunk, upto))
        return lost

    def _spawn_ready(self) -> None:
        """A new worker in place of a dead one, once it says it is ready."""
        replacement = self._spawn()
        if not replacement.conn.poll(START_TIMEOUT_SECONDS) or not isinstance(
            replacement.receive(), Ready
        ):
            raise PoolError(f"a new worker ({replacement.name}) failed to start")

    def stop(self, *, graceful: bool = True) -> list[WorkerLost]:
        """Stop every worker: after its chunks if graceful (returns nothing), else at
        once (SIGTERM: its command is killed) and returns what became of their tasks."""
        for worker in self._workers.values():
            if graceful:
                with contextlib.suppress(BrokenPipeError, OSError):
                    worker.conn.send(None)
            elif worker.process.is_alive() and worker.process.pid is not None:
                worker.process.terminate()  # SIGTERM: kills its running command, then exits
        stopped: list[WorkerLost] = []
        for worker in self._workers.values():
            worker.process.join(STOP_TIMEOUT_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            if not graceful and worker.assigned:
                drained = self._drain(worker)
                lost = self._collect(worker)
                stopped.append(lost._replace(finished=[*drained, *lost.finished]))
            worker.close()
        self._workers.clear()
        with contextlib.suppress(OSError):
            remove_tree(self._logs)  # tasks' directories read-only in part
        return stopped
