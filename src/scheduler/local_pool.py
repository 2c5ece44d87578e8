"""A pool of local worker processes, one pipe each, with dead workers replaced.

The scheduler assigns chunks to particular workers, so when a worker dies it
knows exactly which tasks were on it: the chunks it had started (whose
unreported tasks are lost: they may have run) and the chunks still waiting in
its pipe (which never started and can be dispatched again). A worker's reports
can lag behind its work, so which chunks had started is not read from them but
from a counter the worker keeps in shared memory.
"""

import contextlib
import ctypes
import threading
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, ForkServerContext
from multiprocessing.process import BaseProcess
from typing import NamedTuple

from scheduler.errors import PoolError
from worker.local import Chunk, Progress, Ready, serve

#: Seconds a starting worker has to report ready.
START_TIMEOUT_SECONDS = 60.0

#: Seconds a stopping worker has to exit before it is killed.
STOP_TIMEOUT_SECONDS = 5.0


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
    """A worker died; the chunks in ``started`` had begun, ``unstarted`` never did."""

    worker: str
    exit_code: int | None
    started: list[tuple[Chunk, int]]  # each chunk and its first unreported task
    unstarted: list[Chunk]


class _Worker:
    """A worker process, its end of the pipe, and the chunks assigned to it in order."""

    def __init__(
        self, name: str, process: BaseProcess, conn: Connection, started: ctypes.c_uint64
    ) -> None:
        self.name = name
        self.process = process
        self.conn = conn
        self.started = started  # chunks the worker began, counted by the worker
        self.finished = 0  # chunks whose last report arrived
        self.assigned: deque[Chunk] = deque()
        self.reported = 0  # tasks of assigned[0] already reported


class LocalPool:
    """N worker processes fed chunk by chunk."""

    def __init__(self, workers: int, timeout: float | None) -> None:
        if workers < 1:
            raise PoolError("workers must be at least 1")
        self.size = workers
        self.timeout = timeout
        self._workers: dict[str, _Worker] = {}
        self._spawned = 0

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
                message = self._receive(worker)
                if not isinstance(message, Ready):
                    raise PoolError(f"worker {worker.name} failed to start")

    def _spawn(self) -> _Worker:
        self._spawned += 1
        name = f"local-{self._spawned}"
        context = start_context()
        parent, child = context.Pipe()
        started = context.RawValue(ctypes.c_uint64, 0)
        process = context.Process(
            target=serve,
            args=(child, name, self.timeout, started),
            name=f"taskfleet {name}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(name, process, parent, started)
        self._workers[name] = worker
        return worker

    @staticmethod
    def _receive(worker: _Worker) -> object:
        try:
            return worker.conn.recv()
        except (EOFError, OSError):
            return None

    def load(self) -> dict[str, int]:
        """Chunks assigned to each worker and not finished yet."""
        return {name: len(worker.assigned) for name, worker in self._workers.items()}

    def assign(self, worker_name: str, chunk: Chunk) -> None:
        worker = self._workers[worker_name]
        worker.assigned.append(chunk)
        # If it died, wait() reports the loss, with this chunk among its unstarted.
        with contextlib.suppress(BrokenPipeError, OSError):
            worker.conn.send(chunk)

    def wait(self, timeout: float) -> list[tuple[Chunk, Progress] | WorkerLost]:
        """Block up to ``timeout`` seconds for results; return them and any worker deaths."""
        by_handle: dict[object, _Worker] = {}
        for worker in self._workers.values():
            by_handle[worker.conn] = worker
            by_handle[worker.process.sentinel] = worker
        events: list[tuple[Chunk, Progress] | WorkerLost] = []
        dead: set[str] = set()
        for handle in wait(list(by_handle), timeout=timeout):  # type: ignore[arg-type]
            worker = by_handle[handle]
            if worker.name in dead:
                continue
            if handle is worker.conn:
                message = self._receive(worker)
                if isinstance(message, Progress):
                    events.append((self._record(worker, message), message))
                    continue
            # Sentinel ready or pipe closed: drain what it sent before dying.
            while worker.conn.poll():
                message = self._receive(worker)
                if not isinstance(message, Progress):
                    break
                events.append((self._record(worker, message), message))
            events.append(self._replace(worker))
            dead.add(worker.name)
        return events

    @staticmethod
    def _record(worker: _Worker, progress: Progress) -> Chunk:
        chunk = worker.assigned[0]
        if progress.done:
            worker.assigned.popleft()
            worker.finished += 1
            worker.reported = 0
        else:
            worker.reported = progress.first + progress.size
        return chunk

    def _replace(self, worker: _Worker) -> WorkerLost:
        worker.process.join(STOP_TIMEOUT_SECONDS)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
        del self._workers[worker.name]
        # Read once the process is gone, so the count is final.
        begun = worker.started.value - worker.finished
        chunks = list(worker.assigned)
        started = [
            (chunk, worker.reported if n == 0 else 0) for n, chunk in enumerate(chunks[:begun])
        ]
        lost = WorkerLost(worker.name, worker.process.exitcode, started, chunks[begun:])
        replacement = self._spawn()
        if not replacement.conn.poll(START_TIMEOUT_SECONDS) or not isinstance(
            self._receive(replacement), Ready
        ):
            raise PoolError(f"replacement for {worker.name} failed to start")
        return lost

    def stop(self, *, graceful: bool = True) -> None:
        """Stop every worker: after its current chunk if graceful, else at once (SIGTERM)."""
        for worker in self._workers.values():
            if graceful:
                with contextlib.suppress(BrokenPipeError, OSError):
                    worker.conn.send(None)
            elif worker.process.is_alive() and worker.process.pid is not None:
                worker.process.terminate()  # SIGTERM: kills its running command, then exits
        for worker in self._workers.values():
            worker.process.join(STOP_TIMEOUT_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()
