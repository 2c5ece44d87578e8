"""End to end on the deployed stack: `run --remote`, the service's fleet, the local fleet.

A real moto_server, the real CDK CLI deploying the real stack (once for this
module), the local fleet running a `taskfleet worker` process per instance
the group brings into service, and the installed command.
"""

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from scheduler.fleet.job_store import tail_of
from scheduler.jobs.journal import Journal
from scripts import local_aws
from tests.conftest import (
    SchedulerProcess,
    WriteWorkload,
    children_of,
    flaky,
    run_cli,
    service_token,
    taskfleet_command,
    wait_for,
)
from tests.scheduler.conftest import console_errors, sign_in, visible
from tests.scheduler.fleet.conftest import MAX_WORKERS
from worker.contracts import JobItem, Output

pytestmark = pytest.mark.e2e


def test_the_whole_cloud_path_scales_from_zero_and_back(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload, tmp_path: Path
) -> None:
    outputs, environment = deployed
    path = workload(*(["sleep 0"] * 30), "echo remote", "exit 4", "sleep 200", flaky(tmp_path))
    summary_path = tmp_path / "summary.json"
    done = run_cli(
        "run", path, "--remote", "--stack", "Taskfleet", "--retries", "1",
        "--summary", str(summary_path), env=environment, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # 'exit 4' failed, twice
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 35))  # each exactly once
    by_line = {r["line"]: r for r in records}
    assert by_line[31]["stdout"] == "remote\n"
    assert (by_line[32]["exit_code"], by_line[32]["earlier_exit_codes"]) == (4, [4])
    assert by_line[33]["duration_ms"] >= 200
    assert (by_line[34]["status"], by_line[34]["attempt"]) == ("succeeded", 2)
    assert all(r["worker"].startswith("i-") for r in records)  # run by the fleet's workers
    # What it used: every task's time on its instance (one slot each), the requests.
    summary = json.loads(summary_path.read_text())
    last_attempts = sum(r["duration_ms"] for r in records) / 1000
    assert last_attempts <= summary["instance_seconds"] <= last_attempts + 1.0  # + first ones
    assert summary["aws_requests"] > 0
    assert summary["cost_usd"] > 0
    assert summary["priced_at"]["instance_basis"].startswith("t3.small spot estimate")
    assert "AWS requests" in done.stderr  # the summary says so too

    # Idle, every worker terminated its own instance: the group is back at zero.
    wait_until_empty(environment, outputs)


def test_the_scheduler_service_runs_remote_and_hybrid_jobs_on_the_fleet(
    deployed: tuple[dict[str, str], dict[str, str]],
    workload: WriteWorkload,
    scheduler_service: Callable[..., SchedulerProcess],
    tmp_path: Path,
) -> None:
    _, environment = deployed
    service = scheduler_service("--stack", "Taskfleet", env=environment)
    health = run_cli("status", "--scheduler", service.url, env=environment)
    assert health.returncode == 0, health.stderr

    remote = workload(*(["sleep 0"] * 20), "echo via-fleet", "exit 3", flaky(tmp_path))
    done = run_cli(
        "submit", remote, "--remote", "--retries", "1", "--scheduler", service.url,
        env=environment, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # 'exit 3' failed
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 24))  # each exactly once
    by_line = {r["line"]: r for r in records}
    assert by_line[21]["stdout"] == "via-fleet\n"
    assert (by_line[22]["attempt"], by_line[23]["attempt"]) == (2, 2)  # both ran again
    assert (by_line[23]["status"], by_line[23]["stdout"]) == ("succeeded", "second\n")
    assert all(r["worker"].startswith("i-") for r in records)

    # Hybrid: the fleet holds one bundle per slot, local workers take the rest.
    hybrid = workload(*(["sleep 100"] * 60))
    done = run_cli(
        "submit", hybrid, "--hybrid", "--scheduler", service.url, env=environment, timeout=300
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 61))
    where = Counter(r["worker"].split("-")[0] for r in records)
    assert set(where) == {"i", "local"}, where  # both ran some

    # The journal holds the fleet's results like any others.
    job = done.stderr.split("job ", 1)[1].split(":", 1)[0]
    again = run_cli("results", job, "--scheduler", service.url, env=environment)
    assert sorted(again.stdout.splitlines()) == sorted(done.stdout.splitlines())


