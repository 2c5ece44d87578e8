"""The dispatch loop shared by the embedded run and the scheduler service.

It keeps every worker of a ``LocalPool`` supplied with chunks from a
``TaskSource``, sized by a ``ChunkSizer``, and hands every result, and every
task a dead worker took with it, to a ``ResultSink``.
"""

from typing import Protocol

from scheduler.local.chunking import ChunkSizer
from scheduler.local.pool import LocalPool, WorkerLost
from worker.local import Chunk, ChunkReport


class TaskSource(Protocol):
    """Where chunks come from."""

    def take(self, count: int) -> Chunk | None:
        """The next chunk of at most ``count`` tasks, or None when none is waiting."""

    def remaining(self) -> int | None:
        """Tasks waiting to be dispatched, when known (it shrinks chunks near the end)."""

    def give_back(self, chunk: Chunk) -> None:
        """Take back a chunk that was dispatched but never started."""


class ResultSink(Protocol):
    """Where results go."""

    def results(self, chunk: Chunk, progress: ChunkReport) -> None:
        """Tasks of the chunk finished: ``progress.size`` of them from ``progress.first``."""

    def lost(self, chunk: Chunk, first: int, reason: str) -> None:
        """Tasks from ``first`` on were in hand when their worker died or stopped:
        each may or may not have run."""


class Dispatcher:
    """Feeds a pool from a source and drains it into a sink."""

    def __init__(self, pool: LocalPool, source: TaskSource, sink: ResultSink) -> None:
        self.pool = pool
        self.source = source
        self.sink = sink
        self.sizer = ChunkSizer(pool.size)

    def in_flight(self) -> int:
        """Chunks assigned to workers and not finished."""
        return sum(self.pool.load().values())

    def fill(self) -> None:
        """Give every worker with room as many chunks as its prefetch depth allows."""
        depth = self.sizer.prefetch()
        for name, load in self.pool.load().items():
            while load < depth:
                chunk = self.source.take(self.sizer.size(self.source.remaining()))
                if chunk is None:
                    return
                self.pool.assign(name, chunk)
                load += 1

    def step(self, timeout: float) -> None:
        """Dispatch what fits, wait up to ``timeout`` for results, and route them."""
        self.fill()
        for event in self.pool.wait(timeout):
            if isinstance(event, WorkerLost):
                self._lost(event)
                continue
            chunk, progress = event
            self.sizer.observe(progress.size, progress.busy_seconds)
            self.sink.results(chunk, progress)
        self.fill()

    def _lost(self, event: WorkerLost) -> None:
        code = event.exit_code
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        self._settle(event, f"worker {event.worker} died ({how}) while running it")
        for chunk in event.unstarted:
            self.source.give_back(chunk)  # they run on another worker

    def _settle(self, event: WorkerLost, reason: str) -> None:
        """Report what a worker that is gone finished, and the task it had in hand."""
        for chunk, progress in event.finished:
            self.sink.results(chunk, progress)
        for chunk in event.in_hand:
            self.sink.lost(chunk, 0, reason)

    def interrupt(self) -> None:
        """Stop every worker at once (Ctrl-C): what they finished is reported, the
        tasks they were running are lost, and the rest are not run."""
        for event in self.pool.stop(graceful=False):
            self._settle(event, "cut off by an interrupt while running")
