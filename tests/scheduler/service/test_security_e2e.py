"""Attacks on a real scheduler service process, made for real over loopback:
a cross-site page, a rebinding name, slow connections, an upload cancelled
midway, forged and out-of-range result messages on the emulator's response
queue, amplification inputs, file modes, TLS, and markup in file names."""

import contextlib
import datetime
import ipaddress
import json
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import msgspec
import pytest

from tests.conftest import (
    Resources,
    SchedulerProcess,
    StartScheduler,
    WriteWorkload,
    create_job_table,
    run_cli,
    service_headers,
    service_token,
    start_worker,
    wait_for,
)
from worker.bundle import ResultBatch
from worker.result import Result, Status

pytestmark = pytest.mark.e2e


def task_lines(*tasks: str, file: str = "w.txt") -> bytes:
    return "".join(
        json.dumps({"file": file, "line": n, "task": t}) + "\n" for n, t in enumerate(tasks, 1)
    ).encode()


def jobs_of(service: SchedulerProcess) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = httpx.get(
        service.url + "/jobs", headers=service_headers()
    ).json()["jobs"]
    return jobs


def test_a_cross_site_page_cannot_submit(scheduler_service: StartScheduler, tmp_path: Path) -> None:
    service = scheduler_service()
    marker = tmp_path / "pwned"
    body = task_lines(f"touch {marker}")
    token = {"Authorization": f"Bearer {service_token()}"}
    attempts = {
        # What fetch() from any page sends with mode: "no-cors": no preflight.
        "simple cross-site POST": (
            {"Content-Type": "text/plain", "Origin": "http://evil.example"},
            403,
        ),
        "cross-site POST with the token": (
            {**service_headers(), "Origin": "http://evil.example"},
            403,
        ),
        "cross-site by Sec-Fetch-Site": (
            {**service_headers(), "Sec-Fetch-Site": "cross-site"},
            403,
        ),
        "an opaque origin": ({**service_headers(), "Origin": "null"}, 403),
        "a form's content type": ({**token, "Content-Type": "text/plain"}, 415),
        "no token": ({"Content-Type": "application/x-ndjson"}, 401),
    }
    for name, (headers, status) in attempts.items():
        answer = httpx.post(service.url + "/jobs", content=body, headers=headers)
        assert answer.status_code == status, (name, answer.text)
    assert jobs_of(service) == []  # nothing was stored, so nothing ran
    assert not marker.exists()
    # The same request from the service's own origin, with the token, is served.
    own = {**service_headers(), "Origin": service.url, "Sec-Fetch-Site": "same-origin"}
    job = httpx.post(service.url + "/jobs", content=task_lines("echo ok"), headers=own).json()
    done = run_cli("results", job["job"], "--wait", "--scheduler", service.url)
    assert json.loads(done.stdout)["stdout"] == "ok\n"


def test_a_rebinding_name_is_refused(scheduler_service: StartScheduler) -> None:
    service = scheduler_service()
    port = service.url.rsplit(":", 1)[1]
    for host in (f"rebind.evil.example:{port}", "127.0.0.1:1", "127.0.0.1"):
        for route in ("/health", "/jobs"):
            answer = httpx.get(service.url + route, headers={**service_headers(), "Host": host})
            assert answer.status_code == 421, (host, route)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        answer = httpx.get(service.url + "/jobs", headers={**service_headers(), "Host": host})
        assert answer.status_code == 200


def test_slow_connections_do_not_shut_clients_out(
    scheduler_service: StartScheduler, workload: WriteWorkload
) -> None:
    service = scheduler_service()
    port = int(service.url.rsplit(":", 1)[1])
    slow: list[socket.socket] = []
    try:
        for n in range(300):
            sock = socket.create_connection(("127.0.0.1", port))
            if n % 2:  # half send part of their headers, half nothing at all
                sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-a: ".encode())
            slow.append(sock)
        worst = 0.0
        deadline = time.monotonic() + 12  # past the header timeout (10 s)
        while time.monotonic() < deadline:
            began = time.monotonic()
            health = httpx.get(service.url + "/health", timeout=5)
            assert health.status_code == 200
            worst = max(worst, time.monotonic() - began)
            time.sleep(0.5)
        assert worst < 1.0
        done = run_cli("submit", workload("echo through"), "--scheduler", service.url)
        assert done.returncode == 0, done.stderr
        # The server closed every one of them: the header timeout.
        for sock in slow:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
    finally:
        for sock in slow:
            sock.close()


