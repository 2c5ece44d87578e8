"""Shared fixtures: workload files, the real CLI, a real scheduler service process,
moto_server with the remote path's queues and table, and workers against them."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import httpx
import pytest
import uvicorn

from scheduler.jobs.dispatch import JobDispatcher
from scheduler.jobs.file_store import FileStore, store_of
from scheduler.local.dispatch import Dispatcher
from scheduler.local.pool import LocalPool
from scheduler.service.api import build_app
from scheduler.service.context import Notifier, ServiceContext
from scheduler.service.guard import AccessRules
from scheduler.service.http_protocol import GuardedH11Protocol
from scheduler.service.server import bind
from scripts.metadata_stand_in import MetadataStandIn
from worker.bundle import Bundle, BundleTask, decode_result_batch, encode_bundle
from worker.contracts import JobItem
from worker.sqs import aws_client

#: The fault suite's figures (its ``record`` fixture, and their printing).
pytest_plugins = ["tests.faults.figures"]

WriteWorkload = Callable[..., str]

#: What `make test-fast` leaves out.
SLOW_MARKERS = ("e2e", "volume", "emulator", "cdk")


def needs_root_tools(*tools: str) -> None:
    """Skip where root or the tools are missing (a laptop); in CI, fail instead."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    problem = "not root" if os.geteuid() != 0 else f"missing {', '.join(missing)}"
    if os.geteuid() != 0 or missing:
        if os.environ.get("CI"):
            pytest.fail(f"task isolation needs root and {', '.join(tools)}: {problem}")
        pytest.skip(problem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need the emulator or the CDK app, so the fast tier can
    leave them out without each test having to say so."""
    cdk_tests = Path(__file__).parent / "cdk"
    for item in items:
        if "moto_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.emulator)
        if item.path.is_relative_to(cdk_tests):
            item.add_marker(pytest.mark.cdk)


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder of the test's own: schedulers started here keep their token
    (and default journal) in it, and clients read the token from it."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    monkeypatch.delenv("TASKFLEET_TOKEN", raising=False)
    return home


def service_token() -> str:
    """The token of the schedulers a test started (its state folder's)."""
    return (Path(os.environ["XDG_STATE_HOME"]) / "taskfleet" / "token").read_text().strip()


def service_headers() -> dict[str, str]:
    """What a raw HTTP request to a test's scheduler needs beside its body."""
    return {"Authorization": f"Bearer {service_token()}", "Content-Type": "application/x-ndjson"}


@pytest.fixture
def workload(tmp_path: Path) -> WriteWorkload:
    """Write a workload file from lines (or raw bytes) and return its path."""
    counter = iter(range(1, 1_000_000))

    def write(*lines: str, raw: bytes | None = None, name: str | None = None) -> str:
        path = tmp_path / (name or f"workload-{next(counter)}.txt")
        path.write_bytes(
            raw if raw is not None else "".join(f"{line}\n" for line in lines).encode()
        )
        return str(path)

    return write


def taskfleet_command() -> list[str]:
    """The installed ``taskfleet`` console script, as a person would run it."""
    script = Path(sys.executable).parent / "taskfleet"
    if script.exists():
        return [str(script)]
    found = shutil.which("taskfleet")
    assert found, "the taskfleet console script is not installed (pip install -e .)"
    return [found]


def run_cli(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the real CLI to completion and capture its output."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*taskfleet_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


class SchedulerProcess:
    """A real ``taskfleet scheduler`` process on a free loopback port."""

    def __init__(
        self, journal: Path, log: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.journal = journal
        self.log = log  # its stderr, kept in a file so a full pipe never blocks it
        self.extra = extra
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> "SchedulerProcess":
        command = [
            *taskfleet_command(),
            "scheduler",
            "--port",
            "0",
            "--workers",
            "2",
            "--journal",
            str(self.journal),
            *self.extra,
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stderr=log, stdout=subprocess.DEVNULL, env=self.env
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"listening on (https?://\S+)", self.log.read_text())
            if match:
                self.url = match.group(1)
                break
            assert self.process.poll() is None, f"scheduler exited: {self.log.read_text()}"
            time.sleep(0.05)
        else:
            raise AssertionError(f"scheduler did not start: {self.log.read_text()}")
        while time.monotonic() < deadline:
            try:
                # A test scheduler with TLS has a self-signed certificate.
                if httpx.get(f"{self.url}/health", timeout=2, verify=False).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("scheduler never answered /health")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup runs."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)


#: The scheduler_service fixture: start a scheduler with these extra arguments.
StartScheduler = Callable[..., SchedulerProcess]


@pytest.fixture
def scheduler_service(tmp_path: Path) -> Iterator[Callable[..., SchedulerProcess]]:
    """Start real scheduler processes; every one is stopped after the test."""
    started: list[SchedulerProcess] = []

    def start(
        *extra: str, journal: Path | None = None, env: dict[str, str] | None = None
    ) -> SchedulerProcess:
        log = tmp_path / f"scheduler-{len(started) + 1}.log"
        journal = journal or tmp_path / "journal.sqlite3"
        service = SchedulerProcess(journal, log, *extra, env=env)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        if service.process is not None and service.process.poll() is None:
            service.process.kill()
            service.process.wait()


class InProcessService(NamedTuple):
    port: int
    url: str
    journal: Path
    headers: dict[str, str]  # what a request needs: the token and the upload type


#: The token of in-process services.
IN_PROCESS_TOKEN = "token-of-an-in-process-service"


@contextlib.contextmanager
def in_process_service() -> Iterator[InProcessService]:
    """The service's real app, protocol, journal and HTTP server on a loopback
    port, in this process; its dispatch thread is not started, so nothing
    uploaded ever runs."""
    with tempfile.TemporaryDirectory() as folder:
        journal = Path(folder) / "journal.sqlite3"
        notifier = Notifier()
        dispatcher = JobDispatcher(
            journal, notifier.notify_threadsafe, local=partial(Dispatcher, LocalPool(1, None))
        )
        sock = bind("127.0.0.1", 0)
        port = sock.getsockname()[1]
        rules = AccessRules.for_address("127.0.0.1", port, IN_PROCESS_TOKEN)
        files = FileStore(store_of(journal))
        context = ServiceContext(journal, dispatcher, notifier, 1, 0, rules, files=files)
        config = uvicorn.Config(build_app(context), http=GuardedH11Protocol, log_level="critical")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        headers = {
            "Authorization": f"Bearer {IN_PROCESS_TOKEN}",
            "Content-Type": "application/x-ndjson",
        }
        try:
            yield InProcessService(port, f"http://127.0.0.1:{port}", journal, headers)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()
            dispatcher.journal.close()


@contextlib.contextmanager
def fake_metadata(address: tuple[str, int] = ("127.0.0.1", 0)) -> Iterator[MetadataStandIn]:
    """Instance metadata (IMDSv2) served on a free loopback port unless told:
    whatever ``answer`` put at a path, 404 elsewhere."""
    with (
        tempfile.TemporaryDirectory() as folder,
        MetadataStandIn(Path(folder), address) as stand_in,
    ):
        yield stand_in


def parent_pids() -> dict[int, int]:
    """The parent of every live process (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError):
                continue
    return parents


def children_of(pid: int, *, direct: bool = False) -> list[int]:
    """Every live descendant of a process, or only its children (``direct``)."""
    parents = parent_pids()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(kids)
        if not direct:
            frontier.extend(kids)
    return found


def is_running(pid: int) -> bool:
    """True while a process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real moto_server process for the whole session; its URL."""
    process, url = start_moto_server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def moto_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's moto_server, emptied for this test; boto3 here points at it."""
    httpx.post(f"{moto_server}/moto-api/reset", timeout=30).raise_for_status()
    for name, value in emulator_environment(moto_server).items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """An S3 client of the session's moto_server, with an empty bucket "files"."""
    assert moto_endpoint
    client = aws_client("s3")
    client.create_bucket(Bucket="files")
    return client


def start_moto_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A moto_server process on a port it chose itself, answering; and its URL."""
    moto = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", "0"], stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while True:
        # It binds a free port (so no other process can take it first) and logs it.
        if found := re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log.read_bytes()):
            url = f"http://localhost:{int(found.group(1))}"
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/moto-api/", timeout=2)
                return process, url
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "moto_server did not start"
        time.sleep(0.1)


def emulator_environment(url: str) -> dict[str, str]:
    """What boto3 needs to talk to the emulator at ``url``."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# -- the remote path without a stack: queues, table and workers on moto_server ---------


class Resources(NamedTuple):
    sqs: Any
    requests: str
    responses: str
    dead_letters: str
    table: str


@pytest.fixture
def resources(moto_endpoint: str) -> Resources:
    assert os.environ["AWS_ENDPOINT_URL"] == moto_endpoint  # boto3 here and in workers
    sqs: Any = boto3.client("sqs")
    dead_letters = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    requests = sqs.create_queue(
        QueueName="requests",
        Attributes={
            "VisibilityTimeout": "3",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": 2}),
        },
    )["QueueUrl"]
    responses = sqs.create_queue(QueueName="responses")["QueueUrl"]
    boto3.client("dynamodb").create_table(
        TableName="claims",
        KeySchema=[{"AttributeName": "bundle", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "bundle", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Resources(sqs, requests, responses, dead_letters, "claims")


def create_job_table(dynamodb: Any, name: str) -> None:
    """A job table as the stack makes it (cdk/jobs.py), on the emulator."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": JobItem.PARTITION, "KeyType": "HASH"},
            {"AttributeName": JobItem.SORT, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": JobItem.PARTITION, "AttributeType": "S"},
            {"AttributeName": JobItem.SORT, "AttributeType": "S"},
            {"AttributeName": JobItem.DAY, "AttributeType": "S"},
            {"AttributeName": "submitted_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": JobItem.DAY_INDEX,
                "KeySchema": [
                    {"AttributeName": JobItem.DAY, "KeyType": "HASH"},
                    {"AttributeName": "submitted_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def start_worker(
    resources: Resources, instance: str, tmp_path: Path, *extra: str
) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{instance}.log").open("wb")
    with log:
        return subprocess.Popen(
            [
                *taskfleet_command(),
                "worker",
                "--request-queue-url",
                resources.requests,
                "--response-queue-url",
                resources.responses,
                "--claim-table",
                resources.table,
                "--region",
                "us-east-1",
                "--instance-id",
                instance,
                "--visibility-timeout",
                "3",
                # One slot unless a test says otherwise; short polls, so idle
                # workers end soon after their idle timeout.
                "--concurrency",
                "1",
                "--poll-seconds",
                "1",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )


def drain(sqs: Any, queue: str) -> list[str]:
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def results_by_id(sqs: Any, queue: str) -> Counter[str]:
    return Counter(
        result.id for body in drain(sqs, queue) for result in decode_result_batch(body).results
    )


def bundle(bundle_id: str, *texts: str) -> str:
    tasks = [BundleTask(1, n, text) for n, text in enumerate(texts, start=1)]
    return encode_bundle(Bundle(bundle_id, "job1", ["w.txt"], tasks))


def flaky(folder: Path, name: str = "ran-once") -> str:
    """A command that fails (exit 3, stdout "first") the first time it runs, then
    succeeds (stdout "second"); ``name``: its marker file in ``folder``."""
    state = folder / name
    return f"if [ -e {state} ]; then echo second; else touch {state}; echo first; exit 3; fi"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def records_by_line(text: str) -> dict[int, dict[str, Any]]:
    """JSON Lines records, by their line."""
    records = (json.loads(line) for line in text.splitlines() if line)
    return {record["line"]: record for record in records}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative name: content); no link is followed."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }
