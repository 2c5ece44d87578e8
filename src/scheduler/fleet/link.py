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
from typing import NamedTuple, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from scheduler.fleet.aws import Delivery, RemoteFleet
from scheduler.fleet.bundling import PackedBundle
from scheduler.retries import RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS  # backoff of AWS calls
from worker.bundle import ResultBatch
from worker.contracts import LONG_POLL_SECONDS

T = TypeVar("T")

log = logging.getLogger("taskfleet.scheduler")

#: Seconds between two settings of the group's capacity while bundles are open.
PROVISION_INTERVAL_SECONDS = 10.0

#: Seconds the receiver waits for the dispatch thread to store what it read.
STORE_TIMEOUT_SECONDS = 30.0

#: The long poll's wait once the link winds down: a poll still waiting when its
#: process ends may yet be handed messages (see RESULT_VISIBILITY_SECONDS).
WIND_DOWN_POLL_SECONDS = 1

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


class FleetLink:
    """Sends bundles to the fleet and brings their results back, on its own threads."""

    def __init__(self, fleet: RemoteFleet, on_arrival: Callable[[], None]) -> None:
        self.fleet = fleet
        self.slots = fleet.resources.slots
        self.on_arrival = on_arrival  # wakes the dispatch thread
        self.stopping = threading.Event()
        self._outbox: queue.Queue[PackedBundle] = queue.Queue()
        self._arrivals: queue.Queue[Arrival] = queue.Queue()
        self._open: dict[str, int] = {}  # bundle id -> its tasks without a result yet
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
        """Stop both threads; a receive in progress is left to end on its own, and
        hands back what it brings."""
        self.stopping.set()
        self._threads[0].join()

    def send(self, bundle: PackedBundle) -> None:
        """Queue a bundle for the fleet."""
        with self._lock:
            self._open[bundle.bundle_id] = bundle.tasks
        self._outbox.put(bundle)

    def open_bundles(self) -> int:
        """Bundles sent (or about to be) whose results are not all in."""
        with self._lock:
            return len(self._open)

    def finished(self, bundle_id: str, tasks: int) -> None:
        """``tasks`` results of a bundle were stored."""
        with self._lock:
            left = self._open.get(bundle_id)
            if left is None:
                return  # sent before a restart, or a duplicate
            if left <= tasks:
                del self._open[bundle_id]
            else:
                self._open[bundle_id] = left - tasks

    def arrivals(self) -> list[Arrival]:
        """What the receiver read since the last call."""
        return take_all(self._arrivals, [])

    def _send_loop(self) -> None:
        last_provision = 0.0
        while not self.stopping.is_set():
            bundles = self._waiting_bundles()
            due = time.monotonic() - last_provision >= PROVISION_INTERVAL_SECONDS
            if bundles or (due and self.open_bundles()):
                for job, of_job in itertools.groupby(bundles, key=lambda bundle: bundle.job):
                    bodies = [bundle.body for bundle in of_job]
                    with self.fleet.meter.charged_to(job):
                        self._retrying("send bundles", partial(self.fleet.send, bodies))
                self._retrying("set capacity", lambda: self.fleet.provision(self.open_bundles()))
                last_provision = time.monotonic()

    def _waiting_bundles(self) -> list[PackedBundle]:
        try:
            first = self._outbox.get(timeout=0.2)
        except queue.Empty:
            return []
        return take_all(self._outbox, [first])

    def _receive_loop(self) -> None:
        while not self.stopping.is_set():
            receive = partial(self.fleet.receive, self._poll_seconds)
            deliveries = self._retrying("receive results", receive)
            for delivery in deliveries or []:
                if self.stopping.is_set():
                    # Nobody stores it now: the next reader's, at once.
                    with contextlib.suppress(*AWS_ERRORS):
                        self.fleet.release(delivery)
                    continue
                self._hand_over(delivery)

    def _hand_over(self, delivery: Delivery) -> None:
        """Give a delivery to the dispatch thread; delete it from its queue once stored."""
        arrival = Arrival(delivery.batches, threading.Event())
        self._arrivals.put(arrival)
        self.on_arrival()
        if arrival.stored.wait(STORE_TIMEOUT_SECONDS):
            with self.fleet.meter.charged_to(delivery.job):
                self._retrying("delete results", lambda: self.fleet.acknowledge(delivery))

    def _retrying(self, what: str, call: Callable[[], T]) -> T | None:
        """``call()``, retried with exponential backoff until it works or the link stops."""
        wait = RETRY_FIRST_SECONDS
        while True:
            try:
                return call()
            except AWS_ERRORS as error:
                log.warning("cannot %s (retrying in %.1f s): %s", what, wait, error)
                if self.stopping.wait(wait):
                    return None
                wait = min(wait * 2, RETRY_MAX_SECONDS)
