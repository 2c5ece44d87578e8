"""The dispatch thread of journaled jobs: journal in, local pool and fleet, journal out.

The scheduler service runs one; so does ``run --remote`` (on a journal of its
own, without a local pool), so the fleet has one dispatcher. It knows neither
path: whoever builds it hands it the local pool's stepper and the fleet's
feeder, behind the small protocols below.

Jobs take turns (round robin, a chunk each), so a huge job does not starve a
small one submitted after it. A job runs where its placement says: local
jobs on the local pool, remote jobs on the fleet (cut into bundles by work
and sent a few dozen a turn, not held back for free slots: the job then runs
on without its submitter, and the backlog sizes the fleet), hybrid jobs on
both (the fleet is kept at one bundle per slot, the local pool takes the rest
as it goes). Only this thread writes results to the journal; request handlers
read them.
"""

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from scheduler.errors import JobNotFoundError
from scheduler.jobs.journal import DISPATCHED, SENT, Journal, Placement
from scheduler.jobs.retention import Retention
from worker.local import Chunk, ChunkReport, lost_results
from worker.result import Result, Status, decode, encode_lines
from worker.task import task_id
from worker.workdir import TaskFiles
from worker.workload import TaskBatch

log = logging.getLogger("taskfleet.scheduler")

#: Seconds the thread waits for results before it looks for new jobs anyway.
POLL_SECONDS = 0.05

#: Seconds between looks for tasks whose wait for a retry is over.
RETRY_LOOK_SECONDS = 0.1

#: How many of a job's next pending tasks to look at: f(job).
View = Callable[["JobCursor"], int]

#: How many of a job's next pending tasks (their texts) to take: f(job, texts).
Cut = Callable[["JobCursor", list[str]], int]

#: Placements whose tasks the local pool runs, and those the fleet runs.
LOCAL_PLACEMENTS = (Placement.LOCAL, Placement.HYBRID)
FLEET_PLACEMENTS = (Placement.REMOTE, Placement.HYBRID)


class LocalStepper(Protocol):
    """What runs chunks on the local pool (``scheduler.local.dispatch.Dispatcher``)."""

    def step(self, timeout: float) -> None: ...

    def in_flight(self) -> int: ...


#: Makes the local stepper from the dispatcher's source and sink.
LocalFactory = Callable[["JournalSource", "JournalSink"], LocalStepper]


class FleetWork(Protocol):
    """What feeds the fleet and stores what it sends back
    (``scheduler.fleet.feeder.FleetFeeder``)."""

    def start(self, wake: Callable[[], None]) -> None: ...

    def reopen(self, source: "JournalSource") -> None: ...

    def store(self, source: "JournalSource", sink: "JournalSink") -> None: ...

    def feed(self, source: "JournalSource") -> None: ...

    def end_finished(self, journal: Journal) -> None: ...

    def cancel(self, job_id: str) -> None: ...

    def busy(self) -> bool: ...

    def stop(self, journal: Journal) -> None: ...


class JobFiles(Protocol):
    """Where the service's jobs get and leave files (``scheduler.jobs.file_store``)."""

    def task_files(self, job_id: str) -> TaskFiles | None: ...

    def admit(self, job_id: str, records: list[bytes]) -> list[bytes]: ...

    def job_ended(self, job_id: str) -> None: ...


class JobCursor:
    """Where dispatch of one job has got to."""

    def __init__(
        self,
        job_id: str,
        placement: str,
        files: list[str],
        total: int,
        pending: int,
        retries: int,
        task_files: TaskFiles | None = None,
    ) -> None:
        self.job_id = job_id
        self.task_files = task_files  # its tasks' inputs and outputs (None: none)
        self.placement = placement
        self.files = files
        self.total = total
        self.retries = retries  # how often a task of it may run again
        self.after = (0, 0)  # (file number, line) of the last task dispatched
        self.pending = pending  # tasks not dispatched yet


