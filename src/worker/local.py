"""The local worker process: takes chunks of tasks over a pipe, sends results back.

The protocol on the pipe, scheduler to worker: a ``Chunk`` to run, or ``None``
to finish. Worker to scheduler: ``Ready`` once, then ``ChunkReport`` reports in
task order, the last one of each chunk with ``done`` set. A chunk that runs
for longer than ``FLUSH_SECONDS`` reports what it has so far, so results
stream back while long chunks run. A report's records may lie in a ring of
memory the two share instead (``record_ring``), the report saying where.

A report that does not fit in the pipe goes out from a thread of its own while
the next tasks run, so it can still be waiting when the worker starts its next
chunk (see ``ReportSender``). What a
scheduler whose worker died (or was stopped) needs to know lives where the
death cannot take it: in memory the two share, the count of chunks the worker
began (``started``) and the task it is on (``position``: chunk count, task
index); in the worker's ``TaskLog``, every task it finished and has not yet
put in the pipe. So every finished task is reported with its outcome, the
one in hand as lost (its command, which runs in a session of its own, is
ended with it), and the rest run elsewhere.
"""

import contextlib
import ctypes
import gc
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import NamedTuple, Protocol, cast

import msgspec

from worker.execute import SPAWNING, Plan, TaskRunner, plan, precise_sleep, scrub_secrets
from worker.record_ring import RecordRing
from worker.result import Outcome, Result, Status, encode_lines, make_result, unfinished_results
from worker.task_log import QUEUED_REPORTS, SleepSpan, TaskLog
from worker.workdir import JobDirs, TaskFiles, WorkDirs, task_label
from worker.workload import TaskBatch

#: Objects a worker allocates between two collections of young objects (Python's
#: default is 700; see serve).
YOUNG_OBJECTS_PER_COLLECTION = 10_000

#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1

#: A chunk that is still running reports its finished tasks this often.
FLUSH_SECONDS = 0.5
FLUSH_NS = int(FLUSH_SECONDS * 1e9)

#: A sleep this long (ms) is not started before the tasks finished ahead of it
#: are reported, so their records do not wait for it. (A command that runs on
#: past MEANWHILE_SECONDS has them sent while it runs.)
LONG_SLEEP_MS = int(FLUSH_SECONDS * 1000)


class Chunk(NamedTuple):
    """Tasks from one file of one job, dispatched to one worker together."""

    chunk_id: int
    job_id: str
    file_number: int  # which file of the job, from 1
    file: str
    tasks: TaskBatch  # parsed and checked by the scheduler
    # Where its job's tasks get and leave files, when the job has its own (a
    # service's job with inputs or outputs); None: the pool's.
    files: TaskFiles | None = None


def part(chunk: Chunk, start: int, stop: int | None = None) -> Chunk:
    """The chunk's tasks from ``start`` to ``stop`` (to the end if None), as a chunk."""
    tasks = TaskBatch(chunk.tasks.lines[start:stop], chunk.tasks.texts[start:stop])
    return chunk._replace(tasks=tasks)


class Ready(NamedTuple):
    """Sent once by a worker when it can take chunks."""

    worker: str


class ChunkReport(NamedTuple):
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
    cpu_seconds: float = 0.0  # CPU the worker and its commands used since its last report
    # Where ``records`` lie in the worker's RecordRing (running offset, length),
    # instead of in the report, which then holds none.
    in_ring: tuple[int, int] | None = None


class ReportChannel(Protocol):
    """Where a worker's reports go."""

    def send(self, report: ChunkReport) -> None: ...


#: Most bytes of records a report carries in its message when the worker sends
#: it from its own thread: a message this small does not wait for the scheduler
#: to read it (the pipe's buffer holds it).
DIRECT_BYTES = 64 * 1024


