"""The fleet path under duplicate deliveries and a lost network, end to end on moto_server.

The scheduler's side is the service's own dispatch thread (journal, fleet link)
in this process; the workers are real `taskfleet worker` processes. Faults are
injected between them: a duplicator copies every bundle onto the request queue
twice and every result message onto the response queue twice, and a proxy in
front of the emulator refuses every connection for a while.
"""

import contextlib
import gc
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest

from scheduler.fleet.aws import RemoteFleet, StackResources
from scheduler.fleet.feeder import FleetFeeder
from scheduler.jobs.dispatch import JobDispatcher
from scheduler.jobs.journal import JobState, Journal, Placement
from scheduler.local.dispatch import Dispatcher
from scheduler.local.pool import LocalPool
from tests.conftest import Resources, start_worker, wait_for
from tests.faults.figures import Figures
from tests.faults.test_killed_workers import ledger_runs, ledger_task
from worker.result import decode

pytestmark = pytest.mark.e2e


class Duplicator(threading.Thread):
    """Moves every message from one queue to another, twice over: the copy a
    second after the original. (Copies at the same instant reach two workers that
    claim the bundle at once; DynamoDB's conditional write lets one claim win, but
    moto_server checks the condition and writes without a lock, so under load
    both may win there: a fault of the emulator, not of what this test measures.)"""

    def __init__(self, sqs: Any, source: str, target: str) -> None:
        super().__init__(daemon=True)
        self.sqs, self.source, self.target = sqs, source, target
        self.copied = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.source, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in messages:
                for delay in (0, 1):
                    self.sqs.send_message(
                        QueueUrl=self.target, MessageBody=message["Body"], DelaySeconds=delay
                    )
                    self.copied += 1
                self.sqs.delete_message(
                    QueueUrl=self.source, ReceiptHandle=message["ReceiptHandle"]
                )


class FlakyProxy:
    """A TCP proxy to the emulator that can refuse everything for a while."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0  # a free one, taken as the first listener binds
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listen (again, after a cut: on the same port, where clients reconnect)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close the port and every connection through it: clients get refused."""
        assert self._listener is not None
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()  # the emulator itself is gone
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()


@contextlib.contextmanager
def service_side(
    tmp_path: Path, requests: str, resources: Resources
) -> Iterator[tuple[Journal, JobDispatcher]]:
    """The service's dispatch thread with a fleet: bundles out to ``requests``, results in."""
    journal_path = tmp_path / "journal.sqlite3"
    fleet = RemoteFleet(
        StackResources(requests, resources.responses, resources.dead_letters, None, 2)
    )
    pool = LocalPool(1, None)
    pool.start()
    dispatcher = JobDispatcher(
        journal_path,
        lambda: None,
        local=partial(Dispatcher, pool),
        feeder=FleetFeeder.of(fleet, pool.size, None, reads_overhead=True),
    )
    dispatcher.start()
    journal = Journal(journal_path)
    try:
        yield journal, dispatcher
    finally:
        dispatcher.stopping.set()
        dispatcher.join(timeout=60)
        pool.stop(graceful=False)
        journal.close()
        # The link's boto3 clients keep pooled connections until collected; collect
        # them here, not in some later test that would be blamed for their warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def submit(journal: Journal, dispatcher: JobDispatcher, texts: list[str]) -> str:
    job = "fault1"
    journal.create_job(job, Placement.REMOTE)
    journal.add_tasks(job, [(1, n, text) for n, text in enumerate(texts, start=1)])
    journal.seal_job(job, ["w.txt"], len(texts))
    dispatcher.wake.set()
    return job


def queue_is_empty(sqs: Any, queue: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(value == "0" for value in attributes.values())


def reported(journal: Journal, job: str) -> Counter[int]:
    return Counter(decode(record).line for _, record in journal.results_page(job, 0, 100_000))


def test_duplicate_deliveries_on_both_queues_run_once_and_report_once(
    resources: Resources, tmp_path: Path, record: list[Figures]
) -> None:
    sqs = resources.sqs
    staging_requests = sqs.create_queue(QueueName="staging-requests")["QueueUrl"]
    with service_side(tmp_path, staging_requests, resources) as (journal, dispatcher):
        result = run_with_duplicates(resources, journal, dispatcher, staging_requests, tmp_path)
    record.append(result)
    assert (result.lost, result.reported_twice, result.executed_twice) == (0, 0, 0)


def run_with_duplicates(
    resources: Resources,
    journal: Journal,
    dispatcher: JobDispatcher,
    staging_requests: str,
    tmp_path: Path,
) -> Figures:
    """A remote job whose bundles and result messages all arrive twice; its figures."""
    sqs = resources.sqs
    staging_responses = sqs.create_queue(QueueName="staging-responses")["QueueUrl"]
    duplicators = [
        Duplicator(boto3.client("sqs"), staging_requests, resources.requests),
        Duplicator(boto3.client("sqs"), staging_responses, resources.responses),
    ]
    for duplicator in duplicators:
        duplicator.start()
    workers = [
        start_worker(
            resources._replace(responses=staging_responses),
            f"i-{n}",
            tmp_path,
            "--idle-timeout",
            "600",
        )
        for n in (1, 2)
    ]
    tasks = 24
    ledger = tmp_path / "ledger.txt"
    job = submit(journal, dispatcher, [ledger_task(ledger, n, 0.02) for n in range(1, tasks + 1)])
    try:
        wait_for(lambda: journal.job(job).state == JobState.DONE, timeout=180)
        # Then every second copy is delivered and read too: the service must ignore them.
        wait_for(lambda: all(d.copied % 2 == 0 for d in duplicators), timeout=60)
        wait_for(lambda: queue_is_empty(sqs, resources.responses), timeout=60)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
        for duplicator in duplicators:
            duplicator.stopping.set()
            duplicator.join()
    assert duplicators[0].copied >= 2  # there were duplicates on both queues
    assert duplicators[1].copied >= 2
    note = f"{duplicators[0].copied} bundle and {duplicators[1].copied} result copies sent"
    return figures(
        "every bundle and every result message delivered twice", journal, job, ledger, tasks, note
    )


def figures(fault: str, journal: Journal, job: str, ledger: Path, tasks: int, note: str) -> Figures:
    """One trial's figures from the journal (what was reported) and the ledger (what ran)."""
    counts = reported(journal, job)
    runs = Counter(n for n, *_ in ledger_runs(ledger))
    return Figures(
        fault,
        1,
        tasks,
        sum(1 for n in range(1, tasks + 1) if not counts[n]),
        sum(1 for count in counts.values() if count > 1),
        sum(1 for count in runs.values() if count > 1),
        note,
    )


def test_the_emulator_unreachable_for_a_while_loses_nothing(
    moto_endpoint: str,
    resources: Resources,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: list[Figures],
) -> None:
    proxy = FlakyProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    # The scheduler's clients and the workers' reach the emulator through the proxy.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://localhost:{proxy.port}")
    tasks = 40
    ledger = tmp_path / "ledger.txt"
    with service_side(tmp_path, resources.requests, resources) as (journal, dispatcher):
        workers = [
            start_worker(resources, f"i-{n}", tmp_path, "--idle-timeout", "600") for n in (1, 2)
        ]
        try:
            texts = [ledger_task(ledger, n, 0.1) for n in range(1, tasks + 1)]
            job = submit(journal, dispatcher, texts)
            wait_for(ledger.exists, timeout=60)
            proxy.cut()
            time.sleep(8)  # every call of scheduler and workers is refused meanwhile
            proxy.restore()
            wait_for(lambda: journal.job(job).state == JobState.DONE, timeout=240)
            assert all(worker.poll() is None for worker in workers)  # they rode it out
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
            proxy.cut()  # and leave no port or connection open behind the test
        result = figures(
            "emulator unreachable for 8 s mid-job (connections refused)",
            journal,
            job,
            ledger,
            tasks,
            "retried with backoff; ran twice: bundles whose lease (2 s here) ran out in the"
            " outage, run again after their first holder gave them up and dropped its results",
        )
    record.append(result)
    assert (result.lost, result.reported_twice) == (0, 0)
