"""Feeding the fleet from the journal: jobs packed into bundles, results stored.

The dispatch thread (``scheduler.jobs.dispatch``) calls a ``FleetFeeder`` each
turn: it stores what the link brought back, sends the fleet's share of the
jobs as bundles, and ends in the stack the jobs whose results are all in.
"""

import logging
import math
import time
from collections.abc import Callable

from scheduler.errors import JobNotFoundError
from scheduler.fleet.aws import RemoteFleet
from scheduler.fleet.bundle_sizing import SHARES_PER_SLOT, BundleSizer
from scheduler.fleet.bundling import BundlePacker
from scheduler.fleet.link import FleetLink, JobOpening
from scheduler.jobs.dispatch import FLEET_PLACEMENTS, JobCursor, JournalSink, JournalSource
from scheduler.jobs.journal import JobState, Journal, Placement
from worker.bundle import BundleFiles, ResultBatch
from worker.local import Chunk
from worker.record_items import RecordPlace, shards_for
from worker.usage import USAGE_WAIT_SECONDS

log = logging.getLogger("taskfleet.scheduler")

#: Most bundles packed per turn of the loop, so local workers wait little.
BUNDLES_PER_TURN = 50


class FleetFeeder:
    """Packs the fleet's share of jobs into bundles and stores what comes back.

    Bundles are cut by work (``BundleSizer``: a fair share of the work left,
    so they shrink toward a job's end), BUNDLES_PER_TURN at most each turn.
    A remote job's bundles are not held back for free slots: the job then runs
    on without its submitter (it may detach, or die), and the backlog sizes
    the fleet. Hybrid jobs go to
    the fleet only while it has a slot without a bundle; the local workers
    take the rest. Each job is kept in the stack (``FleetLink.open_job``)
    before its first bundle goes, and ended there once its results and its
    workers' usage reports are all in.
    """

    @classmethod
    def of(
        cls,
        fleet: RemoteFleet,
        local_workers: int,
        timeout: float | None,
        job_files: BundleFiles | None = None,
        *,
        reads_overhead: bool,
    ) -> "FleetFeeder":
        """A feeder of ``fleet``, beside ``local_workers`` local workers (for hybrid
        jobs), its tasks limited to ``timeout`` seconds (None: no limit), getting
        and giving files as ``job_files`` says (None: none; ``run --remote`` only:
        its feeder has one job); ``reads_overhead``: as ``FleetLink`` takes it."""
        link = FleetLink(fleet, reads_overhead=reads_overhead)
        return cls(link, local_workers, timeout, job_files)

    def __init__(
        self,
        link: FleetLink,
        local_workers: int,
        timeout: float | None,
        job_files: BundleFiles | None = None,
    ) -> None:
        self.link = link
        self.local_workers = local_workers
        self.timeout = timeout  # per task, carried by the bundles (None: none)
        self.job_files = job_files  # carried by the bundles too
        self.sizers: dict[str, BundleSizer] = {}  # by job
        self.opened: dict[str, float | None] = {}  # job -> since when it is final here
        self._queued: dict[str, int] = {}  # job -> its tasks in bundles handed to the link
        self._places: dict[str, RecordPlace] = {}  # job -> where its workers store records

    def sizer(self, job_id: str) -> BundleSizer:
        return self.sizers.setdefault(job_id, BundleSizer())

    def view(self, cursor: JobCursor) -> int:
        """How many of a job's next pending tasks its next bundle is cut from."""
        return self.sizer(cursor.job_id).view

    def cut(self, cursor: JobCursor, texts: list[str]) -> int:
        """How many of a job's next pending tasks make its next bundle."""
        sizer = self.sizer(cursor.job_id)
        if cursor.placement != Placement.HYBRID:
            return sizer.cut(texts, cursor.pending, self.link.slots)
        # Shared with the local workers: no bundle takes more than a share of
        # the tasks left, or a small job would go to the fleet whole.
        slots = self.link.slots + self.local_workers
        share = math.ceil(cursor.pending / (SHARES_PER_SLOT * slots))
        return min(sizer.cut(texts, cursor.pending, slots), share)

    def feed(self, source: JournalSource) -> None:
        """Send bundles while the fleet has fewer open than it should."""
        for _ in range(BUNDLES_PER_TURN):
            hybrid = self.link.open_bundles() < self.link.slots
            chunk = source.take_for_fleet(self.view, self.cut, hybrid)
            if chunk is None:
                return
            files = source.files_of(chunk.job_id)
            if chunk.job_id not in self.opened:
                self._open(source, chunk.job_id, files)
            # One chunk, one bundle (or more, should it pass the message limit).
            tasks = chunk.tasks
            timeout = self.timeout or 0.0
            job_files = self.job_files or self.files_of(chunk)
            place = self._places.get(chunk.job_id)
            packer = BundlePacker(chunk.job_id, files, len(tasks.lines), timeout, job_files, place)
            for line, text in zip(tasks.lines, tasks.texts, strict=True):
                if (bundle := packer.add(chunk.file_number, line, text)) is not None:
                    self.link.send(bundle)
            if (bundle := packer.finish()) is not None:
                self.link.send(bundle)
            self._queued[chunk.job_id] = self._queued.get(chunk.job_id, 0) + len(tasks.lines)

    def files_of(self, chunk: Chunk) -> BundleFiles | None:
        """What a chunk's bundles say of its job's files: those of a service's job
        with inputs or outputs of its own (shipped to the bucket: see
        ``scheduler.service.fleet_files``)."""
        if chunk.files is None:
            return None
        bucket = self.link.fleet.resources.job_files_bucket
        return BundleFiles(
            bucket, chunk.files.inputs is not None, chunk.files.output_dir is not None
        )

    def queued(self, job_id: str) -> int:
        """A job's tasks in bundles handed to the link (sent, or about to be)."""
        return self._queued.get(job_id, 0)

    def _open(self, source: JournalSource, job_id: str, files: list[str]) -> None:
        info = source.journal.job(job_id)
        self.opened[job_id] = None
        jobs = self.link.fleet.jobs
        shards = shards_for(self.link.slots)
        if jobs is not None:  # a stack that keeps jobs: its workers store the records
            expires_at = int(time.time() + jobs.retention_seconds)
            self._places[job_id] = RecordPlace(shards, expires_at)
        opening = JobOpening(job_id, files, info.total, self.timeout or 0.0, info.retries, shards)
        self.link.open_job(opening)

    def reopen(self, source: JournalSource) -> None:
        """After a restart: read again the queues of the fleet jobs the journal has
        running, whose results the fleet may still be sending."""
        for cursor in list(source.cursors):
            if cursor.placement in FLEET_PLACEMENTS and cursor.job_id not in self.opened:
                self._open(source, cursor.job_id, cursor.files)

    def cancel(self, job_id: str) -> None:
        """Cancel a job on the fleet too, if it went there."""
        if job_id in self.opened:
            self.link.cancel_job(job_id)

    def end_finished(self, journal: Journal) -> None:
        """End in the stack the jobs whose results are all in, once their workers'
        usage reports are too (or USAGE_WAIT_SECONDS after their last result)."""
        now = time.monotonic()
        for job_id, final_since in list(self.opened.items()):
            if self.link.open_bundles(job_id):
                continue
            try:
                state, finished, total = journal.progress(job_id)
            except JobNotFoundError:
                state, finished, total = JobState.DONE, 0, 0  # ended, and pruned since
            if state not in JobState.FINAL or finished < total:
                continue
            if final_since is None:
                self.opened[job_id] = final_since = now
            if journal.usage_to_come(job_id) and now - final_since < USAGE_WAIT_SECONDS:
                continue
            self.link.end_job(job_id)
            del self.opened[job_id]
            self.sizers.pop(job_id, None)
            self._queued.pop(job_id, None)
            self._places.pop(job_id, None)
        # A job looked at but never opened here (nothing of it was left to send)
        # has a sizer too: it goes with the rest.
        for job_id in self.sizers.keys() - self.opened.keys():
            del self.sizers[job_id]

    def start(self, wake: Callable[[], None]) -> None:
        """Start the link's threads; ``wake`` wakes the dispatch thread when results come."""
        self.link.on_arrival = wake
        self.link.start()

    def stop(self, journal: Journal) -> None:
        """Stop the link, and journal the cost of its last calls."""
        self.link.stop()
        self.store_usage(journal)

    def busy(self) -> bool:
        """Whether bundles are out on the fleet."""
        return self.link.open_bundles() > 0

    def store(self, source: JournalSource, sink: JournalSink) -> None:
        """Journal the results the fleet sent, so the link may delete their messages.

        A batch that cannot be stored is logged and dropped alone: one bad
        message never stops dispatch.
        """
        for arrival in self.link.arrivals():
            for batch in arrival.batches:
                try:
                    self._store_batch(batch, source, sink)
                except Exception:
                    log.exception("dropped a result batch of bundle %s", batch.bundle_id)
            arrival.stored.set()
        self.store_usage(sink.journal)

    def store_usage(self, journal: Journal) -> None:
        """Journal what the scheduler's own calls to the fleet cost since last time."""
        meter = self.link.fleet.meter
        for job in [*meter.jobs(), None]:
            if usage := meter.take(job):
                journal.add_usage(job, usage)

    def _store_batch(self, batch: ResultBatch, source: JournalSource, sink: JournalSink) -> None:
        if (report := batch.usage) is not None:
            sink.journal.add_usage(report.job, report.usage, report)
        if not batch.results:
            return
        job_id = batch.results[0].job
        files = source.files_of(job_id)  # none for a job this journal does not know
        self.link.finished(batch.bundle_id, sink.fleet_results(job_id, batch.results, files))
        sizer = self.sizers.get(job_id)
        if sizer is not None:
            for result in batch.results:
                if result.stdout is not None:  # a shell command's record
                    sizer.observe_command(result.duration_ms / 1000.0)
