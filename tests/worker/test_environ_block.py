"""A token given by environment, out of reach of /proc/PID/environ: in a fresh
process of its own, and in a real scheduler and the tasks it runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import StartScheduler, WriteWorkload, run_cli
from worker.contracts import TOKEN_VARIABLE

SECRET = "a-token-no-task-may-read-0123"

#: A process that drops the variable as os.environ.pop does, erasing it first or
#: not, and prints what /proc/self/environ then shows.
PROBE = """
import os, sys
from worker.environ_block import erase_value
if sys.argv[1] == "erase":
    erase_value("SECRET_VARIABLE")
os.environ.pop("SECRET_VARIABLE")
sys.stdout.buffer.write(open("/proc/self/environ", "rb").read())
"""


def environ_after(how: str) -> bytes:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how],
        env={**os.environ, "SECRET_VARIABLE": SECRET, "NEIGHBOUR": "kept"},
        capture_output=True,
        check=True,
    )
    return done.stdout


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="no /proc")
def test_unsetting_leaves_the_value_in_proc_and_erasing_removes_it() -> None:
    assert SECRET.encode() in environ_after("unset only")  # why erase_value exists
    shown = environ_after("erase")
    assert SECRET.encode() not in shown
    assert b"\0NEIGHBOUR=kept\0" in shown  # the rest of the block is untouched


@pytest.mark.e2e
def test_a_token_given_by_environment_is_not_readable_by_tasks(
    scheduler_service: StartScheduler, workload: WriteWorkload
) -> None:
    env = {**os.environ, TOKEN_VARIABLE: SECRET}
    service = scheduler_service(env=env)
    assert service.process is not None
    pid = service.process.pid
    assert SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    # A task of that scheduler reads the scheduler's environment, its worker's
    # (its parent) and its own; the client finds the token in its environment.
    path = workload(f"cat /proc/{pid}/environ /proc/$PPID/environ /proc/self/environ | tr -d '\\0'")
    done = run_cli("submit", path, "--scheduler", service.url, env=env)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["status"] == "succeeded"
    assert "XDG_STATE_HOME=" in record["stdout"]  # it did read the environments
    assert SECRET not in record["stdout"]
