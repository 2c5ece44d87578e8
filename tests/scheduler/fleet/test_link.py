"""FleetLink with a stand-in fleet: retries, bookkeeping, acknowledging only once stored."""

import threading
import time
from typing import Any, cast

import pytest
from botocore.exceptions import EndpointConnectionError

from scheduler.fleet import link as fleet_link
from scheduler.fleet.aws import Delivery, RemoteFleet, StackResources
from scheduler.fleet.bundling import PackedBundle
from scheduler.fleet.link import FleetLink, JobOpening
from worker.bundle import ResultBatch
from worker.result import Outcome, Status, make_result
from worker.usage import UsageMeter


class StandInFleet:
    """Records what the link asks of the fleet; the first send fails as a network would."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.resources = StackResources("req", "resp", "dlq", "group", 3)
        self.meter = UsageMeter()
        self.jobs: StandInJobs | None = None  # no job store: results on the response queue
        self.sent: list[str] = []
        self.provisioned: list[int] = []
        self.acknowledged: list[Delivery] = []
        self.released: list[Delivery] = []
        self.waits: list[int] = []
        self.deliveries = deliveries
        self.send_failures = 1
        self.receiving = threading.Event()  # set while a receive waits
        self.hold = threading.Event()  # cleared: a receive waits until it is set
        self.hold.set()

    def send(self, bodies: list[str]) -> int:
        if self.send_failures:
            self.send_failures -= 1
            raise EndpointConnectionError(endpoint_url="http://localhost:1")
        self.sent.extend(bodies)
        return 1

    def provision(self, open_bundles: int) -> int:
        self.provisioned.append(open_bundles)
        return open_bundles

    def receive(self, wait_seconds: int = 20, *, overhead: bool = True) -> list[Delivery]:
        del overhead  # one queue here brings everything
        self.waits.append(wait_seconds)
        self.receiving.set()
        self.hold.wait()
        if self.deliveries:
            return [self.deliveries.pop(0)]
        time.sleep(0.05)
        return []

    def acknowledge(self, delivery: Delivery) -> None:
        self.acknowledged.append(delivery)

    def release(self, delivery: Delivery) -> None:
        self.released.append(delivery)

    def receive_job(self, queue_url: str, wait_seconds: int) -> Delivery:
        self.waits.append(wait_seconds)
        time.sleep(0.05)
        return Delivery(queue_url, [], [])


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet_link, "RETRY_FIRST_SECONDS", 0.01)


def test_a_failed_send_is_retried_and_capacity_set_from_open_bundles() -> None:
    fleet = StandInFleet([])
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=lambda: None)
    link.start()
    try:
        link.send(PackedBundle("b1", "body-1", 4))
        link.send(PackedBundle("b2", "body-2", 4))
        wait_until(lambda: fleet.provisioned)
        assert fleet.sent == ["body-1", "body-2"]
        assert fleet.provisioned == [2]
    finally:
        link.stop()


def test_open_bundles_close_when_all_their_results_are_in() -> None:
    link = FleetLink(cast(RemoteFleet, StandInFleet([])), on_arrival=lambda: None)
    link.send(PackedBundle("b1", "body", 3))
    link.finished("b1", 2)
    assert link.open_bundles() == 1
    link.finished("b1", 1)
    link.finished("b1", 1)  # a duplicate, or results of a bundle sent before a restart
    link.finished("unknown", 5)
    assert link.open_bundles() == 0


def test_results_are_deleted_only_once_stored() -> None:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0)
    result = make_result("j:1:1", "j", "w.txt", 1, "true", "i-1", outcome)
    delivery = Delivery("resp", [{"ReceiptHandle": "r"}], [ResultBatch("b1", "i-1", [result])])
    fleet = StandInFleet([delivery])
    woken = threading.Event()
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=woken.set)
    link.start()
    try:
        assert woken.wait(10)
        (arrival,) = link.arrivals()
        assert arrival.batches == delivery.batches
        time.sleep(0.2)
        assert fleet.acknowledged == []  # not stored yet
        arrival.stored.set()
        wait_until(lambda: fleet.acknowledged == [delivery])
    finally:
        link.stop()


def result_delivery() -> Delivery:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0)
    result = make_result("j:1:1", "j", "w.txt", 1, "true", "i-1", outcome)
    return Delivery("resp", [{"ReceiptHandle": "r"}], [ResultBatch("b1", "i-1", [result])])


def test_results_a_stopped_link_receives_are_handed_back_at_once() -> None:
    # A long poll still waiting as the link stops may yet bring results (of the
    # next run on the stack): visible again at once, not after a timeout.
    fleet = StandInFleet([])
    fleet.hold.clear()
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=lambda: None)
    link.start()
    assert fleet.receiving.wait(10)
    link.wind_down()
    link.stop()
    delivery = result_delivery()
    fleet.deliveries.append(delivery)
    fleet.hold.set()
    wait_until(lambda: fleet.released)
    assert fleet.released == [delivery]
    assert fleet.acknowledged == []
    assert link.arrivals() == []


def test_a_winding_down_link_polls_briefly() -> None:
    fleet = StandInFleet([])
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=lambda: None)
    link.start()
    try:
        wait_until(lambda: fleet.waits)
        link.wind_down()
        wait_until(lambda: fleet.waits[-1] == fleet_link.WIND_DOWN_POLL_SECONDS)
    finally:
        link.stop()
    assert fleet.waits[0] == 20


class StandInJobs:
    """The job store's end and reader leases, recorded."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.released: list[str] = []

    def create(self, job_id: str, **_: object) -> str:
        return f"https://q/{job_id}"

    def hold_reader(self, job_id: str, *, release: bool = False) -> float:
        if release:
            self.released.append(job_id)
        return 0.0

    def end(self, job_id: str, queue_url: str | None = None) -> None:
        self.ended.append(job_id)
        assert queue_url in (None, f"https://q/{job_id}")  # the queue made for it, if any


