"""End to end: the installed ``taskfleet`` command, real processes, real HTTP."""

import contextlib
import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from scheduler.jobs.journal import Journal
from tests.conftest import (
    StartScheduler,
    WriteWorkload,
    children_of,
    is_running,
    run_cli,
    service_headers,
    taskfleet_command,
    wait_for,
)

pytestmark = pytest.mark.e2e


MIXED = [
    "# a mixed workload",
    "sleep 0",
    "sleep 15",
    "echo 'hello world'",
    "",
    "exit 3",
    "printf 'x%.0s' $(seq 1 10)",
    "sleep 1",
]


def records_of(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line]


# -- taskfleet run ------------------------------------------------------------


def test_run_mixed_workloads_from_two_files(workload: WriteWorkload) -> None:
    first = workload(*MIXED)
    second = workload(*(["sleep 0"] * 2000))
    done = run_cli("run", first, second, "--workers", "3")
    assert done.returncode == 1, done.stderr  # 'exit 3' failed
    records = records_of(done.stdout)
    assert len(records) == 2006
    assert len({r["id"] for r in records}) == 2006
    by_line = {(r["file"], r["line"]): r for r in records if r["file"] == first}
    assert by_line[(first, 4)]["stdout"] == "hello world\n"
    assert by_line[(first, 6)]["exit_code"] == 3
    assert by_line[(first, 7)]["stdout"] == "x" * 10
    assert {r["worker"] for r in records} <= {"local-1", "local-2", "local-3"}
    assert "done: 2006/2006 tasks, 2005 succeeded, 1 failed" in done.stderr


def test_run_counts_the_cpu_its_workers_and_commands_used(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    busy = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"  # a shell counting: CPU
    summary_path = tmp_path / "summary.json"
    done = run_cli("run", workload(busy, "sleep 300"), "--summary", str(summary_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    records = records_of(done.stdout)
    counting = next(r for r in records if r["line"] == 1)["duration_ms"] / 1000
    # The counting shell's time was CPU time, much of it (not all: other tests'
    # processes share the cores); the sleep's was not.
    assert counting / 4 <= summary["cpu_seconds"] <= counting + 0.3
    assert (summary["instance_seconds"], summary["aws_requests"], summary["cost_usd"]) == (
        0.0,
        0,
        None,
    )
    assert "CPU-seconds on local workers" in done.stderr


def test_the_summarys_peak_memory_is_the_runs_own(workload: WriteWorkload, tmp_path: Path) -> None:
    # Started by a process that has used 400 MiB: Linux carries that peak across
    # exec into getrusage's ru_maxrss, which the summary must not report.
    ballast = b"\x01" * (400 * 1024 * 1024)  # written, so resident
    summary_path = tmp_path / "summary.json"
    try:
        done = run_cli("run", workload("sleep 0"), "--summary", str(summary_path))
    finally:
        del ballast
    assert done.returncode == 0, done.stderr
    peak_mib = json.loads(summary_path.read_text())["peak_rss_kib"] / 1024
    assert 5 < peak_mib < 200


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"sleep\n", ":1: sleep needs a duration"),
        (b"echo ok\nsleep -1\n", ":2: sleep duration must be a whole number"),
        (b"sleep 1.5\n", ":1: sleep duration must be a whole number"),
        (b"sleep abc\n", ":1: sleep duration must be a whole number"),
        (b"sleep 86400001\n", ":1: sleep duration 86400001 ms is above the maximum"),
        (b"echo " + b"a" * 9000 + b"\n", ":1: line is 9005 characters long"),
        (b"echo \xc3\x28\n", ":1: is not valid UTF-8"),
        (b"echo a\x00b\n", ":1: line contains a NUL byte"),
        (b"# nothing here\n\n", ": no tasks"),
    ],
)
def test_run_refuses_bad_input_before_anything_runs(
    workload: WriteWorkload, tmp_path: Path, content: bytes, reason: str
) -> None:
    marker = tmp_path / "ran"
    good = workload(f"touch {marker}")
    bad = workload(raw=content)
    output = tmp_path / "out.jsonl"
    done = run_cli("run", good, bad, "-o", str(output))
    assert done.returncode == 2
    assert f"taskfleet: {bad}{reason}" in done.stderr
    assert done.stdout == ""
    assert not marker.exists()
    assert not output.exists()