def test_a_poison_bundle_ends_in_the_dead_letter_queue_and_is_reported_failed(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload
) -> None:
    _, environment = deployed
    # Bundles of about two seconds of work: lines 1-7, 8-14, 15-21, and the task
    # on line 22 alone, which kills the worker running it (the shell's parent)
    # every time it is delivered.
    path = workload(*(["sleep 300"] * 21), "kill -9 $PPID")
    done = run_cli("run", path, "--remote", "--stack", "Taskfleet", env=environment, timeout=300)
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 23))  # each exactly once
    by_status = {r["line"]: r["status"] for r in records}
    assert {line for line, status in by_status.items() if status == "succeeded"} == set(
        range(1, 22)
    )  # the other bundles are unaffected
    (poisoned,) = [r for r in records if r["line"] == 22]
    assert poisoned["status"] == "failed"
    assert "dead-letter queue" in poisoned["error"]


def test_a_sorted_workload_spreads_its_long_tasks_over_the_fleet(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload
) -> None:
    _, environment = deployed
    # Short tasks first, long ones last, as files often are: packed one bundle per
    # slot by count, every long task would land in the last bundle, on one instance.
    path = workload(*(["sleep 0"] * 200), *(["sleep 400"] * 24))
    done = run_cli("run", path, "--remote", "--stack", "Taskfleet", env=environment, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 225))
    long_tasks = [r for r in records if r["line"] > 200]
    # On every instance at once, not one: at least MAX_WORKERS of them (an
    # instance idle between bundles may be ended and another started meanwhile).
    assert len({r["worker"] for r in long_tasks}) >= MAX_WORKERS


def test_a_spot_notice_to_a_fleet_instance_moves_its_work_to_a_replacement(
    deployed: tuple[dict[str, str], dict[str, str]], state: Path, workload: WriteWorkload
) -> None:
    outputs, environment = deployed
    path = workload(*(["sleep 1500"] * 12))
    output = state / "spot-run.jsonl"
    command = [*taskfleet_command(), "run", path, "--remote", "--stack", "Taskfleet"]
    with output.open("wb") as stdout:
        running = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, env=environment)
    try:
        wait_for(lambda: output.stat().st_size > 0, timeout=120)  # the fleet is at work
        (noticed, *_) = sorted(in_service(environment, outputs))
        local_aws.interrupt(state, noticed, lifecycle=False)
        _, stderr = running.communicate(timeout=300)
    finally:
        running.kill()
    assert running.returncode == 0, stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 13))  # each exactly once
    log = (state / f"{noticed}.log").read_text()
    assert "stopping (spot interruption notice)" in log
    # The spot instance is reclaimed once its worker has left (on the local fleet's
    # next look, which may come after the run's last result); the group puts
    # another in its place.
    said = f"{noticed}: its worker left after a spot notice; instance ended and replaced"
    wait_for(lambda: said in (state / "fleet.log").read_text(), timeout=30)
    assert noticed not in in_service(environment, outputs)


