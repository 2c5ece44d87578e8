"""`run --retries` and `run --resume`, through the real command."""

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    StartScheduler,
    WriteWorkload,
    flaky,
    run_cli,
    service_headers,
    taskfleet_command,
    wait_for,
)

pytestmark = pytest.mark.e2e


def records(path: Path | str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_flaky_command_succeeds_on_its_second_attempt(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    path = workload("sleep 1", flaky(tmp_path), "exit 5", "echo ok")
    done = run_cli("run", path, "-w", "2", "--retries", "2", "-o", str(output))
    assert done.returncode == 1, done.stderr  # 'exit 5' failed every time
    by_line = {r["line"]: r for r in records(output)}
    assert sorted(by_line) == [1, 2, 3, 4]  # one record a task, the last attempt's
    assert (by_line[2]["status"], by_line[2]["stdout"]) == ("succeeded", "second\n")
    assert (by_line[2]["attempt"], by_line[2]["earlier_exit_codes"]) == (2, [3])
    assert (by_line[3]["attempt"], by_line[3]["earlier_exit_codes"]) == (3, [5, 5])
    assert (by_line[4]["attempt"], by_line[4]["earlier_exit_codes"]) == (1, [])
    assert "done: 4/4 tasks, 3 succeeded, 1 failed" in done.stderr


def test_without_retries_a_failed_command_is_not_run_again(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    done = run_cli("run", workload(flaky(tmp_path)))
    assert done.returncode == 1
    ((record,),) = [records_of(done.stdout)]
    assert (record["status"], record["attempt"], record["stdout"]) == ("failed", 1, "first\n")


def records_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_resume_runs_only_what_did_not_succeed(workload: WriteWorkload, tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    ledger = tmp_path / "ledger"
    path = workload(
        f"echo 1 >> {ledger}", flaky(tmp_path), f"echo 3 >> {ledger}; exit 7", "sleep 0"
    )
    first = run_cli("run", path, "-o", str(output))
    assert first.returncode == 1
    # A partial results file: the last record lost, as if the run had been killed.
    output.write_text("".join(f"{line}\n" for line in output.read_text().splitlines()[:-1]))
    statuses = {r["line"]: r["status"] for r in records(output)}
    again = run_cli("run", path, "--resume", str(output), "-o", str(output))
    assert again.returncode == 1, again.stderr  # line 3 fails again
    done_before = sum(1 for status in statuses.values() if status == "succeeded")
    assert f"resuming: {done_before} tasks done already" in again.stderr
    after = records(output)
    rerun = [r["line"] for r in after[len(statuses) :]]
    expected = sorted({2, 3, 4} - {n for n, s in statuses.items() if s == "succeeded"})
    assert sorted(rerun) == expected  # appended: only the tasks without success
    assert ledger.read_text().split().count("1") == 1  # line 1 did not run again


def test_a_changed_line_runs_again(workload: WriteWorkload, tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    path = workload("echo a", "echo b", name="w.txt")
    assert run_cli("run", path, "-o", str(output)).returncode == 0
    workload("echo a", "echo changed", name="w.txt")
    again = run_cli("run", path, "--resume", str(output))
    assert again.returncode == 0, again.stderr
    assert [r["stdout"] for r in records_of(again.stdout)] == ["changed\n"]


def test_a_bad_results_file_is_refused_naming_its_line(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text('{"not": "a record"}\n')
    done = run_cli("run", workload("echo a"), "--resume", str(earlier))
    assert done.returncode == 2
    assert f"{earlier}:1: not a taskfleet result record" in done.stderr
    missing = run_cli("run", workload("echo a"), "--resume", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2
    assert "cannot read earlier results" in missing.stderr


def test_ctrl_c_while_a_task_waits_for_a_retry_keeps_its_last_attempt(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    marker = tmp_path / "failed-twice"
    # Fails at once, every time; waits grow 0.5 s, 1 s, 2 s, ...
    path = workload(f"if [ -e {marker}.1 ]; then touch {marker}; fi; touch {marker}.1; exit 4")
    run = subprocess.Popen(
        [*taskfleet_command(), "run", path, "--retries", "10", "-o", str(output)],
        stderr=subprocess.PIPE,
    )
    wait_for(marker.exists, timeout=30)  # its second attempt ran
    time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130, stderr
    ((record,),) = [records(output)]
    assert (record["status"], record["exit_code"]) == ("failed", 4)
    assert record["attempt"] >= 2
    assert record["earlier_exit_codes"] == [4] * (record["attempt"] - 1)


# -- the scheduler service: submit --retries and taskfleet retry ----------------


def test_submit_retries_a_task_on_the_service(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    service = scheduler_service("--workers", "2")
    output = tmp_path / "results.jsonl"
    path = workload(flaky(tmp_path), "exit 5", "echo ok")
    done = run_cli("submit", path, "--scheduler", service.url, "--retries", "2", "-o", str(output))
    assert done.returncode == 1, done.stderr  # 'exit 5' failed every time
    by_line = {r["line"]: r for r in records(output)}
    assert sorted(by_line) == [1, 2, 3]  # one record a task: the last attempt's
    assert (by_line[1]["status"], by_line[1]["stdout"]) == ("succeeded", "second\n")
    assert (by_line[1]["attempt"], by_line[1]["earlier_exit_codes"]) == (2, [3])
    assert (by_line[2]["attempt"], by_line[2]["earlier_exit_codes"]) == (3, [5, 5])
    assert (by_line[3]["attempt"], by_line[3]["earlier_exit_codes"]) == (1, [])
    status = httpx.get(f"{service.url}/jobs/{by_line[1]['job']}", headers=service_headers()).json()
    assert (status["state"], status["succeeded"], status["retries"]) == ("done", 2, 2)


def test_retry_runs_again_only_what_did_not_succeed_as_a_new_job(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    service = scheduler_service("--workers", "2")
    ledger = tmp_path / "ledger"
    marker = tmp_path / "fixed"
    path = workload(f"echo 1 >> {ledger}", f"test -e {marker}", "exit 7", "sleep 0")
    first = run_cli("submit", path, "--scheduler", service.url)
    assert first.returncode == 1, first.stderr
    old_job = records_of(first.stdout)[0]["job"]
    marker.touch()  # what made line 2 fail is fixed

    again = run_cli("retry", old_job, "--scheduler", service.url)
    assert again.returncode == 1, again.stderr  # 'exit 7' fails again
    rerun = records_of(again.stdout)
    new_job = rerun[0]["job"]
    assert new_job != old_job
    assert f"job {new_job}: 2 tasks (retrying job {old_job})" in again.stderr
    assert {r["line"]: r["status"] for r in rerun} == {2: "succeeded", 3: "failed"}
    assert {r["file"] for r in rerun} == {path}
    assert ledger.read_text().split() == ["1"]  # the task that succeeded did not run again
    # The old job's records stay as they were.
    old = run_cli("results", old_job, "--scheduler", service.url)
    assert records_of(old.stdout) == records_of(first.stdout)

    # Once everything succeeded there is nothing to retry; an unknown job is named.
    last = run_cli("retry", new_job, "--scheduler", service.url, "--retries", "1")
    assert last.returncode == 1  # line 3 still fails, after its retry too
    (record,) = records_of(last.stdout)
    assert (record["attempt"], record["earlier_exit_codes"]) == (2, [7])
    clean = run_cli("submit", workload("sleep 0", name="clean.txt"), "--scheduler", service.url)
    clean_job = records_of(clean.stdout)[0]["job"]
    nothing = run_cli("retry", clean_job, "--scheduler", service.url)
    assert nothing.returncode == 2
    assert f"every task of job {clean_job} succeeded: nothing to retry" in nothing.stderr
    unknown = run_cli("retry", "nope", "--scheduler", service.url)
    assert (unknown.returncode, "404" in unknown.stderr) == (2, True), unknown.stderr
    both = run_cli("retry", old_job, "--local", "--hybrid", "--scheduler", service.url)
    assert both.returncode == 2
    assert "--local and --hybrid exclude each other" in both.stderr


def test_a_job_still_running_is_not_retried(scheduler_service: StartScheduler) -> None:
    service = scheduler_service("--workers", "1")
    headers = service_headers()
    upload = json.dumps({"file": "w.txt", "line": 1, "task": "sleep 30000"}) + "\n"
    job = httpx.post(f"{service.url}/jobs", content=upload, headers=headers).json()["job"]
    refused = httpx.post(f"{service.url}/jobs/{job}/retry", headers=headers)
    assert refused.status_code == 409
    assert "still has tasks to run (0 of 1 finished)" in refused.json()["error"]
    bad = httpx.post(f"{service.url}/jobs?retries=101", content=upload, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"] == "retries must be a whole number from 0 to 100"