class JournalSource:
    """Chunks of pending tasks from the journal, jobs taking turns; a task whose
    wait for a retry is over goes before the others."""

    def __init__(self, journal: Journal, job_files: JobFiles | None = None) -> None:
        self.journal = journal
        self.job_files = job_files
        self.cursors: deque[JobCursor] = deque()  # the active jobs', and only theirs
        self._returned: deque[Chunk] = deque()
        self._chunk_ids = 0
        self._next_retry = math.inf  # when the first task waiting for a retry is due
        self._retries_looked_at = -math.inf  # time.monotonic() of the last look

    def refresh(self) -> None:
        """Pick up jobs sealed since the last look, and drop cancelled ones."""
        active = {info.id: info for info in self.journal.active_jobs()}
        if self.job_files is not None:
            for ended in (c for c in self.cursors if c.job_id not in active):
                self.job_files.job_ended(ended.job_id)
        self.cursors = deque(c for c in self.cursors if c.job_id in active)
        # A job that ended is never active again: what this holds stays bounded
        # by the active jobs, however long the service runs.
        known = {cursor.job_id for cursor in self.cursors}
        for job_id, info in active.items():
            if job_id not in known:
                pending = info.total - info.finished
                files = self.journal.job_files(job_id)  # once per job: it may be long
                task_files = None if self.job_files is None else self.job_files.task_files(job_id)
                cursor = JobCursor(
                    job_id, info.placement, files, info.total, pending, info.retries, task_files
                )
                self.cursors.append(cursor)

    def take(self, count: int) -> Chunk | None:
        """A chunk of at most ``count`` tasks for the local pool."""
        if self._returned:
            return self._returned.popleft()
        return self._take(
            lambda _cursor: count, lambda _cursor, texts: len(texts), LOCAL_PLACEMENTS, DISPATCHED
        )

    def take_for_fleet(self, view: View, cut: Cut, hybrid: bool) -> Chunk | None:
        """A bundle's worth of a job's tasks for the fleet (hybrid jobs too?): of its
        next ``view`` pending tasks, as many as ``cut`` says."""
        placements = FLEET_PLACEMENTS if hybrid else (Placement.REMOTE,)
        return self._take(view, cut, placements, SENT)

    def _take(self, view: View, cut: Cut, placements: tuple[str, ...], state: int) -> Chunk | None:
        if self._retry_due() and (chunk := self._take_retry(view, placements, state)):
            return chunk
        for _ in range(len(self.cursors)):
            cursor = self.cursors[0]
            self.cursors.rotate(-1)
            if not cursor.pending or cursor.placement not in placements:
                continue
            pending = self.journal.pending(cursor.job_id, cursor.after, view(cursor))
            if pending is None:
                cursor.pending = 0
                continue
            taken = max(1, cut(cursor, pending.texts))
            lines, texts = pending.lines[:taken], pending.texts[:taken]
            self.journal.mark_dispatched(cursor.job_id, pending.file_number, lines, state)
            cursor.after = (pending.file_number, lines[-1])
            cursor.pending = max(cursor.pending - len(lines), 0)
            return self._chunk(cursor, pending.file_number, TaskBatch(lines, texts))
        return None

    def _chunk(self, cursor: JobCursor, file_number: int, tasks: TaskBatch) -> Chunk:
        self._chunk_ids += 1
        file = cursor.files[file_number - 1]
        return Chunk(self._chunk_ids, cursor.job_id, file_number, file, tasks, cursor.task_files)

    def _retry_due(self) -> bool:
        """Whether a task waiting for a retry is due (looked up a few times a second)."""
        now = time.monotonic()
        if now - self._retries_looked_at >= RETRY_LOOK_SECONDS:
            self._retries_looked_at = now
            # Only jobs with retries can have a task waiting: no query for the rest.
            dues = (self.journal.next_retry(c.job_id) for c in self.cursors if c.retries)
            self._next_retry = min((due for due in dues if due is not None), default=math.inf)
        return self._next_retry <= time.time()

    def _take_retry(self, view: View, placements: tuple[str, ...], state: int) -> Chunk | None:
        """Tasks of one job whose wait for a retry is over."""
        for cursor in self.cursors:
            if not cursor.retries or cursor.placement not in placements:
                continue
            due = self.journal.retries_due(cursor.job_id, view(cursor))
            if due is not None:
                self.journal.mark_retries_dispatched(
                    cursor.job_id, due.file_number, due.lines, state
                )
                return self._chunk(cursor, due.file_number, TaskBatch(due.lines, due.texts))
        self._retries_looked_at = -math.inf  # none left for these placements: look again
        return None

    def remaining(self) -> int:
        return sum(c.pending for c in self.cursors) + sum(
            len(chunk.tasks.lines) for chunk in self._returned
        )

    def has_work(self) -> bool:
        """Whether any task is waiting to be dispatched."""
        return bool(self._returned) or any(c.pending for c in self.cursors) or self._retry_due()

    def files_of(self, job_id: str) -> list[str]:
        """A job's file names, by file number - 1."""
        for cursor in self.cursors:
            if cursor.job_id == job_id:
                return cursor.files
        return self.journal.job_files(job_id)  # finished or cancelled meanwhile

    def give_back(self, chunk: Chunk) -> None:
        self._returned.append(chunk)


