"""The scheduler service SIGKILLed mid-job and started again; a client gone mid-stream.

Every command appends its line number to a ledger, so the suite knows what ran
as well as what was reported.
"""

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import SchedulerProcess, WriteWorkload, run_cli, taskfleet_command, wait_for
from tests.faults.figures import Figures
from tests.faults.test_killed_workers import SEED, ledger_runs, ledger_task

pytestmark = pytest.mark.e2e

StartScheduler = Callable[..., SchedulerProcess]


def test_the_scheduler_killed_mid_job_and_started_again(
    workload: WriteWorkload,
    scheduler_service: StartScheduler,
    tmp_path: Path,
    record: list[Figures],
) -> None:
    rng = random.Random(SEED)
    trials, tasks = 5, 40
    lost = twice = ran_twice = reported_lost = 0
    for trial in range(trials):
        journal = tmp_path / f"journal-{trial}.sqlite3"
        ledger = tmp_path / f"ledger-{trial}.txt"
        path = workload(*(ledger_task(ledger, n, 0.05) for n in range(1, tasks + 1)))
        service = scheduler_service(journal=journal)
        log = tmp_path / f"submit-{trial}.log"
        client = start_submit(path, service.url, log)
        wait_until_running(ledger, log)
        time.sleep(rng.uniform(0, 0.6))
        service.kill()
        assert client.wait(timeout=60) == 2  # "lost the scheduler"
        job = job_of(log.read_text())

        restarted = scheduler_service(journal=journal)
        done = run_cli("results", job, "--wait", "--scheduler", restarted.url, timeout=120)
        assert done.returncode == 0, done.stderr
        records = [json.loads(row) for row in done.stdout.splitlines()]
        reported = Counter(r["line"] for r in records)
        lost += sum(1 for n in range(1, tasks + 1) if not reported[n])
        twice += sum(1 for count in reported.values() if count > 1)
        reported_lost += sum(1 for r in records if r["status"] == "lost")
        runs = Counter(n for n, *_ in ledger_runs(ledger))
        ran_twice += sum(1 for count in runs.values() if count > 1)
        restarted.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    record.append(
        Figures(
            "scheduler service SIGKILLed mid-job, started again on its journal",
            trials,
            trials * tasks,
            lost,
            twice,
            ran_twice,
            f"{reported_lost} tasks running at the crash reported lost, never run again",
        )
    )
    assert (lost, twice, ran_twice) == (0, 0, 0)


def start_submit(path: str, url: str, log: Path) -> "subprocess.Popen[bytes]":
    """`taskfleet submit`, following the job's results, its stderr in ``log``."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [*taskfleet_command(), "submit", path, "--scheduler", url],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_until_running(ledger: Path, log: Path) -> None:
    """Until tasks run and the client has printed the job id (either may come first)."""
    wait_for(lambda: ledger.exists() and "job " in log.read_text())


def job_of(submit_stderr: str) -> str:
    """The job id `taskfleet submit` printed ("job ID: N tasks")."""
    return submit_stderr.split("job ", 1)[1].split(":", 1)[0]


def test_a_client_gone_mid_stream_leaves_the_job_running(
    workload: WriteWorkload,
    scheduler_service: StartScheduler,
    tmp_path: Path,
    record: list[Figures],
) -> None:
    tasks = 30
    ledger = tmp_path / "ledger.txt"
    path = workload(*(ledger_task(ledger, n, 0.05) for n in range(1, tasks + 1)))
    service = scheduler_service()
    log = tmp_path / "submit.log"
    client = start_submit(path, service.url, log)
    wait_until_running(ledger, log)
    client.kill()  # mid-stream: no goodbye
    client.wait()
    job = job_of(log.read_text())
    done = run_cli("results", job, "--wait", "--scheduler", service.url, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(row) for row in done.stdout.splitlines()]
    reported = Counter(r["line"] for r in records)
    status = Counter(r["status"] for r in records)
    assert status == Counter({"succeeded": tasks})
    runs = Counter(n for n, *_ in ledger_runs(ledger))
    record.append(
        Figures(
            "client SIGKILLed while following results",
            1,
            tasks,
            sum(1 for n in range(1, tasks + 1) if not reported[n]),
            sum(1 for count in reported.values() if count > 1),
            sum(1 for count in runs.values() if count > 1),
            "the job went on; results fetched later",
        )
    )
    assert max(reported.values()) == max(runs.values()) == 1
    assert len(reported) == tasks
    assert httpx.get(f"{service.url}/health").json()["status"] == "ok"