def test_a_jobs_cost_is_what_the_emulator_and_the_fleets_clock_counted(
    deployed: tuple[dict[str, str], dict[str, str]],
    state: Path,
    workload: WriteWorkload,
    scheduler_service: Callable[..., SchedulerProcess],
    tmp_path: Path,
) -> None:
    outputs, environment = deployed
    endpoint = environment["AWS_ENDPOINT_URL"]
    # No worker of an earlier test about, and nothing it reported left unread: a
    # worker reports what it used for no job as it leaves, before this window.
    wait_until_empty(environment, outputs)
    fleet = local_aws.emulator_of(state)["fleet"]
    wait_for(lambda: not children_of(fleet), timeout=60)
    sqs: Any = boto3.client("sqs", **client_settings(environment))
    sqs.purge_queue(QueueUrl=outputs["ResponseQueueUrl"])
    recorder = f"{endpoint}/moto-api/recorder"
    httpx.post(f"{recorder}/reset-recording", timeout=10).raise_for_status()
    httpx.post(f"{recorder}/start-recording", timeout=10).raise_for_status()
    try:
        service = scheduler_service("--stack", "Taskfleet", env=environment)
        path = workload(*(["sleep 300"] * 8), "echo costly")
        summary_path = tmp_path / "summary.json"
        done = run_cli(
            "submit", path, "--remote", "--scheduler", service.url,
            "--summary", str(summary_path), env=environment, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines()]
        job = records[0]["job"]
        # Idle, the workers leave, each charging what it used for no job (its idle
        # tail, its polls that found nothing) to the job in the stack; then the
        # service stops, storing its own last calls.
        wait_until_empty(environment, outputs)
        wait_for(lambda: not children_of(fleet), timeout=60)
        assert service.process is not None
        service.process.terminate()
        assert service.process.wait(timeout=60) == 0
    finally:
        httpx.post(f"{recorder}/stop-recording", timeout=10).raise_for_status()
    recorded = Counter(
        target.split(".")[0]
        for line in (state / "requests.jsonl").read_text().splitlines()
        if (target := json.loads(line)["headers"].get("X-Amz-Target", ""))
    )
    journal = Journal(service.journal)
    try:
        used, overhead = journal.job(job).usage, journal.overhead()
    finally:
        journal.close()
    dynamodb: Any = boto3.client("dynamodb", **client_settings(environment))
    key = {JobItem.PARTITION: {"S": job}, JobItem.SORT: {"S": JobItem.META}}
    tail = tail_of(dynamodb.get_item(TableName=outputs[Output.JOB_TABLE_NAME], Key=key)["Item"])
    # Every SQS and DynamoDB request that reached the emulator was counted once:
    # for the job in its reports, in the tail its workers charged to it as they
    # left, or as the service's overhead (payloads here are under 64 KiB and
    # items under 1 KiB: one billed unit a request).
    counted = used + tail + overhead
    assert counted.sqs_requests == recorded["AmazonSQS"]
    assert counted.dynamodb_writes + counted.dynamodb_reads == recorded["DynamoDB_20120810"]
    assert used.dynamodb_writes > 0  # the claims: all the job's
    # Among them, one write per worker as it left: its tail, with that write in it.
    workers = {r["worker"] for r in records}
    assert tail.dynamodb_writes == len(workers)
    assert overhead.dynamodb_writes + overhead.dynamodb_reads == 0
    # Instance time: each task's, on instances of one slot, within what the local
    # fleet's clock says its workers ran.
    summary = json.loads(summary_path.read_text())
    # What follows the last usage report may come just after the client read its
    # summary: that report's message deleted, and the job's end in the stack (its
    # state written, its queue looked up and deleted).
    assert used.aws_requests - 4 <= summary["aws_requests"] <= used.aws_requests
    assert summary["instance_seconds"] == pytest.approx(
        sum(r["duration_ms"] for r in records) / 1000, abs=0.01
    )
    assert summary["instance_seconds"] >= 8 * 0.3
    ran = worker_seconds(state / "fleet.log", workers)
    assert summary["instance_seconds"] <= ran
    assert summary["cost_usd"] > 0
    # In the stack, the job is charged what its instances lived: its tasks' time
    # and the time no task used (the idle tails), as the fleet's clock counted
    # (which also counts each worker process's start-up).
    status = run_cli("status", job, "--stack", "Taskfleet", env=environment)
    charged = float(status.stdout.split("used ", 1)[1].split(" instance-seconds", 1)[0])
    assert ran - 3.0 * len(workers) <= charged <= ran, status.stdout


