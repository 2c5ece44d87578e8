"""End to end: fleet jobs that belong to the stack, shared by many clients.

The stack on the emulator (deployed once for the package), its local fleet,
and the installed command: several clients at once on one stack, a detached
job read from another "machine" (another HOME, no shared files), a client
killed mid-job, cancellation on the fleet, and a job's time limit.
"""

import gzip
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.conftest import (
    SchedulerProcess,
    WriteWorkload,
    run_cli,
    service_headers,
    taskfleet_command,
    wait_for,
)
from worker.contracts import JobItem, Output

pytestmark = pytest.mark.e2e

Deployed = tuple[dict[str, str], dict[str, str]]


def records_of(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def another_machine(environment: dict[str, str], home: Path) -> dict[str, str]:
    """The stack's credentials, and nothing else of this client: its own HOME."""
    home.mkdir()
    return {**environment, "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}


def start_run(path: str, environment: dict[str, str], output: Path, *extra: str) -> "Run":
    command = [*taskfleet_command(), "run", path, "--remote", "--stack", "Taskfleet", *extra]
    with output.open("wb") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, env=environment)
    return Run(process, output)


class Run:
    def __init__(self, process: subprocess.Popen[bytes], output: Path) -> None:
        self.process = process
        self.output = output

    def job_id(self) -> str:
        """The job id the run announced on stderr (read once it has)."""
        assert self.process.stderr is not None
        line = self.process.stderr.readline().decode()
        assert line.startswith("job "), line
        return line.split()[1]

    def finish(self, timeout: float = 300) -> tuple[int, list[dict[str, object]], str]:
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, records_of(self.output.read_text()), stderr.decode()


def test_many_clients_share_one_stack_each_reading_only_its_own_results(
    deployed: Deployed,
    workload: WriteWorkload,
    scheduler_service: Callable[..., SchedulerProcess],
    tmp_path: Path,
) -> None:
    _, environment = deployed
    paths = [workload(*(["sleep 50"] * 30), f"echo client-{n}", name=f"w{n}.txt") for n in range(3)]
    service = scheduler_service("--stack", "Taskfleet", env=environment)
    runs = [start_run(p, environment, tmp_path / f"out{n}.jsonl") for n, p in enumerate(paths)]
    jobs = [run.job_id() for run in runs]
    submitted = run_cli(
        "submit", workload(*(["sleep 50"] * 30), "echo service", name="ws.txt"), "--remote",
        "--scheduler", service.url, env=environment, timeout=300,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    service_records = records_of(submitted.stdout)
    assert Counter(r["line"] for r in service_records) == Counter(range(1, 32))
    for n, (run, job) in enumerate(zip(runs, jobs, strict=True)):
        code, records, stderr = run.finish()
        assert code == 0, stderr
        assert Counter(r["line"] for r in records) == Counter(range(1, 32))  # each once
        assert {r["job"] for r in records} == {job}  # its own job's, and no other's
        assert [r["stdout"] for r in records if r["line"] == 31] == [f"client-{n}\n"]
        assert "name no task" not in stderr
    # The service's fleet job lives in the stack too.
    service_job = service_records[0]["job"]
    status = run_cli("status", str(service_job), "--stack", "Taskfleet", env=environment)
    assert status.returncode == 0, status.stderr
    assert "31/31 tasks finished" in status.stdout


def test_a_service_killed_mid_job_and_started_again_reads_its_fleet_job_to_the_end(
    deployed: Deployed,
    workload: WriteWorkload,
    scheduler_service: Callable[..., SchedulerProcess],
    tmp_path: Path,
) -> None:
    # The stack's environment, with this test's state folder: the services' token.
    environment = {**deployed[1], "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]}
    journal = tmp_path / "service.sqlite3"
    first = scheduler_service("--stack", "Taskfleet", journal=journal, env=environment)
    path = workload(*(["sleep 400"] * 16))
    command = [*taskfleet_command(), "submit", path, "--remote", "--scheduler", first.url]
    client = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment
    )
    try:
        wait_for(lambda: succeeded(first.url) > 0, timeout=120)
        (job,) = [info["job"] for info in service_jobs(first.url)]
        first.kill()  # mid-job, its bundles out on the fleet
    finally:
        client.kill()
        client.wait()
    again = scheduler_service("--stack", "Taskfleet", journal=journal, env=environment)
    fetched = run_cli(
        "results", job, "--wait", "--scheduler", again.url, env=environment, timeout=300
    )
    assert fetched.returncode == 0, fetched.stderr
    records = records_of(fetched.stdout)
    assert Counter(r["line"] for r in records) == Counter(range(1, 17))  # every record once
    assert {r["status"] for r in records} == {"succeeded"}


def test_a_service_fleet_job_cancelled_then_retried_runs_its_tasks_again(
    deployed: Deployed,
    workload: WriteWorkload,
    scheduler_service: Callable[..., SchedulerProcess],
    tmp_path: Path,
) -> None:
    # The stack's environment, with this test's state folder: the service's token.
    environment = {**deployed[1], "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]}
    service = scheduler_service("--stack", "Taskfleet", env=environment)
    # Each task notes it started and runs long, until the test says "go": then
    # it answers at once.
    go = tmp_path / "go"
    markers = [tmp_path / f"ran-{n}" for n in range(2)]
    path = workload(
        *(f"test -e {go} && echo again || {{ touch {m}; /bin/sleep 60; }}" for m in markers)
    )
    command = [*taskfleet_command(), "submit", path, "--remote", "--scheduler", service.url]
    submitting = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
    )
    try:
        assert submitting.stderr is not None
        announced = submitting.stderr.readline().decode()
        assert announced.startswith("job "), announced
        job = announced.split()[1].rstrip(":")
        # One slot runs the job's bundle a task at a time: cancel as the first runs.
        wait_for(lambda: any(m.exists() for m in markers), timeout=120)
        cancelled = run_cli("cancel", job, "--scheduler", service.url, env=environment)
        assert cancelled.returncode == 0, cancelled.stderr
        # The fleet stops the running task within seconds; every task gets a record.
        wait_for(lambda: job_status(service.url, job)["finished"] == 2, timeout=60)
        assert job_status(service.url, job)["state"] == "cancelled"
    finally:
        submitting.kill()
        submitting.communicate()
    go.touch()
    retried = run_cli("retry", job, "--scheduler", service.url, env=environment, timeout=300)
    assert retried.returncode == 0, retried.stderr
    records = records_of(retried.stdout)
    assert sorted(int(str(r["line"])) for r in records) == [1, 2]
    assert {(r["status"], r["stdout"]) for r in records} == {("succeeded", "again\n")}
    assert all(str(r["worker"]).startswith("i-") for r in records)  # on the fleet again


def job_status(url: str, job: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/jobs/{job}", headers=service_headers(), timeout=10)
    answer.raise_for_status()
    status: dict[str, Any] = answer.json()
    return status


def service_jobs(url: str) -> list[dict[str, Any]]:
    """The jobs a scheduler service lists, as its API answers."""
    answer = httpx.get(f"{url}/jobs", headers=service_headers(), timeout=10)
    answer.raise_for_status()
    jobs: list[dict[str, Any]] = answer.json()["jobs"]
    return jobs


def succeeded(url: str) -> int:
    return sum(int(info["succeeded"]) for info in service_jobs(url))


def test_a_detached_job_is_read_from_another_machine_any_number_of_times(
    deployed: Deployed, workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    path = workload(*(["sleep 200"] * 12), "echo detached", "exit 5")
    queued = run_cli(
        "run", path, "--remote", "--stack", "Taskfleet", "--detach", env=environment, timeout=120
    )
    assert queued.returncode == 0, queued.stderr
    job = queued.stdout.strip()
    assert f"job {job} on stack Taskfleet" in queued.stderr

    elsewhere = another_machine(environment, tmp_path / "elsewhere")
    status = run_cli("status", job, "--stack", "Taskfleet", env=elsewhere)
    assert status.returncode == 0, status.stderr
    assert f"job {job}:" in status.stdout
    assert "/14 tasks finished" in status.stdout
    followed = run_cli(
        "results", job, "--stack", "Taskfleet", "--follow", env=elsewhere, timeout=300
    )
    assert followed.returncode == 0, followed.stderr
    records = records_of(followed.stdout)
    assert Counter(r["line"] for r in records) == Counter(range(1, 15))  # every record once
    by_line = {r["line"]: r for r in records}
    assert by_line[13]["stdout"] == "detached\n"
    assert (by_line[14]["status"], by_line[14]["exit_code"]) == ("failed", 5)
    again = run_cli("results", job, "--stack", "Taskfleet", env=elsewhere)
    assert sorted(again.stdout.splitlines()) == sorted(followed.stdout.splitlines())
    waited = run_cli("wait", job, "--stack", "Taskfleet", env=elsewhere)
    assert waited.returncode == 1  # 'exit 5' failed: as `run` would exit
    assert "done, 14/14 tasks finished" in waited.stdout
    listed = run_cli("jobs", "--stack", "Taskfleet", env=elsewhere)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(job)]
    assert "done" in row
    assert "14/14" in row


def test_a_jobs_workers_keep_its_records_in_the_stack_as_they_send_them(
    deployed: Deployed, workload: WriteWorkload, tmp_path: Path
) -> None:
    outputs, environment = deployed
    path = workload(*(f"echo kept {n}" for n in range(1, 13)))
    queued = run_cli(
        "run", path, "--remote", "--stack", "Taskfleet", "--detach", env=environment, timeout=120
    )
    assert queued.returncode == 0, queued.stderr
    job = queued.stdout.strip()
    aws = {
        "endpoint_url": environment["AWS_ENDPOINT_URL"],
        "region_name": environment["AWS_DEFAULT_REGION"],
        "aws_access_key_id": environment["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": environment["AWS_SECRET_ACCESS_KEY"],
    }
    dynamodb: Any = boto3.client("dynamodb", **aws)
    table = outputs[Output.JOB_TABLE_NAME]

    def kept() -> dict[str, int]:
        """Records kept in the stack, by partition."""
        found: Counter[str] = Counter()
        for item in dynamodb.scan(TableName=table)["Items"]:
            if item[JobItem.PARTITION]["S"].startswith(job) and "records" in item:
                found[item[JobItem.PARTITION]["S"]] += len(
                    gzip.decompress(item["records"]["B"]).splitlines()
                )
        return found

    wait_for(lambda: sum(kept().values()) >= 12, timeout=120)  # no reader has read them
    # In the workers' shard, not the job's own partition (where a reader may have kept
    # a usage report that came alone, with no record).
    assert {partition for partition, count in kept().items() if count} == {f"{job}#00"}
    # Whatever waits on the job's queue is lost: the records are kept all the same.
    sqs: Any = boto3.client("sqs", **aws)
    queue = sqs.get_queue_url(QueueName=outputs[Output.JOB_QUEUE_PREFIX] + job)["QueueUrl"]
    sqs.purge_queue(QueueUrl=queue)
    elsewhere = another_machine(environment, tmp_path / "elsewhere")
    fetched = run_cli("results", job, "--stack", "Taskfleet", "--follow", env=elsewhere)
    assert fetched.returncode == 0, fetched.stderr
    records = records_of(fetched.stdout)
    assert sorted(str(r["stdout"]) for r in records) == sorted(f"kept {n}\n" for n in range(1, 13))
    listed = run_cli("jobs", "--stack", "Taskfleet", env=elsewhere)
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(job)]
    assert "done" in row
    assert "12/12" in row  # the count set by the reader that ended it, from the store


def test_a_killed_client_leaves_its_job_running_and_its_records_are_fetched_later(
    deployed: Deployed, workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    path = workload(*(["sleep 400"] * 16))
    run = start_run(path, environment, tmp_path / "killed.jsonl")
    job = run.job_id()
    wait_for(lambda: run.output.stat().st_size > 0, timeout=120)  # some results are in
    run.process.send_signal(signal.SIGKILL)
    run.process.communicate()
    followed = run_cli("results", job, "--stack", "Taskfleet", "--follow", env=environment)
    assert followed.returncode == 0, followed.stderr
    records = records_of(followed.stdout)
    assert Counter(r["line"] for r in records) == Counter(range(1, 17))  # every record once
    assert {r["status"] for r in records} == {"succeeded"}


def test_cancel_stops_a_job_on_the_fleet(
    deployed: Deployed, workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    ledger = tmp_path / "ran.txt"
    # Each task notes that it started, then runs long.
    path = workload(*([f"echo $$ >> {ledger}; /bin/sleep 60"] * 8))
    queued = run_cli("run", path, "--remote", "--stack", "Taskfleet", "--detach", env=environment)
    assert queued.returncode == 0, queued.stderr
    job = queued.stdout.strip()
    wait_for(lambda: ledger.exists() and len(ledger.read_text().split()) >= 2, timeout=120)
    cancelled = run_cli("cancel", job, "--stack", "Taskfleet", env=environment)
    assert cancelled.returncode == 0, cancelled.stderr
    started_by_cancel = len(ledger.read_text().split())
    began = time.monotonic()
    followed = run_cli(
        "results", job, "--stack", "Taskfleet", "--follow", env=environment, timeout=120
    )
    took = time.monotonic() - began
    records = records_of(followed.stdout)
    assert Counter(r["line"] for r in records) == Counter(range(1, 9))
    assert {r["status"] for r in records} == {"cancelled"}
    assert took < 45, took  # running tasks stopped within seconds, not after their 60 s
    assert len(ledger.read_text().split()) == started_by_cancel  # nothing started after
    again = run_cli("cancel", job, "--stack", "Taskfleet", env=environment)
    assert again.returncode == 1
    assert "ended already" in again.stderr


def test_ctrl_c_on_an_attached_run_cancels_its_job(
    deployed: Deployed, workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    path = workload(*(["/bin/sleep 60"] * 4))
    run = start_run(path, environment, tmp_path / "interrupted.jsonl")
    job = run.job_id()
    time.sleep(3)
    run.process.send_signal(signal.SIGINT)
    code, _, stderr = run.finish(timeout=60)
    assert code == 130, stderr
    status = run_cli("status", job, "--stack", "Taskfleet", env=environment)
    assert f"job {job}: cancelled" in status.stdout, status.stdout


def test_a_jobs_time_limit_applies_on_the_fleet(
    deployed: Deployed, workload: WriteWorkload
) -> None:
    _, environment = deployed
    path = workload("sleep 5000", "/bin/sleep 5", "sh -c 'sleep 5'", "sleep 10")
    done = run_cli(
        "run", path, "--remote", "--stack", "Taskfleet", "--timeout", "1", env=environment,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    status = {r["line"]: r["status"] for r in records_of(done.stdout)}
    assert status == {1: "timed_out", 2: "timed_out", 3: "timed_out", 4: "succeeded"}


def test_options_without_meaning_on_the_fleet_are_refused(workload: WriteWorkload) -> None:
    path = workload("sleep 1")
    environment = {**os.environ, "TASKFLEET_STACK": "Taskfleet"}
    for extra, named in (
        (["--workers", "1"], "--workers"),
        (["--detach", "--retries", "1"], "--retries"),
        (["--detach", "-o", "x.jsonl"], "--detach"),
        (["--detach", "--price-per-instance-hour", "0.1"], "--price-per-instance-hour"),
    ):
        done = run_cli("run", path, "--remote", *extra, env=environment)
        assert done.returncode == 2, (extra, done.stderr)
        assert named in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr  # one line
    local = run_cli("run", path, "--detach")
    assert local.returncode == 2
    assert "--detach needs --remote" in local.stderr
