"""End to end on the deployed stack: `taskfleet run --remote` and the local fleet.

A real moto_server, the real CDK CLI deploying the real stack, the local
fleet running a `taskfleet worker` process per instance the group brings
into service, and the installed command.
"""

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from scripts import local_aws

from tests.conftest import WriteWorkload, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The stack on an emulator: its outputs and the environment that reaches it."""
    if not local_aws.CDK_CLI.exists() and not os.environ.get("CI"):
        pytest.skip("the CDK CLI is not installed (npm ci)")
    state = tmp_path / "local-aws"
    try:
        outputs = local_aws.up(state, port=None, context={"taskfleet:idleTimeoutSeconds": "3"})
        port = local_aws.emulator_of(state)["port"]
        yield outputs, local_aws.environment(port)
    finally:
        if (state / "emulator.json").exists():
            local_aws.stop(state)


def test_the_whole_cloud_path_scales_from_zero_and_back(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload
) -> None:
    outputs, environment = deployed
    path = workload(*(["sleep 0"] * 30), "echo remote", "exit 4", "sleep 200")
    done = run_cli("run", path, "--remote", "--stack", "Taskfleet", env=environment, timeout=300)
    assert done.returncode == 1, done.stderr  # 'exit 4' failed
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert Counter(r["line"] for r in records) == Counter(range(1, 34))  # each exactly once
    by_line = {r["line"]: r for r in records}
    assert by_line[31]["stdout"] == "remote\n"
    assert by_line[32]["exit_code"] == 4
    assert by_line[33]["duration_ms"] >= 200
    assert all(r["worker"].startswith("i-") for r in records)  # run by the fleet's workers

    autoscaling: Any = boto3.client(
        "autoscaling",
        endpoint_url=environment["AWS_ENDPOINT_URL"],
        region_name=local_aws.REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def group() -> dict[str, Any]:
        (found,) = autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[outputs["AutoScalingGroupName"]]
        )["AutoScalingGroups"]
        return dict(found)

    # Idle, every worker terminated its own instance: the group is back at zero.
    deadline = time.monotonic() + 120
    while group()["DesiredCapacity"] or group()["Instances"]:
        assert time.monotonic() < deadline, group()
        time.sleep(1)


def test_remote_without_a_stack_is_a_usage_error(workload: WriteWorkload) -> None:
    done = run_cli(
        "run", workload("sleep 1"), "--remote", env={**os.environ, "TASKFLEET_STACK": ""}
    )
    assert done.returncode == 2
    assert "--remote needs --stack" in done.stderr
