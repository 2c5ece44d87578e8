"""The stack on an emulator, deployed once for every end-to-end test of the fleet."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import local_aws

#: The fleet's size in these tests: small, so a hybrid job leaves work for local workers.
MAX_WORKERS = 2


@pytest.fixture(scope="package")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local stack's state folder: outputs, worker logs, instance metadata."""
    return tmp_path_factory.mktemp("local-aws")


@pytest.fixture(scope="package")
def deployed(state: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The stack on an emulator: its outputs and the environment that reaches it."""
    if not local_aws.CDK_CLI.exists() and not os.environ.get("CI"):
        pytest.skip("the CDK CLI is not installed (npm ci)")
    context = {
        "taskfleet:idleTimeoutSeconds": "3",
        "taskfleet:maxWorkers": str(MAX_WORKERS),
        # One slot an instance: a worker a poison task kills runs nothing else.
        "taskfleet:slotsPerInstance": "1",
        # Short, so a poison bundle reaches the dead-letter queue in seconds; not
        # shorter: a worker renews its lease (the timeout less 1 s) every third of
        # the timeout, so a renewal late by 1 s of a 3 s timeout loses the bundle
        # (a loaded 2-core VM stalled a worker that long, and a task ran twice);
        # of 6 s it takes 3 s.
        "taskfleet:visibilityTimeoutSeconds": "6",
        "taskfleet:maxReceiveCount": "2",
    }
    try:
        outputs = local_aws.up(state, port=None, context=context)
        port = local_aws.emulator_of(state)["port"]
        yield outputs, local_aws.environment(port)
    finally:
        if (state / "emulator.json").exists():
            local_aws.stop(state)
