"""The scheduler service's link to the fleet: bundles out, results in, capacity set.

Two threads do the talking, so the dispatch thread never waits on AWS. The
sender puts bundles on the request queue ten to a call and sets the group's
desired capacity each time it sends, and every PROVISION_INTERVAL_SECONDS
while bundles are open. The receiver long-polls the response queue (and the
dead-letter queue) and hands what it reads to the dispatch thread, deleting
the messages only once their results are in the journal. AWS errors are
logged and retried with backoff: a bundle that could not be sent is sent
again (the claim table runs a bundle delivered twice once), a result that
could not be deleted comes back and is stored once.
"""

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple, TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError

from scheduler.fleet.aws import Delivery, RemoteFleet
from scheduler.fleet.bundling import PackedBundle
from scheduler.fleet.job_store import READER_LEASE_SECONDS, caller_identity
from scheduler.retries import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS  # backoff of AWS calls
from worker.bundle import ResultBatch
from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGES_PER_CALL
from worker.sqs import aws_client

T = TypeVar("T")

log = logging.getLogger("taskfleet.scheduler")

#: Receivers of one job's queue at most: one, and more while its receives come
#: back full (results arrive faster than one receiver's round trips store
#: them: each receive, store and delete waits on the network, so several
#: overlap); an extra one stops at its first receive that is not full.
MAX_RECEIVERS_PER_JOB = 8

#: Seconds an extra receiver waits for messages (the first waits a long poll).
EXTRA_RECEIVER_WAIT_SECONDS = 1

#: Seconds between two settings of the group's capacity while bundles are open.
PROVISION_INTERVAL_SECONDS = 10.0

#: Seconds the receiver waits for the dispatch thread to store what it read.
STORE_TIMEOUT_SECONDS = 30.0

#: The long poll's wait once the link winds down: a poll still waiting when its
#: process ends may yet be handed messages (see RESULT_VISIBILITY_SECONDS).
WIND_DOWN_POLL_SECONDS = 1

#: Jobs ended here that a second end of is known to be one (see FleetLink._ended).
ENDED_REMEMBERED = 1000

AWS_ERRORS = (BotoCoreError, ClientError, RuntimeError)


def take_all(waiting: "queue.Queue[T]", taken: list[T]) -> list[T]:
    """``taken`` and everything in the queue now, without waiting."""
    while True:
        try:
            taken.append(waiting.get_nowait())
        except queue.Empty:
            return taken


class Arrival(NamedTuple):
    """Result batches read from the fleet; set ``stored`` once they are journaled."""

    batches: list[ResultBatch]
    stored: threading.Event


class JobOpening(NamedTuple):
    """A job whose bundles are about to be sent: kept in the stack, its queue made."""

    job_id: str
    files: list[str]
    total: int
    timeout: float
    retries: int
    record_shards: int  # where its workers store its records: see worker.record_items


class JobChange(NamedTuple):
    """A job cancelled (``cancel``) or ended (every result stored) here."""

    job_id: str
    cancel: bool
    queue_url: str | None = None  # an ended job's queue, if known: deleted without a look-up


#: What the sender thread works through, in order.
Outgoing = PackedBundle | JobOpening | JobChange