class ReportSender:
    """Sends a worker's reports to the scheduler in order.

    A report of a few thousand records is about a megabyte, more than the pipe
    holds, so sending one waits until the scheduler has read it all, and the
    scheduler serves every worker. With a ``ring``, such records go there instead
    when they fit (see record_ring), and the report's message is small. A small
    message is sent at once; a big one from a thread of its own, while the
    worker runs its next tasks.
    """

    def __init__(self, conn: Connection, ring: RecordRing | None = None) -> None:
        self._conn = conn
        self._ring = ring
        self._queue: queue.Queue[ChunkReport | None] = queue.Queue(maxsize=QUEUED_REPORTS)
        self._unsent = 0  # reports queued or being written to the pipe
        self._lock = threading.Lock()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="reports", daemon=True)
        self._thread.start()

    def send(self, report: ChunkReport) -> None:
        """Send a report, or queue it; raises BrokenPipeError once the scheduler is gone."""
        if self._error is not None:
            raise BrokenPipeError(f"cannot report to the scheduler: {self._error}")
        with self._lock:
            if self._unsent == 0 and self._send_now(report):
                return
            self._unsent += 1
        self._queue.put(report)

    def _send_now(self, report: ChunkReport) -> bool:
        """Send a report from the calling thread if its message is small: its records
        are few, or in the ring. Waking the thread would cost more. Only while the
        thread has nothing to send, so the two never use the ring or the pipe at once."""
        message = self._small(report)
        if message is None:
            return False
        try:
            self._conn.send(message)
        except OSError as error:
            self._error = error
            raise BrokenPipeError(f"cannot report to the scheduler: {error}") from error
        return True

    def _small(self, report: ChunkReport) -> ChunkReport | None:
        """The report as a small message: as it is if its records are few, else
        with them in the ring; None if they do not fit there."""
        if len(report.records) <= DIRECT_BYTES:
            return report
        place = self._ring.put(report.records) if self._ring is not None else None
        return None if place is None else report._replace(records=b"", in_ring=place)

    def idle(self) -> bool:
        """Every report so far is whole in the pipe."""
        with self._lock:
            return self._unsent == 0

    def close(self) -> None:
        """Send every queued report, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (report := self._queue.get()) is not None:
            if self._error is None:  # after a failure, only drain so send() never blocks
                try:
                    self._conn.send(self._small(report) or report)
                except OSError as error:
                    self._error = error
            with self._lock:
                self._unsent -= 1


class Tracking(NamedTuple):
    """Where a worker notes what a scheduler needs if it dies: see the module's doc."""

    started: "ctypes.c_uint64"  # chunks begun (shared memory)
    # [chunk count, task index] in hand, its command's pid while one runs, and when
    # the worker last began to start a command (boot_ticks) (shared)
    position: "ctypes.Array[ctypes.c_int64]"
    log: TaskLog
    cpu: "CpuLap"


class CpuLap:
    """CPU seconds this process and the commands it waited for used, lap by lap."""

    def __init__(self) -> None:
        self.last = self.total()

    @staticmethod
    def total() -> float:
        # getrusage, not os.times: microseconds, where os.times counts 10 ms ticks
        # that a chunk of quick commands never reaches.
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def lap(self) -> float:
        """Seconds used since the last lap."""
        now = self.total()
        used, self.last = now - self.last, now
        return used


def run_chunk(
    reports: ReportChannel,
    worker: str,
    chunk: Chunk,
    runner: TaskRunner,
    tracking: Tracking,
    dirs: WorkDirs | None = None,
) -> None:
    """Run every task of a chunk, reporting at least every FLUSH_SECONDS.

    Between two tasks the worker does as little as it can: a process that
    wakes from a sleep runs its next Python lines tens of times slower than
    usual (cold caches), and for `sleep 0` the bookkeeping is all there is.
    So each distinct line is parsed once, before the first task runs; a sleep
    costs two clock readings and an entry in the task log; records are built
    when a report is sent.
    """
    texts = chunk.tasks.texts
    plans: dict[str, int | Plan] = {}
    for text in dict.fromkeys(texts):
        planned = plan(text)
        # A sleep as its bare milliseconds: the loop below tells it apart cheaply.
        # One longer than the time limit goes through the runner, which times it out.
        quick = planned.sleep_ms is not None and (
            runner.timeout is None or planned.sleep_ms <= runner.timeout * 1000.0
        )
        plans[text] = planned.sleep_ms if quick and planned.sleep_ms is not None else planned
    finished: list[Outcome | SleepSpan] = []
    first = 0
    last_flush = time.perf_counter_ns()
    total = len(texts)
    clock = time.perf_counter_ns
    sequence = tracking.started.value
    position = tracking.position
    log_sleep, log_outcome = tracking.log.sleeps_of(sequence), tracking.log.outcome
    reporter = ChunkReporter(reports, worker, chunk, tracking)
    for index, text in enumerate(texts):
        position[1] = index  # before it starts: from here a death may cut it off
        how = plans[text]
        if type(how) is int:
            if how:
                if how >= LONG_SLEEP_MS and finished:  # what finished before it goes first
                    last_flush = reporter.send(first, finished, last_flush)
                    first, finished = first + len(finished), []
                began = clock()
                precise_sleep(how / 1000.0)
            else:
                began = clock()
            ended = clock()
            log_sleep(index, began, ended)
            finished.append((began, ended))
        else:
            # What finished before it is sent if it runs on past MEANWHILE_SECONDS.
            early = (
                SendOnce(partial(reporter.send, first, finished, last_flush)) if finished else None
            )
            # position[2]: 0 until its command is started (then SPAWNING, then
            # its pid: note_command), and 0 again once its outcome is logged.
            outcome = run_in_own_dir(runner, dirs, chunk, index, cast(Plan, how), early)
            log_outcome(sequence, index, outcome)
            position[2] = 0  # after its outcome is logged: it is never run again
            if early is not None and early.at:
                first, finished, last_flush = first + len(finished), [], early.at
            finished.append(outcome)
            ended = clock()
        if ended - last_flush >= FLUSH_NS and first + len(finished) < total:
            last_flush = reporter.send(first, finished, last_flush)
            first, finished = first + len(finished), []
    reporter.send(first, finished, last_flush, done=True)