def test_the_dashboard_shows_the_fleet_and_what_a_job_costs(
    deployed: tuple[dict[str, str], dict[str, str]],
    workload: WriteWorkload,
    scheduler_service: Callable[..., SchedulerProcess],
    browser: Any,
) -> None:
    # This test's state folder: the scheduler's token is read from it.
    environment = {**deployed[1], "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]}
    service = scheduler_service("--stack", "Taskfleet", env=environment)
    sign_in(browser, service.url, service_token())
    wait_for(lambda: visible(browser, "fleet"), timeout=30)  # the panel, before any job
    wait_for(lambda: "3 looks" in browser.find_element("id", "fleet-chart-scale").text)
    path = workload(*(["sleep 500"] * 16))
    submitted = subprocess.Popen(
        [*taskfleet_command(), "submit", path, "--remote", "--scheduler", service.url],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def counts() -> dict[str, int]:
            # Read at once, by the page: the row is drawn anew every second.
            names, cells = browser.execute_script(
                "const texts = (css) => [...document.querySelectorAll(css)]"
                ".map((e) => e.textContent);"
                "return [texts('#fleet th'), texts('#fleet-counts td')];"
            )
            if not cells:
                return {}  # no look at the fleet yet
            return {name: int(cell) for name, cell in zip(names, cells, strict=True)}

        # The group grows from zero as the job's bundles wait, and shrinks back.
        wait_for(lambda: counts().get("in service", 0) >= 1, timeout=120)
        _, stderr = submitted.communicate(timeout=300)
    finally:
        submitted.kill()
    assert submitted.returncode == 0, stderr
    wait_for(lambda: counts().get("desired") == counts().get("in service") == 0, timeout=120)
    assert "AWS requests" in browser.find_element("id", "fleet-overhead").text
    folder = os.environ.get("TASKFLEET_SCREENSHOTS")
    if folder:
        browser.save_screenshot(str(Path(folder) / "dashboard-fleet.png"))
    job = stderr.decode().split("job ", 1)[1].split(":", 1)[0]
    # The job's page says what it used and cost, as `status` does.
    browser.get(f"{service.url}/#job={job}")
    wait_for(lambda: "AWS requests" in browser.find_element("id", "job-cost").text, timeout=30)
    shown = browser.find_element("id", "job-cost").text
    assert "instance-seconds" in shown
    assert "spot estimate" in shown
    status = run_cli("status", job, "--scheduler", service.url, env=environment)
    assert "AWS requests" in status.stdout
    assert "cost $" in status.stdout
    assert console_errors(browser) == []


def worker_seconds(fleet_log: Path, instances: set[str]) -> float:
    """Seconds the local fleet says the workers of these instances ran."""
    total = 0.0
    for line in fleet_log.read_text().splitlines():
        instance, _, said = line.partition(": worker ran ")
        if instance in instances and said:
            total += float(said.split()[0])
    return total


def wait_until_empty(environment: dict[str, str], outputs: dict[str, str]) -> None:
    """Until the group has no instance (and wants none)."""
    deadline = time.monotonic() + 120
    while (found := group(environment, outputs))["DesiredCapacity"] or found["Instances"]:
        assert time.monotonic() < deadline, found
        time.sleep(1)


def client_settings(environment: dict[str, str]) -> dict[str, str]:
    """What a boto3 client here needs to reach the stack's emulator."""
    return {
        "endpoint_url": environment["AWS_ENDPOINT_URL"],
        "region_name": local_aws.REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def group(environment: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    """The stack's Auto Scaling group, as the emulator describes it."""
    autoscaling: Any = boto3.client("autoscaling", **client_settings(environment))
    (found,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    return dict(found)


def in_service(environment: dict[str, str], outputs: dict[str, str]) -> set[str]:
    instances = group(environment, outputs)["Instances"]
    return {i["InstanceId"] for i in instances if i["LifecycleState"] == "InService"}


def test_a_scheduler_without_a_stack_refuses_remote_jobs(
    workload: WriteWorkload, scheduler_service: Callable[..., SchedulerProcess]
) -> None:
    service = scheduler_service()
    done = run_cli("submit", workload("sleep 1"), "--remote", "--scheduler", service.url)
    assert done.returncode == 2
    assert "no fleet: start it with --stack NAME" in done.stderr


def test_remote_without_a_stack_is_a_usage_error(workload: WriteWorkload) -> None:
    done = run_cli(
        "run", workload("sleep 1"), "--remote", env={**os.environ, "TASKFLEET_STACK": ""}
    )
    assert done.returncode == 2
    assert "--remote needs --stack" in done.stderr


def test_bench_measures_the_fleet_beside_the_rest(
    deployed: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    _, environment = deployed
    folder = tmp_path / "figures"
    done = run_cli(
        "bench", "--quick", "--stack", "Taskfleet", "-o", str(folder), env=environment, timeout=600
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((folder / "results.json").read_text())["rows"]
    remote = [r for r in rows if r["system"] == "taskfleet remote"]
    assert {(r["kind"], r["workers"]) for r in remote} == {
        ("throughput", 1),
        ("throughput", 2),
        ("efficiency", 1),
        ("efficiency", 2),
        ("uneven", 2),
        ("commands", 2),
    }
    assert {r["line"] for r in remote if r["kind"] == "uneven"} == {"sorted", "heavy-tailed"}
    assert all(r["tasks_per_second"] > 0 for r in remote)