class FleetLink:
    """Sends bundles to the fleet and brings their results back, on its own threads.

    Each job's results come back on its own queue, read by a receiver thread
    of the job's own; the main receiver reads the response queue (what the
    workers used for no job) and the dead-letter queue.
    """

    def __init__(
        self,
        fleet: RemoteFleet,
        on_arrival: Callable[[], None] = lambda: None,
        *,
        reads_overhead: bool = True,
    ) -> None:
        """``reads_overhead``: read the reports of workers that ran no job (a
        scheduler service shows the fleet's overhead; `run --remote` does not)."""
        self.fleet = fleet
        self.reads_overhead = reads_overhead
        self.slots = fleet.resources.slots
        self.on_arrival = on_arrival  # wakes the dispatch thread
        self.stopping = threading.Event()
        self.submitted_by = ""  # who submits this link's jobs: looked up once
        self._outbox: queue.Queue[Outgoing] = queue.Queue()
        self._arrivals: queue.Queue[Arrival] = queue.Queue()
        self._open: dict[str, tuple[str, int]] = {}  # bundle id -> (job, tasks without a result)
        self._unsent = 0  # bundles queued here, not yet on the request queue
        # job -> (set to stop its receivers, the job's queue)
        self._receivers: dict[str, tuple[threading.Event, str]] = {}
        self._extra_receivers: dict[str, int] = {}  # job -> receivers beside its first
        # Jobs ended here lately, oldest first: both the dispatcher and `run
        # --remote` end a job, soon after each other, and a second end would cost
        # three requests that change nothing. The oldest are forgotten past
        # ENDED_REMEMBERED, so a service running for months keeps a bounded set.
        self._ended: dict[str, None] = {}
        self._poll_seconds = LONG_POLL_SECONDS
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send_loop, name="taskfleet-fleet-send", daemon=True),
            threading.Thread(target=self._receive_loop, name="taskfleet-fleet-recv", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wind_down(self) -> None:
        """Poll briefly from now on: the link is about to stop (its job is done)."""
        self._poll_seconds = WIND_DOWN_POLL_SECONDS

    def stop(self) -> None:
        """Stop the threads; a receive in progress is left to end on its own, and
        hands back what it brings."""
        self.stopping.set()
        self._threads[0].join()
        self._release_readers()

    def _release_readers(self) -> None:
        """Give up the reader lease of each job still read here (the client
        detached, or stops): anyone may collect them at once, not a lease later.
        One try each: a lease not given up lapses on its own."""
        jobs = self.fleet.jobs
        with self._lock:
            reading = list(self._receivers)
            self._receivers.clear()
        if jobs is None:
            return
        for job_id in reading:
            with contextlib.suppress(*AWS_ERRORS), self.fleet.meter.charged_to(job_id):
                jobs.hold_reader(job_id, release=True)

    def open_job(self, opening: JobOpening) -> None:
        """Keep a job in the stack and make its queue, before its first bundle goes."""
        self._outbox.put(opening)

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job on the fleet: workers stop its tasks."""
        self._outbox.put(JobChange(job_id, cancel=True))

    def end_job(self, job_id: str) -> None:
        """Every result of a job is stored: it ends in the stack, its queue goes
        (once: a second call does nothing)."""
        with self._lock:
            if job_id in self._ended:
                return
            self._ended[job_id] = None
            if len(self._ended) > ENDED_REMEMBERED:
                del self._ended[next(iter(self._ended))]
            stop, url = self._receivers.pop(job_id, (None, None))
        if stop is not None:
            stop.set()
        self._outbox.put(JobChange(job_id, cancel=False, queue_url=url))

    def reading(self) -> set[str]:
        """The jobs whose queues this link reads now."""
        with self._lock:
            return set(self._receivers)

    def send(self, bundle: PackedBundle) -> None:
        """Queue a bundle for the fleet."""
        with self._lock:
            self._open[bundle.bundle_id] = (bundle.job, bundle.tasks)
            self._unsent += 1
        self._outbox.put(bundle)

    def open_bundles(self, job_id: str | None = None) -> int:
        """Bundles (of a job, or of all) sent or about to be, whose results are not all in."""
        with self._lock:
            if job_id is None:
                return len(self._open)
            return sum(1 for job, _ in self._open.values() if job == job_id)

    def unsent(self) -> int:
        """Bundles queued here and not yet on the request queue."""
        with self._lock:
            return self._unsent

    def finished(self, bundle_id: str, tasks: int) -> None:
        """``tasks`` results of a bundle were stored."""
        with self._lock:
            open_ = self._open.get(bundle_id)
            if open_ is None:
                return  # sent before a restart, or a duplicate
            job, left = open_
            if left <= tasks:
                del self._open[bundle_id]
            else:
                self._open[bundle_id] = (job, left - tasks)

    def arrivals(self) -> list[Arrival]:
        """What the receivers read since the last call."""
        return take_all(self._arrivals, [])

    def _send_loop(self) -> None:
        last_provision = 0.0
        while not self.stopping.is_set():
            items = self._waiting_items()
            due = time.monotonic() - last_provision >= PROVISION_INTERVAL_SECONDS
            sent = 0
            for kind, group in itertools.groupby(items, key=type):
                if kind is PackedBundle:
                    bundles = cast(list[PackedBundle], list(group))
                    self._send_bundles(bundles)
                    sent += len(bundles)
                else:
                    for item in group:
                        self._change(cast(JobOpening | JobChange, item))
            if sent or (due and self.open_bundles()):
                self._retrying("set capacity", partial(self.fleet.provision, sent))
                last_provision = time.monotonic()
        # Jobs ended or cancelled just before the stop: one try each.
        for item in take_all(self._outbox, []):
            if isinstance(item, JobChange):
                self._change(item)

    def _send_bundles(self, bundles: list[PackedBundle]) -> None:
        for job, of_job in itertools.groupby(bundles, key=lambda bundle: bundle.job):
            bodies = [bundle.body for bundle in of_job]
            with self.fleet.meter.charged_to(job):
                self._retrying("send bundles", partial(self.fleet.send, bodies))
            with self._lock:
                self._unsent -= len(bodies)

    def _change(self, item: "JobOpening | JobChange") -> None:
        jobs = self.fleet.jobs
        if jobs is None:
            return  # no job queues: results come on the response queue
        with self.fleet.meter.charged_to(item.job_id):
            if isinstance(item, JobOpening):
                url = self._retrying("keep a job in the stack", partial(self._create, item))
                if url is not None:
                    self._start_receiver(item, url)
            elif item.cancel:
                self._retrying("cancel a job", partial(jobs.cancel, item.job_id))
            else:
                self._retrying("end a job", partial(jobs.end, item.job_id, item.queue_url))

    def _create(self, opening: JobOpening) -> str | None:
        """The job kept in the stack and its queue made; its queue's URL, or None
        for a job that has ended in the stack (nothing more of it comes back)."""
        jobs = self.fleet.jobs
        assert jobs is not None
        if not self.submitted_by:
            self.submitted_by = caller_identity(aws_client("sts"))
        url = jobs.create(
            opening.job_id,
            files=opening.files,
            total=opening.total,
            timeout=opening.timeout,
            retries=opening.retries,
            submitted_by=self.submitted_by,
            record_shards=opening.record_shards,
        )
        if url is None:
            log.warning("job %s has ended in the stack: nothing of it is read", opening.job_id)
        return url

    def _start_receiver(self, opening: JobOpening, url: str) -> None:
        stop = threading.Event()
        with self._lock:
            self._receivers[opening.job_id] = (stop, url)
        threading.Thread(
            target=self._receive_job_loop,
            args=(opening, url, stop),
            name=f"taskfleet-fleet-recv-{opening.job_id}",
            daemon=True,
        ).start()

    def _add_receiver(self, opening: JobOpening, url: str, stop: threading.Event) -> None:
        """One more receiver of a job's queue, unless it has MAX_RECEIVERS_PER_JOB."""
        job_id = opening.job_id
        with self._lock:
            extra = self._extra_receivers.get(job_id, 0)
            if extra + 1 >= MAX_RECEIVERS_PER_JOB:
                return
            self._extra_receivers[job_id] = extra + 1
        threading.Thread(
            target=self._receive_job_extra,
            args=(opening, url, stop),
            name=f"taskfleet-fleet-recv-{job_id}-{extra + 1}",
            daemon=True,
        ).start()

    def _receive_job_extra(self, opening: JobOpening, url: str, stop: threading.Event) -> None:
        try:
            self._receive_job_loop(opening, url, stop, first=False)
        finally:
            with self._lock:
                left = self._extra_receivers.pop(opening.job_id, 1) - 1
                if left:
                    self._extra_receivers[opening.job_id] = left

    def _waiting_items(self) -> list[Outgoing]:
        try:
            first = self._outbox.get(timeout=0.2)
        except queue.Empty:
            return []
        return take_all(self._outbox, [first])

    def _receive_loop(self) -> None:
        while not self.stopping.is_set():
            receive = partial(self.fleet.receive, self._poll_seconds, overhead=self.reads_overhead)
            deliveries = self._retrying("receive results", receive)
            for delivery in deliveries or []:
                if self.stopping.is_set():
                    # Nobody stores it now: the next reader's, at once.
                    with contextlib.suppress(*AWS_ERRORS):
                        self.fleet.release(delivery)
                    continue
                self._hand_over(delivery)

    def _receive_job_loop(
        self, opening: JobOpening, url: str, stop: threading.Event, *, first: bool = True
    ) -> None:
        """Read one job's queue until the job ends here or the link stops: each
        delivery kept in the stack, then journaled, then deleted. While it reads,
        the ``first`` receiver holds the job's reader lease (taken as the job was
        kept, renewed every third of it, with the count of the records stored
        since), so other readers leave the queue to it. A full receive adds a
        receiver; an extra one (not ``first``) stops at a receive that is not full."""
        job_id = opening.job_id
        renew_at = time.monotonic() + READER_LEASE_SECONDS / 3
        while not (stop.is_set() or self.stopping.is_set()):
            if first and time.monotonic() >= renew_at and self._hold_reader(job_id, stop):
                renew_at = time.monotonic() + READER_LEASE_SECONDS / 3
            wait = self._poll_seconds if first else EXTRA_RECEIVER_WAIT_SECONDS
            receive = partial(self.fleet.receive_job, url, wait)
            delivery = self._retrying("receive results", receive, stop)
            if delivery is None or not delivery.messages:
                if first:
                    continue
                return
            full = len(delivery.messages) >= MAX_MESSAGES_PER_CALL
            if full:
                self._add_receiver(opening, url, stop)  # more wait: stored side by side
            if not self._store(opening, delivery, stop) or not (first or full):
                return

    def _store(self, opening: JobOpening, delivery: Delivery, stop: threading.Event) -> bool:
        """Keep a delivery in the stack, then journal it, then delete it; False if
        the link stopped first (it is then the next reader's)."""
        if self.stopping.is_set():
            with contextlib.suppress(*AWS_ERRORS):
                self.fleet.release(delivery)  # the next reader's, at once
            return False
        keep = partial(self.fleet.keep, opening.job_id, delivery, len(opening.files), reading=True)
        if self._retrying("store results in the stack", keep, stop) is None:
            return False  # stopped before they were kept: they come back to the next reader
        self._hand_over(delivery, stop)
        return True

    def _hold_reader(self, job_id: str, stop: threading.Event) -> bool:
        """Renew this client's hold on the job's queue; whether it was."""
        jobs = self.fleet.jobs
        if jobs is None:
            return False
        hold = partial(jobs.hold_reader, job_id)
        with self.fleet.meter.charged_to(job_id):
            return self._retrying("hold the job's queue", hold, stop) is not None

    def _hand_over(self, delivery: Delivery, stop: threading.Event | None = None) -> None:
        """Give a delivery to the dispatch thread; delete it from its queue once stored."""
        arrival = Arrival(delivery.batches, threading.Event())
        self._arrivals.put(arrival)
        self.on_arrival()
        if arrival.stored.wait(STORE_TIMEOUT_SECONDS):
            with self.fleet.meter.charged_to(delivery.job):
                delete = partial(self.fleet.acknowledge, delivery)
                self._retrying("delete results", delete, stop)

    def _retrying(
        self, what: str, call: Callable[[], T], stop: threading.Event | None = None
    ) -> T | None:
        """``call()``, retried with exponential backoff until it works or the link
        (or ``stop``) stops."""
        wait = RETRY_FIRST_SECONDS
        while True:
            try:
                return call()
            except AWS_ERRORS as error:
                if stop is not None and stop.is_set():
                    return None
                log.warning("cannot %s (retrying in %.1f s): %s", what, wait, error)
                if self.stopping.wait(wait):
                    return None
                wait = min(wait * 2, RETRY_MAX_SECONDS)
