"""How long the journal keeps ended jobs, and the pruning that holds it to that.

A service runs for months: without pruning its journal, and the time of every
query on it, would grow with every job ever run. Ended jobs are kept for a
retention (``scheduler --keep-days``), then forgotten whole: their tasks,
records, file names and usage reports. The service prunes at start and then
periodically, a short step per turn of its dispatch thread; ``taskfleet prune``
does it on demand, beside a running service or not (each step is one short
transaction, and a job is pruned only once nothing can change it). A job's
files (``file_store``) go with it, and inputs no job used for the retention.
"""

import time
from pathlib import Path
from typing import NamedTuple

from scheduler.jobs.file_store import FileStore
from scheduler.jobs.journal import SHRINK_PAGES, Journal

#: What ``--keep-days`` is when not given.
DEFAULT_KEEP_DAYS = 30.0

SECONDS_PER_DAY = 86_400.0

#: Longest time between two prunings: the ended jobs past their retention at
#: most wait this long to go.
PRUNE_EVERY_SECONDS = 3600.0

#: Shortest time between two prunings (for a retention of seconds, in tests and the soak).
MIN_PRUNE_EVERY_SECONDS = 1.0


def keep_seconds(keep_days: float) -> float:
    return keep_days * SECONDS_PER_DAY


class Retention:
    """Prunes a journal of the jobs that ended more than ``keep_seconds`` ago,
    one short step per call while a pruning is due, then gives the freed pages
    back to the file system, a few MiB per call."""

    def __init__(self, keep_seconds: float, files: FileStore | None = None) -> None:
        self.keep_seconds = keep_seconds
        self.files = files  # the jobs' files, pruned with them
        self.every = min(PRUNE_EVERY_SECONDS, max(keep_seconds / 4, MIN_PRUNE_EVERY_SECONDS))
        self._next = time.monotonic() + self.every  # the start pruned already (prune_journal)
        self._cutoff: float | None = None  # while a pruning is under way: its end time
        self._shrinking = False

    def step(self, journal: Journal) -> None:
        """Do one step of a pruning, if one is due; otherwise nothing."""
        if self._cutoff is None and not self._shrinking:
            if time.monotonic() < self._next:
                return
            self._cutoff = time.time() - self.keep_seconds
        if self._cutoff is not None:
            if step := journal.prune_step(self._cutoff):
                if self.files is not None:
                    self.files.remove_jobs(step.ids)
                return
            self._cutoff = None
            if self.files is not None:
                self.files.prune_blobs(self.keep_seconds)
            self._shrinking = True
        free = journal.free_pages()
        if free > 0:
            journal.shrink(SHRINK_PAGES)
            if journal.free_pages() < free:
                return
            # Nothing given back (a journal not compacted yet): pruning goes on.
        self._shrinking = False
        self._next = time.monotonic() + self.every


class PruneReport(NamedTuple):
    """What ``prune_journal`` did: the jobs it forgot, the journal's bytes before
    and after (its write-ahead log included), and whether it compacted it."""

    jobs: int
    bytes_before: int
    bytes_after: int
    compacted: bool


def journal_bytes(path: Path) -> int:
    """The journal's size on disk: the database and its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())


def prune_journal(path: Path, keep_seconds: float, files: FileStore | None = None) -> PruneReport:
    """Forget the jobs of the journal at ``path`` that ended more than
    ``keep_seconds`` ago (their ``files`` too), and give the space back to the
    file system.

    A journal of an earlier version is compacted first (``Journal.compact``: a
    VACUUM). Every service of this version compacts its journal as it starts,
    before it dispatches, so only a service of an earlier version can be kept
    waiting by that; pruning itself is safe beside a running service.
    """
    before = journal_bytes(path)
    journal = Journal(path)
    try:
        forgotten = None if files is None else files.remove_jobs
        pruned = journal.prune(time.time() - keep_seconds, forgotten)
        if files is not None:
            files.prune_blobs(keep_seconds)
        compacted = journal.compact()
        journal.shrink()
        # PASSIVE: a running service's readers and writers are never made to wait.
        journal.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        journal.close()
    return PruneReport(pruned, before, journal_bytes(path), compacted)
