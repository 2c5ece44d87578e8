"""The fleet as the dashboard shows it: samples of its group and queues over time.

A thread looks at the fleet every few seconds, but only while someone is
looking (a dashboard's event stream, a ``GET /fleet``) or bundles are out:
each look costs two SQS requests (charged to no job: the fleet's overhead),
so an idle, unwatched service costs nothing. The samples kept make the
group's timeline and tell how long a job waited for its first worker.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from scheduler.fleet.aws import FleetSample, RemoteFleet

log = logging.getLogger("taskfleet.scheduler")

#: Seconds between two looks.
LOOK_SECONDS = 2.0

#: Seconds a look at the dashboard keeps the watch looking.
WANTED_SECONDS = 10.0

#: Samples kept: an hour at LOOK_SECONDS.
KEPT_SAMPLES = 1800


class FleetWatch(threading.Thread):
    """Samples the fleet while wanted; keeps the last KEPT_SAMPLES."""

    def __init__(
        self, fleet: RemoteFleet, busy: Callable[[], bool], interval: float = LOOK_SECONDS
    ) -> None:
        super().__init__(name="taskfleet-fleet-watch", daemon=True)
        self.fleet = fleet
        self.busy = busy  # whether bundles are out
        self.interval = interval
        self.stopping = threading.Event()
        self._samples: deque[FleetSample] = deque(maxlen=KEPT_SAMPLES)
        self._wanted_until = 0.0
        self._lock = threading.Lock()

    def want(self) -> None:
        """Someone looks: keep sampling for WANTED_SECONDS more."""
        self._wanted_until = time.monotonic() + WANTED_SECONDS

    def run(self) -> None:
        while not self.stopping.is_set():
            if time.monotonic() < self._wanted_until or self.busy():
                try:
                    sample = self.fleet.look()
                except (BotoCoreError, ClientError) as error:
                    log.warning("cannot look at the fleet: %s", error)
                else:
                    with self._lock:
                        self._samples.append(sample)
            self.stopping.wait(self.interval)

    def samples(self, since: float = 0.0) -> list[FleetSample]:
        """Samples taken after ``since`` (epoch seconds), oldest first."""
        with self._lock:
            return [sample for sample in self._samples if sample.at > since]

    def latest(self) -> FleetSample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def first_worker_after(self, since: float) -> float | None:
        """Seconds from ``since`` to the first sample with an instance in service
        (0 when one already was), or None if none is seen yet or the samples
        do not reach back that far."""
        with self._lock:
            samples = list(self._samples)
        if not samples or samples[0].at > since + self.interval * 2:
            return None
        before = [s for s in samples if s.at <= since]
        if before and before[-1].in_service:
            return 0.0
        for sample in samples:
            if sample.at > since and sample.in_service:
                return sample.at - since
        return None