def run_in_own_dir(
    runner: TaskRunner,
    dirs: WorkDirs | None,
    chunk: Chunk,
    index: int,
    planned: Plan,
    meanwhile: Callable[[], None] | None,
) -> Outcome:
    """Run a command in a fresh directory of its own; its files come back if asked."""
    text = chunk.tasks.texts[index]
    if dirs is None or not planned.is_command:
        return runner.run(text, planned, meanwhile)
    label = task_label(chunk.file, chunk.tasks.lines[index])
    try:
        task_dir = dirs.make()
    except OSError as error:  # its job's inputs went: the job was cancelled meanwhile
        now = time.time()
        return Outcome(Status.FAILED, None, now, now, 0.0, error=f"no directory: {error}")
    outcome = runner.run(text, planned, meanwhile, str(task_dir))
    collected = dirs.finish(task_dir, label, outcome.status)
    if collected is None:
        return outcome
    return msgspec.structs.replace(outcome, files=collected.files, files_error=collected.error)


class ChunkReporter:
    """Sends the reports of one chunk: of the tasks finished so far, and the last."""

    def __init__(
        self, reports: ReportChannel, worker: str, chunk: Chunk, tracking: Tracking
    ) -> None:
        self.reports = reports
        self.worker = worker
        self.chunk = chunk
        self.cpu = tracking.cpu

    def send(
        self, first: int, finished: list[Outcome | SleepSpan], since: int, done: bool = False
    ) -> int:
        """Report ``finished`` (from task ``first``; the last report went at
        ``since``); return when this one went (both on perf_counter_ns)."""
        now = time.perf_counter_ns()
        busy = (now - since) / 1e9
        progress = report(self.worker, self.chunk, first, finished, busy, done=done)
        self.reports.send(progress._replace(cpu_seconds=self.cpu.lap()))
        return now


class SendOnce:
    """A report sent on the first call (``at``: when, on perf_counter_ns; 0 until
    then): what a command's wait calls, every MEANWHILE_SECONDS, while it runs."""

    def __init__(self, send: Callable[[], int]) -> None:
        self.send = send
        self.at = 0

    def __call__(self) -> None:
        if self.at:
            return
        # A scheduler that is gone is found once the command has ended, with the
        # next report, as between any two tasks; not in the middle of its wait.
        with contextlib.suppress(BrokenPipeError):
            self.at = self.send()


