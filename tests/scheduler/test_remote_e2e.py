"""End to end on the deployed stack: `taskfleet run --remote` and a `taskfleet worker`.

A real moto_server, the real CDK CLI deploying the real stack, a worker
process fed through the stack's queues, and the installed command. Emulated
instances run nothing, so the worker is started by the test; the local fleet
that would mirror the group's instances is not built yet.
"""

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from scripts import local_aws

from tests.conftest import WriteWorkload, run_cli, taskfleet_command

pytestmark = pytest.mark.e2e


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The stack on an emulator: its outputs and the environment that reaches it."""
    if not local_aws.CDK_CLI.exists() and not os.environ.get("CI"):
        pytest.skip("the CDK CLI is not installed (npm ci)")
    state = tmp_path / "local-aws"
    try:
        outputs = local_aws.up(state, port=None)
        port = local_aws.emulator_of(state)["port"]
        yield outputs, local_aws.environment(port)
    finally:
        if (state / "emulator.json").exists():
            local_aws.stop(state)


def test_run_remote_through_the_deployed_stack(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload, tmp_path: Path
) -> None:
    outputs, environment = deployed
    path = workload(*(["sleep 0"] * 30), "echo remote", "exit 4", "sleep 200")
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [
                *taskfleet_command(),
                "worker",
                "--request-queue-url",
                outputs["RequestQueueUrl"],
                "--response-queue-url",
                outputs["ResponseQueueUrl"],
                "--claim-table",
                outputs["ClaimTableName"],
                "--region",
                outputs["Region"],
                "--instance-id",
                "i-0123456789abcdef0",
                "--idle-timeout",
                "5",
                "--concurrency",
                "4",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        done = run_cli(
            "run",
            path,
            "--remote",
            "--stack",
            "Taskfleet",
            "--summary",
            str(tmp_path / "summary.json"),
            env=environment,
            timeout=300,
        )
    finally:
        worker_exit = worker.wait(timeout=120)
    assert done.returncode == 1, done.stderr  # 'exit 4' failed
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 34))
    by_line = {r["line"]: r for r in records}
    assert by_line[31]["stdout"] == "remote\n"
    assert by_line[32]["exit_code"] == 4
    assert by_line[33]["duration_ms"] >= 200
    assert {r["worker"] for r in records} == {"i-0123456789abcdef0"}
    assert worker_exit == 0  # idle, it ended by itself
    # The scheduler asked the group for instances the moment work arrived.
    autoscaling: Any = boto3.client(
        "autoscaling",
        endpoint_url=environment["AWS_ENDPOINT_URL"],
        region_name=local_aws.REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    assert group["DesiredCapacity"] >= 1


def test_remote_without_a_stack_is_a_usage_error(workload: WriteWorkload) -> None:
    done = run_cli(
        "run", workload("sleep 1"), "--remote", env={**os.environ, "TASKFLEET_STACK": ""}
    )
    assert done.returncode == 2
    assert "--remote needs --stack" in done.stderr