def test_cancelling_a_job_still_uploading(
    scheduler_service: StartScheduler, workload: WriteWorkload
) -> None:
    service = scheduler_service()
    first_sent = threading.Event()
    go_on = threading.Event()

    def body() -> Iterator[bytes]:
        yield task_lines("echo one")
        first_sent.set()
        go_on.wait(30)
        yield json.dumps({"file": "w.txt", "line": 2, "task": "echo two"}).encode() + b"\n"

    answers: list[httpx.Response] = []
    upload = threading.Thread(
        target=lambda: answers.append(
            httpx.post(service.url + "/jobs", content=body(), headers=service_headers())
        )
    )
    upload.start()
    try:
        assert first_sent.wait(30)

        def uploading_job() -> str | None:
            with sqlite3.connect(service.journal) as db:
                row = db.execute("SELECT id FROM jobs WHERE state = 'uploading'").fetchone()
            return None if row is None else str(row[0])

        wait_for(lambda: uploading_job() is not None)
        job = uploading_job()
        cancel = httpx.post(f"{service.url}/jobs/{job}/cancel", headers=service_headers())
        assert cancel.status_code == 409
        assert "still uploading" in cancel.json()["error"]
    finally:
        go_on.set()
        upload.join(30)
    assert answers[0].status_code == 201
    assert httpx.get(service.url + "/health").json()["status"] == "ok"
    done = run_cli("submit", workload("echo after"), "--scheduler", service.url)
    assert done.returncode == 0, done.stderr


def test_limits_on_file_names_and_files(scheduler_service: StartScheduler) -> None:
    service = scheduler_service()
    url = service.url + "/jobs"
    too_many = b"".join(task_lines("sleep 0", file=f"f{n}") for n in range(1001))
    answer = httpx.post(url, content=too_many, headers=service_headers())
    assert answer.status_code == 413
    assert "1000 files" in answer.json()["error"]
    long_name = task_lines("sleep 0", file="n" * 1025)
    answer = httpx.post(url, content=long_name, headers=service_headers())
    assert answer.status_code == 400
    assert "file name" in answer.json()["error"]
    for name in ("\x1b[31mred", "a\nb", "bell\x07", "\x9b31m"):
        answer = httpx.post(
            url, content=task_lines("sleep 0", file=name), headers=service_headers()
        )
        assert answer.status_code == 400, name
    assert jobs_of(service) == []
    # The most a job may have: status and listings carry a few names and a count.
    most = b"".join(task_lines("sleep 0", file=f"{n:04d}" + "x" * 1020) for n in range(1000))
    job = httpx.post(url, content=most, headers=service_headers()).json()["job"]
    info = httpx.get(f"{service.url}/jobs/{job}", headers=service_headers()).json()
    assert info["file_count"] == 1000
    assert len(info["files"]) == 10
    for _ in range(50):
        listed = httpx.get(url, headers=service_headers())
        assert len(listed.content) < 64 * 1024


def test_files_are_private_and_markup_is_shown_as_text(
    scheduler_service: StartScheduler, tmp_path: Path, state_home: Path
) -> None:
    service = scheduler_service()
    name = tmp_path / "[bold red]x[link=evil.example]y.txt"
    name.write_text("echo hi\n")
    done = run_cli("submit", str(name), "--scheduler", service.url)
    assert done.returncode == 0, done.stderr
    shown = run_cli("status", "--scheduler", service.url, env={**os.environ, "COLUMNS": "400"})
    assert "[bold red]x[link=evil.example]y.txt" in shown.stdout
    folder = state_home / "taskfleet"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "token").stat().st_mode) == 0o600
    for suffix in ("", "-wal", "-shm"):
        journal = service.journal.with_name(service.journal.name + suffix)
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600, journal


def test_token_file_and_tls(
    scheduler_service: StartScheduler, workload: WriteWorkload, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    token_file = tmp_path / "service-token"
    token_file.write_text("token-kept-in-a-file-0001\n")
    token_file.chmod(0o600)
    service = scheduler_service(
        "--token-file", str(token_file), "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert service.url.startswith("https://")
    path = workload("echo secure")
    common = ["--scheduler", service.url, "--token-file", str(token_file)]
    done = run_cli("submit", path, *common, "--ca-cert", str(cert))
    assert done.returncode == 0, done.stderr
    assert "secure" in done.stdout
    untrusted = run_cli("submit", path, *common)
    assert untrusted.returncode == 2
    assert "certificate" in untrusted.stderr.lower()
    # The token never shows in the command line of the scheduler process.
    assert service.process is not None
    command_line = Path(f"/proc/{service.process.pid}/cmdline").read_bytes()
    assert b"token-kept-in-a-file" not in command_line


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# -- forged results on the fleet's response queue ------------------------------------


BARE_JOB_PREFIX = "Bare_job_"


@pytest.fixture
def bare_stack(resources: Resources) -> str:
    """A stack on the emulator whose outputs name the test's queues and a job
    table (no group)."""
    create_job_table(boto3.client("dynamodb"), "jobs")
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "RequestQueueUrl": {"Value": resources.requests},
            "ResponseQueueUrl": {"Value": resources.responses},
            "DeadLetterQueueUrl": {"Value": resources.dead_letters},
            "MaxWorkers": {"Value": "1"},
            "JobTableName": {"Value": "jobs"},
            "JobQueuePrefix": {"Value": BARE_JOB_PREFIX},
            "JobRetentionDays": {"Value": "1"},
        },
    }
    boto3.client("cloudformation").create_stack(StackName="Bare", TemplateBody=json.dumps(template))
    return "Bare"


