"""The scheduler service's dispatch thread: journal in, local pool, journal out.

Jobs take turns (round robin, a chunk each), so a huge job does not starve a
small one submitted after it. Only this thread writes results to the journal;
request handlers read them.
"""

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from scheduler.dispatch import Dispatcher
from scheduler.journal import Journal
from scheduler.local_pool import LocalPool
from worker.local import Chunk, Progress, lost_results
from worker.result import Status, decode, encode_lines
from worker.workload import TaskBatch

#: Seconds the thread waits for results before it looks for new jobs anyway.
POLL_SECONDS = 0.05


class _JobCursor:
    """Where dispatch of one job has got to."""

    def __init__(self, job_id: str, files: list[str], pending: int) -> None:
        self.job_id = job_id
        self.files = files
        self.after = (0, 0)  # (file number, line) of the last task dispatched
        self.pending = pending  # tasks not dispatched yet


class JournalSource:
    """Chunks of pending tasks from the journal, jobs taking turns."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.cursors: deque[_JobCursor] = deque()
        self._known: set[str] = set()
        self._returned: deque[Chunk] = deque()
        self._chunk_ids = 0

    def refresh(self) -> None:
        """Pick up jobs sealed since the last look, and drop cancelled ones."""
        active = {info.id: info for info in self.journal.active_jobs()}
        self.cursors = deque(c for c in self.cursors if c.job_id in active)
        for job_id, info in active.items():
            if job_id not in self._known:
                self._known.add(job_id)
                pending = info.total - info.finished
                self.cursors.append(_JobCursor(job_id, info.files, pending))

    def take(self, count: int) -> Chunk | None:
        if self._returned:
            return self._returned.popleft()
        for _ in range(len(self.cursors)):
            cursor = self.cursors[0]
            self.cursors.rotate(-1)
            if not cursor.pending:
                continue
            pending = self.journal.pending(cursor.job_id, cursor.after, count)
            if pending is None:
                cursor.pending = 0
                continue
            self.journal.mark_dispatched(cursor.job_id, pending.file_number, pending.lines)
            cursor.after = (pending.file_number, pending.lines[-1])
            cursor.pending = max(cursor.pending - len(pending.lines), 0)
            self._chunk_ids += 1
            file = cursor.files[pending.file_number - 1]
            batch = TaskBatch(pending.lines, pending.texts)
            return Chunk(self._chunk_ids, cursor.job_id, pending.file_number, file, batch)
        return None

    def remaining(self) -> int:
        return sum(c.pending for c in self.cursors) + sum(
            len(chunk.tasks.lines) for chunk in self._returned
        )

    def has_work(self) -> bool:
        """Whether any task is waiting to be dispatched."""
        return bool(self._returned) or any(c.pending for c in self.cursors)

    def give_back(self, chunk: Chunk) -> None:
        self._returned.append(chunk)


class JournalSink:
    """Stores results in the journal and tells listeners."""

    def __init__(self, journal: Journal, notify: Callable[[], None]) -> None:
        self.journal = journal
        self.notify = notify
        self.seq = journal.recover()

    def results(self, chunk: Chunk, progress: Progress) -> None:
        lines = chunk.tasks.lines[progress.first : progress.first + progress.size]
        rows = []
        for line, record in zip(lines, progress.records.splitlines(keepends=True), strict=True):
            rows.append((line, decode(record).status, record))
        self._store(chunk, rows)

    def lost(self, chunk: Chunk, first: int, reason: str) -> None:
        results = lost_results(chunk, first, reason)
        rows = [(r.line, Status.LOST, encode_lines([r])) for r in results]
        self._store(chunk, rows)

    def _store(self, chunk: Chunk, rows: list[tuple[int, Status, bytes]]) -> None:
        self.seq = self.journal.finish(chunk.job_id, chunk.file_number, rows, self.seq)
        self.notify()


class ServiceDispatcher(threading.Thread):
    """Runs jobs from the journal on a local pool until stopped.

    Made in the main thread, it settles what a previous run left in the
    journal (``Journal.recover``) before the service takes requests.
    """

    def __init__(self, journal_path: Path, pool: LocalPool, notify: Callable[[], None]) -> None:
        super().__init__(name="taskfleet-dispatch", daemon=True)
        self.pool = pool
        self.journal = Journal(journal_path)
        self.sink = JournalSink(self.journal, notify)
        self.wake = threading.Event()  # set when a job is sealed or cancelled
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
        source = JournalSource(self.journal)
        dispatcher = Dispatcher(self.pool, source, self.sink)
        try:
            while not self.stopping.is_set():
                self._run_cancels()
                if self.wake.is_set() or not source.has_work():
                    self.wake.clear()
                    source.refresh()  # new jobs in, finished and cancelled ones out
                if source.has_work() or dispatcher.in_flight():
                    self.last_busy = time.monotonic()
                    dispatcher.step(POLL_SECONDS)
                else:
                    self.wake.wait(POLL_SECONDS)
        except BaseException as error:
            self.failure = error  # reported by /health; the server stops on it
            raise
        finally:
            self.journal.close()

    def _run_cancels(self) -> None:
        while not self._cancels.empty():
            job_id, done = self._cancels.get()
            self.sink.seq = self.journal.cancel(job_id, self.sink.seq)
            self.sink.notify()
            done.set()

    def idle_seconds(self) -> float:
        """Seconds since the pool last had work."""
        return time.monotonic() - self.last_busy
