"""Tasks on a fleet worker run as their own user, cut off from the instance's
credentials: the metadata address is closed to them by the image's firewall,
open to the worker. Run for real in a network namespace (root, nft, unshare)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_root_tools
from worker.bundle import Bundle, BundleTask, encode_bundle
from worker.execute import TaskRunner, TaskUser, plan

REPOSITORY = Path(__file__).resolve().parents[2]
FIREWALL = REPOSITORY / "image" / "task-firewall.nft"

#: The unprivileged user every Linux system has; the image makes taskfleet-task.
TASK_USER = "nobody"


def test_a_task_runs_as_its_user_with_a_clean_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    needs_root_tools()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-workers-own")
    monkeypatch.setenv("TASKFLEET_CLAIM_TABLE", "claims")
    user = TaskUser.named(TASK_USER)
    runner = TaskRunner(timeout=10, user=user)
    line = "id -u; id -g; id -G; pwd; env"
    try:
        outcome = runner.run(line, plan(line))
    finally:
        runner.close()
    assert outcome.status == "succeeded", outcome
    lines = (outcome.stdout or "").splitlines()
    uid = int(lines[0])
    assert uid != 0
    assert (uid, int(lines[1])) == (user.uid, user.gid)
    assert lines[2].split() == [str(user.gid)]  # no group of the worker's
    assert lines[3] == user.home
    environment = "\n".join(lines[4:])
    assert "AWS_" not in environment
    assert "TASKFLEET_" not in environment
    assert "HOME=" in environment


@pytest.mark.e2e
def test_the_metadata_address_is_closed_to_tasks_and_open_to_the_worker() -> None:
    needs_root_tools("unshare", "nft", "ip")
    probe = (
        'python3 -c "import urllib.request; '
        "print(urllib.request.urlopen('http://169.254.169.254/latest/meta-data/instance-id',"
        ' timeout=5).read())"'
    )
    tasks = [BundleTask(1, 1, probe), BundleTask(1, 2, "id -u")]
    body = encode_bundle(Bundle("netns-1", "job1", ["w.txt"], tasks))
    host = subprocess.run(
        [
            "unshare",
            "--net",
            sys.executable,
            str(Path(__file__).with_name("netns_host.py")),
            str(FIREWALL),
            TASK_USER,
        ],
        input=body,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},  # its helpers, from tests/
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert host.returncode == 0, host.stderr
    results = {r["line"]: r for r in map(json.loads, host.stdout.splitlines())}
    assert sorted(results) == [1, 2]
    # The worker reached the metadata service: its instance id came from there.
    assert {r["worker"] for r in results.values()} == {"i-0namespace"}
    # The task did not.
    assert results[1]["status"] == "failed"
    assert "Connection refused" in results[1]["stderr"]  # the firewall's reset
    assert int(results[2]["stdout"]) != 0