def test_run_refuses_missing_files_and_directories(tmp_path: Path) -> None:
    missing = run_cli("run", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert f"{tmp_path / 'nope.txt'}: no such file" in missing.stderr
    directory = run_cli("run", str(tmp_path))
    assert directory.returncode == 2
    assert "is a directory" in directory.stderr


def test_ctrl_c_stops_cleanly_and_keeps_results(workload: WriteWorkload, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    slow = f"echo $$ >> {pids}; exec /bin/sleep 60"
    path = workload("echo quick", *([slow] * 4))
    output = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [*taskfleet_command(), "run", path, "-w", "2", "-o", str(output)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal would make it
    )
    wait_for(lambda: output.exists() and output.read_text().count("\n") >= 1)
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) >= 2)
    workers = children_of(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in stderr
    kept = records_of(output.read_text())
    assert kept[0]["task"] == "echo quick"
    # The two commands running were cut off, and say so; the other two never ran.
    cut_off = kept[1:]
    assert [r["task"] for r in cut_off] == [slow, slow]
    assert all(r["status"] == "lost" for r in cut_off)
    assert all(r["error"] == "cut off by an interrupt while running" for r in cut_off)
    for pid in workers + [int(p) for p in pids.read_text().split()]:
        wait_for(lambda pid=pid: not is_running(pid), timeout=10)  # type: ignore[misc]


# -- the scheduler service ----------------------------------------------------


def test_submit_status_and_results(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    service = scheduler_service()
    path = workload(*MIXED)
    output = tmp_path / "out.jsonl"
    done = run_cli("submit", path, "--scheduler", service.url, "-o", str(output))
    assert done.returncode == 1, done.stderr
    submitted = records_of(output.read_text())
    assert sorted(r["line"] for r in submitted) == [2, 3, 4, 6, 7, 8]
    job = submitted[0]["job"]
    assert f"job {job}: 6 tasks" in done.stderr
    assert "done: 6/6 tasks, 5 succeeded, 1 failed" in done.stderr

    again = run_cli("results", job, "--scheduler", service.url)
    assert again.returncode == 0
    assert records_of(again.stdout) == submitted

    status = run_cli("status", job, "--scheduler", service.url)
    assert status.returncode == 0
    assert job in status.stdout
    assert "done" in status.stdout
    listing = run_cli("status", "--scheduler", service.url)
    assert job in listing.stdout

    unknown = run_cli("results", "nope", "--scheduler", service.url)
    assert unknown.returncode == 2
    assert "404" in unknown.stderr
    bad = workload("sleep x")
    refused = run_cli("submit", bad, "--scheduler", service.url)
    assert refused.returncode == 2
    assert f"{bad}:1:" in refused.stderr


def test_token_is_required_on_every_route_but_health(
    workload: WriteWorkload, scheduler_service: StartScheduler
) -> None:
    secret = "s3cret-token-of-the-test"
    service = scheduler_service(env={**os.environ, "TASKFLEET_TOKEN": secret})
    path = workload("echo hi", "env")
    refused = run_cli("submit", path, "--scheduler", service.url)  # the default file's token
    assert refused.returncode == 2
    assert "401" in refused.stderr
    assert "--token-file" in refused.stderr
    wrong = run_cli("status", "--scheduler", service.url, "--token", secret[:-1] + "X")
    assert wrong.returncode == 2
    prefix = run_cli("status", "--scheduler", service.url, "--token", secret[:-1])
    assert prefix.returncode == 2
    routes = [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/x"),
        ("GET", "/jobs/x/results"),
        ("POST", "/jobs/x/cancel"),
    ]
    for method, route in routes:
        assert httpx.request(method, service.url + route).status_code == 401
    assert httpx.get(service.url + "/health").status_code == 200
    accepted = run_cli(
        "submit",
        path,
        "--scheduler",
        service.url,
        env={**os.environ, "TASKFLEET_TOKEN": secret},
    )
    assert accepted.returncode == 0, accepted.stderr
    # The secret is in no output, log, journal or task's environment (`env` ran).
    assert "TASKFLEET_TOKEN" not in accepted.stdout
    assert "PATH=" in accepted.stdout
    assert secret not in accepted.stdout + accepted.stderr
    assert secret.encode() not in service.log.read_bytes()
    for stored in service.journal.parent.glob(service.journal.name + "*"):
        assert secret.encode() not in stored.read_bytes()


def test_upload_limits_and_bad_bodies(scheduler_service: StartScheduler) -> None:
    service = scheduler_service()
    url = service.url + "/jobs"
    long_line = json.dumps({"file": "f", "line": 1, "task": "echo " + "a" * 100_000})
    cases = [
        (long_line, 413, "too long"),
        ("{not json", 400, "not a task object"),
        (json.dumps({"file": "w.txt", "line": 3, "task": "sleep -1"}), 400, "w.txt:3: sleep"),
        (json.dumps({"file": "w.txt", "line": 0, "task": "echo"}), 400, ">= 1 - at `$.line`"),
        # Beyond what the journal can store: refused, not a 500.
        (json.dumps({"file": "w.txt", "line": 2**63, "task": "echo"}), 400, "at `$.line`"),
        ("", 400, "no tasks"),
        (
            "\n".join(json.dumps({"file": "w", "line": 1, "task": "echo"}) for _ in range(2)),
            400,
            "twice",
        ),
    ]
    for body, code, message in cases:
        answer = httpx.post(url, content=body.encode(), headers=service_headers())
        assert answer.status_code == code, (body[:60], answer.text)
        assert message in answer.json()["error"]
    jobs = httpx.get(service.url + "/jobs", headers=service_headers()).json()
    assert jobs == {"jobs": []}  # nothing half-stored
    assert httpx.get(service.url + "/health").json()["status"] == "ok"


def test_restart_keeps_results_and_reports_lost_tasks(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    journal = tmp_path / "restart.sqlite3"
    # One worker: once the long task holds it, the tasks after its chunks wait.
    service = scheduler_service("--workers", "1", journal=journal)
    started = tmp_path / "started"
    long_task = f"touch {started}; exec /bin/sleep 60"
    path = workload("echo one", "echo two", long_task, long_task, *(["echo later"] * 20))
    upload = httpx.post(
        service.url + "/jobs",
        content="\n".join(
            json.dumps({"file": path, "line": n, "task": t})
            for n, t in enumerate(Path(path).read_text().splitlines(), start=1)
        ),
        headers=service_headers(),
    )
    job = upload.json()["job"]
    wait_for(lambda: started.exists())
    status_of = f"{service.url}/jobs/{job}"
    wait_for(lambda: httpx.get(status_of, headers=service_headers()).json()["finished"] >= 1)
    service.kill()
    with sqlite3.connect(journal) as db:  # what the dead scheduler never handed out
        rows = db.execute("SELECT line FROM tasks WHERE job = ? AND state = 0", (job,))
        never_dispatched = {line for (line,) in rows}
    assert never_dispatched

    restarted = scheduler_service(journal=journal)
    done = run_cli("results", job, "--wait", "--scheduler", restarted.url, timeout=60)
    assert done.returncode == 0, done.stderr
    records = records_of(done.stdout)
    assert Counter(r["id"] for r in records) == Counter({f"{job}:1:{n}": 1 for n in range(1, 25)})
    status = {r["line"]: r["status"] for r in records}
    assert status[1] == "succeeded"  # finished and reported before the crash, kept
    assert status[3] == "lost"  # running when it died: never silently re-run
    # Tasks already handed to a worker may have started: lost; the rest ran after restart.
    assert {status[n] for n in (2, *range(4, 25))} <= {"succeeded", "lost"}
    assert {status[n] for n in never_dispatched} == {"succeeded"}
    lost = [r for r in records if r["status"] == "lost"]
    assert all("scheduler stopped" in r["error"] for r in lost)


def test_cancel_and_exit_when_idle(
    workload: WriteWorkload, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service("--exit-when-idle", "1")
    path = workload(*(["true && /bin/sleep 0.2"] * 40))
    job = httpx.post(
        service.url + "/jobs",
        content="\n".join(
            json.dumps({"file": path, "line": n, "task": "true && /bin/sleep 0.2"})
            for n in range(1, 41)
        ),
        headers=service_headers(),
    ).json()["job"]
    cancelled = run_cli("cancel", job, "--scheduler", service.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    done = run_cli("results", job, "--wait", "--scheduler", service.url)
    statuses = Counter(r["status"] for r in records_of(done.stdout))
    assert sum(statuses.values()) == 40
    assert statuses["cancelled"] > 0
    assert service.process is not None
    assert service.process.wait(timeout=30) == 0  # it went idle and exited by itself
    journal = Journal(service.journal)
    counted = journal.job(job).as_dict()
    journal.close()
    # Cancelled tasks never ran: they are counted as cancelled, not as failed.
    assert (counted["cancelled"], counted["failed"]) == (statuses["cancelled"], 0)
    assert counted["by_status"] == {
        "succeeded": statuses["succeeded"],
        "failed": 0,
        "timed_out": 0,
        "lost": 0,
        "cancelled": statuses["cancelled"],
    }


def test_exit_when_idle_after_a_finished_job(
    workload: WriteWorkload, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service("--exit-when-idle", "1")
    done = run_cli("submit", workload("sleep 1", "echo done"), "--scheduler", service.url)
    assert done.returncode == 0, done.stderr
    assert service.process is not None
    assert service.process.wait(timeout=30) == 0


def test_progress_bar_on_a_terminal_only(workload: WriteWorkload) -> None:
    path = workload(*(["sleep 5"] * 400))
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*taskfleet_command(), "run", path, "-w", "2", "-o", os.devnull], stderr=follower
    )
    os.close(follower)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the process has closed its end
        while chunk := os.read(leader, 4096):
            seen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", seen).decode()
    assert re.search(r"tasks .*\d+/400", text)  # the live bar
    assert "done: 400/400 tasks" in text
    piped = run_cli("run", path, "-w", "2", "-o", os.devnull)
    assert "tasks " not in piped.stderr.split("done:")[0]  # no bar when stderr is not a terminal
    assert "done: 400/400 tasks" in piped.stderr


def test_a_clean_stop_leaves_no_journal_side_files(
    workload: WriteWorkload, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service()
    done = run_cli("submit", workload("echo a"), "--scheduler", service.url)
    assert done.returncode == 0, done.stderr
    assert run_cli("status", "--scheduler", service.url).returncode == 0
    assert Path(f"{service.journal}-wal").exists()  # open while it runs
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=30) == 0
    assert service.journal.exists()
    leftovers = [Path(f"{service.journal}{end}") for end in ("-wal", "-shm")]
    assert not any(path.exists() for path in leftovers), leftovers


def test_timeout_limits_each_command_through_run_and_the_service(
    workload: WriteWorkload, scheduler_service: StartScheduler
) -> None:
    path = workload("/bin/sleep 30", "echo quick", "sleep 30000", "sleep 10")
    ran = run_cli("run", path, "--timeout", "0.5", timeout=60)
    assert ran.returncode == 1, ran.stderr
    # A built-in sleep past the limit times out too, as it does on the fleet.
    assert {r["line"]: r["status"] for r in records_of(ran.stdout)} == {
        1: "timed_out",
        2: "succeeded",
        3: "timed_out",
        4: "succeeded",
    }
    service = scheduler_service("--timeout", "0.5")
    submitted = run_cli("submit", path, "--scheduler", service.url, timeout=60)
    assert submitted.returncode == 1, submitted.stderr
    assert {r["line"]: r["status"] for r in records_of(submitted.stdout)} == {
        1: "timed_out",
        2: "succeeded",
        3: "timed_out",
        4: "succeeded",
    }