def test_a_job_ended_twice_is_ended_in_the_stack_once() -> None:
    fleet = StandInFleet([])
    jobs = StandInJobs()
    fleet.jobs = jobs
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=lambda: None)
    link.start()
    try:
        # The dispatcher ends a job once its results are in, and so does `run --remote`.
        link.end_job("job-1")
        link.end_job("job-1")
        wait_until(lambda: jobs.ended)
    finally:
        link.stop()
    assert jobs.ended == ["job-1"]


def test_a_link_stopping_gives_up_the_reader_lease_of_jobs_it_still_reads() -> None:
    fleet = StandInFleet([])
    jobs = StandInJobs()
    fleet.jobs = jobs
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=lambda: None)
    link.submitted_by = "arn:me"
    link.start()
    try:
        for job in ("detached", "done"):
            link.open_job(
                JobOpening(job, ["w.txt"], total=1, timeout=1.0, retries=0, record_shards=1)
            )
        wait_until(lambda: link.reading() == {"detached", "done"})
        link.end_job("done")
    finally:
        link.stop()
    # The ended job needs no lease; the other is anyone's to collect at once.
    assert jobs.released == ["detached"]


class BackedUpQueue(StandInFleet):
    """A job's queue with ``full`` receives' worth of results waiting (ten
    messages each), then one message; each store takes a while, as a network's
    round trips do. Records how many receivers worked at once."""

    def __init__(self, full: int) -> None:
        super().__init__([])
        self.jobs = StandInJobs()
        self.full = full
        self.last = 1
        self.busy = 0
        self.most_busy = 0
        self.job_waits: list[int] = []
        self._lock = threading.Lock()

    def receive_job(self, queue_url: str, wait_seconds: int) -> Delivery:
        with self._lock:
            self.job_waits.append(wait_seconds)
            if self.full:
                self.full -= 1
                count = 10
            else:
                count, self.last = self.last, 0
        time.sleep(0.01 if count else 0.05)
        messages = [{"ReceiptHandle": f"r{n}"} for n in range(count)]
        return Delivery(queue_url, messages, [])

    def keep(self, *_: object, **__: object) -> int:
        with self._lock:
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
        time.sleep(0.1)
        with self._lock:
            self.busy -= 1
        return 0


def test_a_backed_up_job_queue_is_read_by_several_receivers_then_by_one() -> None:
    fleet = BackedUpQueue(full=30)
    link = FleetLink(cast(RemoteFleet, fleet), on_arrival=lambda: None)
    link.submitted_by = "arn:me"
    stored = threading.Event()

    def journal() -> None:  # the dispatcher's part: each arrival stored at once
        while not stored.is_set():
            for arrival in link.arrivals():
                arrival.stored.set()
            time.sleep(0.01)

    journaling = threading.Thread(target=journal)
    journaling.start()
    link.start()
    try:
        link.open_job(JobOpening("j", ["w.txt"], total=1, timeout=1.0, retries=0, record_shards=1))
        wait_until(lambda: len(fleet.acknowledged) == 31)  # every delivery, once
        # Full receives added receivers, up to the most a job may have; each
        # extra one left at its first receive that was not full.
        assert 2 <= fleet.most_busy <= fleet_link.MAX_RECEIVERS_PER_JOB
        wait_until(lambda: not link._extra_receivers)
        extra_waits = [w for w in fleet.job_waits if w == fleet_link.EXTRA_RECEIVER_WAIT_SECONDS]
        assert extra_waits
    finally:
        link.stop()
        stored.set()
        journaling.join()