def report(
    worker: str,
    chunk: Chunk,
    first: int,
    finished: list[Outcome | SleepSpan],
    busy: float,
    *,
    done: bool,
) -> ChunkReport:
    """A report of finished tasks, their records encoded here rather than in the scheduler."""
    job, file = chunk.job_id, chunk.file
    prefix = f"{job}:{chunk.file_number}:"  # + line is worker.task.task_id, inlined: hot path
    lines = chunk.tasks.lines[first : first + len(finished)]
    texts = chunk.tasks.texts[first : first + len(finished)]
    # Epoch time of perf_counter_ns() == 0; the two clocks move together for
    # the half second a report covers.
    epoch_ns = time.time_ns() - time.perf_counter_ns()
    succeeded = Status.SUCCEEDED
    by_status: Counter[Status] = Counter()
    sleeps = 0
    task_ms = 0.0
    results: list[Result] = []
    for line, text, task in zip(lines, texts, finished, strict=True):
        if isinstance(task, tuple):
            began, ended = task
            duration_ms = (ended - began + 500) // 1000 / 1000  # rounded to the microsecond
            record = Result(
                prefix + str(line),
                job,
                file,
                line,
                text,
                succeeded,
                0,
                worker,
                (began + epoch_ns) / 1e9,
                (ended + epoch_ns) / 1e9,
                duration_ms,
                None,
                None,
                None,
                False,
            )
            sleeps += 1
        else:
            record = make_result(prefix + str(line), job, file, line, text, worker, task)
            by_status[task.status] += 1
        task_ms += record.duration_ms
        results.append(record)
    if sleeps:
        by_status[succeeded] += sleeps
    return ChunkReport(
        worker,
        chunk.chunk_id,
        first,
        len(results),
        encode_lines(results),
        by_status,
        task_ms / 1000.0,
        busy,
        done,
    )


def lost_results(chunk: Chunk, first: int, reason: str) -> list[Result]:
    """Records for the tasks of a chunk, from ``first`` on, whose worker died."""
    lines = chunk.tasks.lines[first:]
    texts = chunk.tasks.texts[first:]
    tasks = (
        (chunk.file_number, chunk.file, line, text) for line, text in zip(lines, texts, strict=True)
    )
    return unfinished_results(chunk.job_id, tasks, Status.LOST, reason)


#: Clock ticks a second: the unit of a process's start time in /proc.
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, on the clock and in the unit of a process's start time in /proc: a
    process started after this reading has a start time of at least this."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * TICKS_PER_SECOND)


def die_with_parent() -> None:
    """Ask Linux for SIGTERM when the scheduler dies, even by SIGKILL, so no worker
    (nor the command it runs) outlives it. Elsewhere the pipe's EOF has to do."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the scheduler died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve(
    conn: Connection,
    worker: str,
    timeout: float | None,
    started: ctypes.c_uint64,
    position: "ctypes.Array[ctypes.c_int64]",
    log_path: str,
    ring: "ctypes.Array[ctypes.c_char]",
    records: RecordRing | None = None,
    files: TaskFiles | None = None,
) -> None:
    """Main function of a local worker process (see the module's doc for the rest);
    ``ring`` is its task log's, ``records`` where its reports' records go,
    ``files`` where its tasks' directories are made and their files go."""
    # Ctrl-C reaches the whole foreground process group; the scheduler decides
    # what happens to its workers and stops them with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What this process inherited from the scheduler (modules, the scheduler's
    # objects) is never collected here: frozen, collections neither walk it nor
    # write to its pages, which stay shared with the scheduler. A chunk makes
    # thousands of short-lived objects, none in a cycle: collected less often,
    # they cost about 7 % less CPU a `sleep 0` task.
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION)
    die_with_parent()
    scrub_secrets()

    def note_command(pid: int) -> None:
        # A scheduler whose worker died knows whether the command may have
        # started (SPAWNING or its pid), and ends it; if not, it runs elsewhere.
        # Of the processes it left, only one started since SPAWNING can be it.
        if pid == SPAWNING:
            position[3] = boot_ticks()
        position[2] = pid

    runner = TaskRunner(timeout, on_command=note_command)
    dirs = JobDirs(WorkDirs(files) if files is not None else None)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runner.shell.kill_current()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    tracking = Tracking(started, position, TaskLog(Path(log_path), ring), CpuLap())
    try:
        conn.send(Ready(worker))
        reports = ReportSender(conn, records)
        while (chunk := conn.recv()) is not None:
            if reports.idle():
                tracking.log.empty()  # all of it is in the pipe
            # Before its first task: this process may die at any moment.
            position[0], position[1] = started.value + 1, -1
            started.value += 1
            run_chunk(reports, worker, chunk, runner, tracking, dirs.of(chunk.files))
        reports.close()
    except (EOFError, BrokenPipeError):
        pass  # the scheduler went away: nothing left to report to
    finally:
        runner.close()
        tracking.log.close()