class JournalSink:
    """Stores results in the journal and tells listeners."""

    def __init__(
        self,
        journal: Journal,
        notify: Callable[[], None],
        fleet: bool,
        job_files: JobFiles | None = None,
    ) -> None:
        self.journal = journal
        self.notify = notify
        self.seq = journal.recover(fleet=fleet)
        self.job_files = job_files  # keeps the limit of what a job's tasks leave there

    def results(self, chunk: Chunk, progress: ChunkReport) -> None:
        lines = chunk.tasks.lines[progress.first : progress.first + progress.size]
        records = progress.records.splitlines(keepends=True)
        if self.job_files is not None and chunk.files is not None:
            records = self.job_files.admit(chunk.job_id, records)
        rows = []
        for line, record in zip(lines, records, strict=True):
            rows.append((line, decode(record).status, record))
        self._store(chunk, rows)
        self.journal.add_cpu_seconds(chunk.job_id, progress.cpu_seconds)

    def lost(self, chunk: Chunk, first: int, reason: str) -> None:
        results = lost_results(chunk, first, reason)
        rows = [(r.line, Status.LOST, encode_lines([r])) for r in results]
        self._store(chunk, rows)

    def fleet_results(self, job_id: str, results: list[Result], files: list[str]) -> int:
        """Store results from the fleet for one job (``files``: its); returns how many
        were taken (new, or sending their task back for another attempt). Only a
        result for a task of that job sent to the fleet, with its text, counts:
        anything else in a message (forged, or stale) is dropped."""
        numbers = {name: number for number, name in enumerate(files, start=1)}
        by_file: dict[int, list[tuple[int, str, Status, bytes]]] = {}
        strangers = 0
        for result in results:
            number = numbers.get(result.file)
            if number is None or result.id != task_id(job_id, number, result.line):
                strangers += 1
                continue
            row = (result.line, result.task, result.status, encode_lines([result]))
            by_file.setdefault(number, []).append(row)
        if strangers:
            log.warning("dropped %d results that name no task of job %s", strangers, job_id)
        taken = 0
        for file_number, rows in by_file.items():
            self.seq, stored = self.journal.finish_sent(job_id, file_number, rows, self.seq)
            taken += stored
        self.notify()
        return taken

    def _store(self, chunk: Chunk, rows: list[tuple[int, Status, bytes]]) -> None:
        self.seq = self.journal.finish(chunk.job_id, chunk.file_number, rows, self.seq)
        self.notify()


class JobDispatcher(threading.Thread):
    """Runs jobs from the journal on a local pool and a fleet (either may be
    missing) until stopped.

    Made in the main thread, it settles what a previous run left in the
    journal (``Journal.recover``) before the service takes requests.
    """

    def __init__(
        self,
        journal_path: Path,
        notify: Callable[[], None],
        *,
        local: LocalFactory | None = None,
        feeder: FleetWork | None = None,
        retention: Retention | None = None,
        job_files: JobFiles | None = None,
        task_filters: bool = True,
    ) -> None:
        """``local`` makes the local pool's stepper from this dispatcher's source and
        sink; ``feeder`` feeds the fleet. Either may be missing. With a
        ``retention``, ended jobs are pruned from the journal as it says; with
        ``job_files``, jobs that have files of their own get them there;
        ``task_filters``: as ``Journal`` takes it."""
        super().__init__(name="taskfleet-dispatch", daemon=True)
        self.local = local
        self.journal = Journal(journal_path, task_filters=task_filters)
        self.sink = JournalSink(self.journal, notify, fleet=feeder is not None, job_files=job_files)
        self.wake = threading.Event()  # set when a job is sealed or cancelled, or results came
        self.feeder = feeder
        self.retention = retention
        self.job_files = job_files
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.last_busy = time.monotonic()
        # Cancels run on this thread: only it numbers results (seq).
        self._cancels: queue.Queue[tuple[str, threading.Event]] = queue.Queue()

    def cancel(self, job_id: str, timeout: float) -> bool:
        """Cancel a job's pending tasks; True once done within ``timeout`` seconds."""
        done = threading.Event()
        self._cancels.put((job_id, done))
        self.wake.set()
        return done.wait(timeout)

    def run(self) -> None:
        source = JournalSource(self.journal, self.job_files)
        dispatcher = None if self.local is None else self.local(source, self.sink)
        if self.feeder is not None:
            self.feeder.start(self.wake.set)
            source.refresh()
            self.feeder.reopen(source)
        try:
            while not self.stopping.is_set():
                self._run_cancels()
                if self.wake.is_set() or not source.has_work():
                    self.wake.clear()
                    source.refresh()  # new jobs in, finished and cancelled ones out
                if self.feeder is not None:
                    self.feeder.store(source, self.sink)
                    self.feeder.feed(source)
                    self.feeder.end_finished(self.journal)
                    if self.feeder.busy():
                        self.last_busy = time.monotonic()
                if dispatcher is not None and (source.has_work() or dispatcher.in_flight()):
                    self.last_busy = time.monotonic()
                    dispatcher.step(POLL_SECONDS)
                else:
                    self.wake.wait(POLL_SECONDS)
                if self.retention is not None:
                    self.retention.step(self.journal)
        except BaseException as error:
            self.failure = error  # reported by /health; the server stops on it
            raise
        finally:
            if self.feeder is not None:
                self.feeder.stop(self.journal)
            self.journal.close()

    def _run_cancels(self) -> None:
        while not self._cancels.empty():
            job_id, done = self._cancels.get()
            with contextlib.suppress(JobNotFoundError):  # ended and pruned meanwhile
                self.sink.seq = self.journal.cancel(job_id, self.sink.seq)
            if self.feeder is not None:
                self.feeder.cancel(job_id)
            self.sink.notify()
            done.set()

    def idle_seconds(self) -> float:
        """Seconds since the pool or the fleet last had work."""
        return time.monotonic() - self.last_busy