def forged(job: str, line: int, task: str, stdout: str = "forged") -> Result:
    return Result(
        f"{job}:1:{line}", job, "w.txt", line, task, Status.SUCCEEDED, 0, "i-evil",
        time.time(), time.time(), 1.0, None, stdout, "", False,
    )  # fmt: skip


def test_forged_and_malformed_results_change_nothing(
    scheduler_service: StartScheduler, bare_stack: str, resources: Resources, tmp_path: Path
) -> None:
    service = scheduler_service("--stack", bare_stack)

    def post(body: bytes, placement: str) -> str:
        url = f"{service.url}/jobs?placement={placement}"
        return str(httpx.post(url, content=body, headers=service_headers()).json()["job"])

    local = post(task_lines("sleep 100", "sleep 100", *(["sleep 60000"] * 4)), "local")
    remote = post(task_lines("echo real-one", "echo real-two"), "remote")
    encoder = json.JSONEncoder()
    messages = [
        "{not json",
        # A line number beyond what the journal can store.
        encoder.encode(
            {
                "bundle_id": "b1",
                "worker": "i-evil",
                "results": [
                    {**json.loads(forged_json(remote, 1, "echo real-one")), "line": 2**64 - 1}
                ],
            }
        ),
        # A pending task of a local job: never sent to the fleet.
        forged_batch(forged(local, 6, "sleep 60000")),
        # A task of the remote job, with text other than what was sent.
        forged_batch(forged(remote, 1, "rm -rf /")),
        # A bundle id no bundle may have.
        forged_batch(forged(remote, 2, "echo real-two"), bundle_id="../../x" * 10),
    ]
    # A worker with the stack's credentials may send to the response queue and to
    # any job's queue: the forgeries go to both.
    wait_for(lambda: job_queue_of(resources, remote) is not None, timeout=60)
    job_queue = str(job_queue_of(resources, remote))
    for queue in (resources.responses, job_queue):
        for body in messages:
            resources.sqs.send_message(QueueUrl=queue, MessageBody=body)
    # The scheduler reads them all and deletes them: nothing stays to come back.
    wait_for(lambda: depth(resources, resources.responses) + depth(resources, job_queue) == 0, 60)
    assert httpx.get(service.url + "/health").json()["status"] == "ok"
    # A real worker runs the remote job: its real output is what is stored.
    job_settings = ("--job-table", "jobs", "--job-queue-prefix", BARE_JOB_PREFIX)
    worker = start_worker(resources, "i-real", tmp_path, "--idle-timeout", "3", *job_settings)
    try:
        done = run_cli("results", remote, "--wait", "--scheduler", service.url, timeout=120)
    finally:
        worker.wait(timeout=60)
    records = {r["line"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert {records[1]["stdout"], records[2]["stdout"]} == {"real-one\n", "real-two\n"}
    assert {records[1]["worker"], records[2]["worker"]} == {"i-real"}
    local_records = run_cli("results", local, "--scheduler", service.url)
    assert "forged" not in local_records.stdout
    cancel = httpx.post(f"{service.url}/jobs/{local}/cancel", headers=service_headers())
    assert cancel.status_code == 200
    assert "dropped" in service.log.read_text()  # each bad message was logged


def forged_json(job: str, line: int, task: str) -> str:
    return msgspec.json.encode(forged(job, line, task)).decode()


def forged_batch(result: Result, bundle_id: str = "b1") -> str:
    return msgspec.json.encode(ResultBatch(bundle_id, "i-evil", [result])).decode()


def job_queue_of(resources: Resources, job: str) -> str | None:
    try:
        return str(resources.sqs.get_queue_url(QueueName=BARE_JOB_PREFIX + job)["QueueUrl"])
    except resources.sqs.exceptions.QueueDoesNotExist:
        return None


def depth(resources: Resources, queue: str) -> int:
    attributes = resources.sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())
