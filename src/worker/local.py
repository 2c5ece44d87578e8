"""The local worker process: takes chunks of tasks over a pipe, sends results back.

The protocol on the pipe, scheduler to worker: a ``Chunk`` to run, or ``None``
to finish. Worker to scheduler: ``Ready`` once, then ``Progress`` reports in
task order, the last one of each chunk with ``done`` set. A chunk that runs
for longer than ``FLUSH_SECONDS`` reports what it has so far, so results
stream back while long chunks run and a crash loses as little as possible.
"""

import os
import signal
import time
from collections import Counter
from multiprocessing.connection import Connection
from types import FrameType
from typing import NamedTuple

from worker.execute import TaskRunner
from worker.result import Result, Status, encode_lines, make_result, unfinished
from worker.task import task_id
from worker.workload import TaskBatch

#: A chunk that is still running reports its finished tasks this often.
FLUSH_SECONDS = 0.2


class Chunk(NamedTuple):
    """Tasks from one file of one job, dispatched to one worker together."""

    chunk_id: int
    job_id: str
    file_number: int  # which file of the job, from 1
    file: str
    tasks: TaskBatch  # parsed and checked by the scheduler


class Ready(NamedTuple):
    """Sent once by a worker when it can take chunks."""

    worker: str
    pid: int


class Progress(NamedTuple):
    """Results of ``size`` tasks of a chunk, from task ``first`` on, in order."""

    worker: str
    chunk_id: int
    first: int
    size: int  # how many tasks this report covers
    records: bytes  # their result records, JSON Lines
    by_status: dict[Status, int]
    task_seconds: float  # the sum of their durations
    busy_seconds: float  # worker time spent on them, overheads included
    done: bool  # the last report of this chunk


def run_chunk(conn: Connection, worker: str, chunk: Chunk, runner: TaskRunner) -> None:
    """Run every task of a chunk, reporting at least every FLUSH_SECONDS."""
    job, file_number, file = chunk.job_id, chunk.file_number, chunk.file
    results: list[Result] = []
    first = 0
    last_flush = time.perf_counter()
    tasks = chunk.tasks
    total = len(tasks.lines)
    for line, text in zip(tasks.lines, tasks.texts, strict=True):
        outcome = runner.run(text)
        ident = f"{job}:{file_number}:{line}"  # worker.task.task_id, inlined: hot path
        results.append(make_result(ident, job, file, line, text, worker, outcome))
        now = time.perf_counter()
        if now - last_flush >= FLUSH_SECONDS and first + len(results) < total:
            conn.send(progress(worker, chunk.chunk_id, first, results, now - last_flush, False))
            first += len(results)
            results = []
            last_flush = now
    busy = time.perf_counter() - last_flush
    conn.send(progress(worker, chunk.chunk_id, first, results, busy, True))


def progress(
    worker: str, chunk_id: int, first: int, results: list[Result], busy: float, done: bool
) -> Progress:
    """A report of finished results, encoded once here rather than in the scheduler."""
    by_status = Counter(result.status for result in results)
    task_seconds = sum(result.duration_ms for result in results) / 1000.0
    records = encode_lines(results)
    return Progress(
        worker, chunk_id, first, len(results), records, by_status, task_seconds, busy, done
    )


def lost_results(chunk: Chunk, first: int, reason: str) -> list[Result]:
    """Records for the tasks of a chunk, from ``first`` on, whose worker died."""
    outcome = unfinished(Status.LOST, reason, time.time())
    lines = chunk.tasks.lines[first:]
    texts = chunk.tasks.texts[first:]
    return [
        make_result(
            task_id(chunk.job_id, chunk.file_number, line),
            chunk.job_id,
            chunk.file,
            line,
            text,
            "",
            outcome,
        )
        for line, text in zip(lines, texts, strict=True)
    ]


def serve(conn: Connection, worker: str, timeout: float | None) -> None:
    """Main function of a local worker process."""
    # Ctrl-C reaches the whole foreground process group; the scheduler decides
    # what happens to its workers and stops them with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner = TaskRunner(timeout)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runner.shell.kill_current()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        conn.send(Ready(worker, os.getpid()))
        while (chunk := conn.recv()) is not None:
            run_chunk(conn, worker, chunk, runner)
    except (EOFError, BrokenPipeError):
        pass  # the scheduler went away: nothing left to report to
    finally:
        runner.close()
