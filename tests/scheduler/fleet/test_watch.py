"""The fleet watch with a stand-in fleet: it looks only when wanted, and tells how
long a job waited for its first worker."""

import time
from typing import Any, cast

from scheduler.fleet.aws import FleetSample, RemoteFleet
from scheduler.fleet.watch import FleetWatch
from tests.conftest import wait_for


class StandInFleet:
    """A group that has an instance in service from its third look on."""

    def __init__(self) -> None:
        self.looks = 0

    def look(self) -> FleetSample:
        self.looks += 1
        in_service = 1 if self.looks >= 3 else 0
        return FleetSample(time.time(), 1, 1 - in_service, in_service, 0, 0, 4, 0, 0)


def watch_of(fleet: StandInFleet, busy: bool = False) -> FleetWatch:
    return FleetWatch(cast(RemoteFleet, fleet), lambda: busy, interval=0.02)


class Busy:
    """Whether bundles are out (never, here), counting how often it is asked: each
    question is a turn the watch had to look."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return False


def test_it_looks_only_while_watched_or_busy() -> None:
    fleet = StandInFleet()
    busy = Busy()
    watch = FleetWatch(cast(RemoteFleet, fleet), busy, interval=0.02)
    watch.start()
    try:
        wait_for(lambda: busy.asked >= 5, timeout=5)
        assert fleet.looks == 0  # nobody looks, nothing is out: no request made
        watch.want()
        wait_for(lambda: len(watch.samples()) >= 3, timeout=5)
    finally:
        watch.stopping.set()
        watch.join()
    latest = watch.latest()
    assert latest is not None
    assert latest.in_service == 1


def test_a_fleet_at_work_is_looked_at_unwatched() -> None:
    fleet = StandInFleet()
    watch = watch_of(fleet, busy=True)
    watch.start()
    try:
        wait_for(lambda: fleet.looks >= 2, timeout=5)
    finally:
        watch.stopping.set()
        watch.join()


def test_time_to_first_worker() -> None:
    watch = watch_of(StandInFleet())
    samples: list[Any] = [
        FleetSample(100.0, 0, 0, 0, 0, 0, 0, 0, 0),
        FleetSample(102.0, 1, 1, 0, 0, 0, 3, 0, 0),
        FleetSample(104.0, 1, 1, 0, 0, 0, 3, 0, 0),
        FleetSample(106.0, 1, 0, 1, 1, 0, 2, 1, 0),
    ]
    watch._samples.extend(samples)
    assert watch.first_worker_after(101.0) == 5.0  # from the job's start to 106
    assert watch.first_worker_after(107.0) == 0.0  # one was in service already
    assert watch.first_worker_after(50.0) is None  # the samples do not reach back
    assert [s.at for s in watch.samples(since=103.0)] == [104.0, 106.0]
