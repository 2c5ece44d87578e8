"""The typer commands, in process (CliRunner), with real worker processes."""

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from client.cli import app
from tests.conftest import WriteWorkload
from worker.contracts import Default

runner = CliRunner()


def test_run_writes_results_and_summary(workload: WriteWorkload, tmp_path: Path) -> None:
    path = workload("sleep 0", "echo hello", "sleep 5")
    output = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["run", path, "--workers", "2", "--output", str(output)])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["line"] for r in records) == [1, 2, 3]
    assert all(r["status"] == "succeeded" for r in records)
    assert "done: 3/3 tasks, 3 succeeded, 0 failed" in result.stderr
    assert "tasks/s" in result.stderr
    assert "efficiency" in result.stderr
    assert result.stdout == ""


def test_run_to_stdout_and_exit_1_on_failure(workload: WriteWorkload) -> None:
    path = workload("echo fine", "false")
    result = runner.invoke(app, ["run", path, "-w", "1"])
    assert result.exit_code == 1
    statuses = sorted(json.loads(line)["status"] for line in result.stdout.splitlines())
    assert statuses == ["failed", "succeeded"]


def test_bad_input_exits_2_naming_file_and_line(workload: WriteWorkload, tmp_path: Path) -> None:
    path = workload("sleep 1", "sleep 1.5")
    output = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["run", path, "-o", str(output)])
    assert result.exit_code == 2
    assert f"taskfleet: {path}:2: sleep duration must be a whole number" in result.stderr
    assert not output.exists()  # nothing half-done


def test_usage_errors_exit_2(workload: WriteWorkload) -> None:
    path = workload("sleep 1")
    assert runner.invoke(app, ["run", path, "--workers", "0"]).exit_code == 2
    assert runner.invoke(app, ["run"]).exit_code == 2
    assert runner.invoke(app, ["run", path, "--timeout", "-1"]).exit_code == 2


def test_unwritable_output_exits_2(workload: WriteWorkload, tmp_path: Path) -> None:
    path = workload("sleep 1")
    result = runner.invoke(app, ["run", path, "-o", str(tmp_path / "no" / "such" / "dir.jsonl")])
    assert result.exit_code == 2
    assert "cannot write results" in result.stderr


def test_client_commands_explain_an_unreachable_scheduler(workload: WriteWorkload) -> None:
    path = workload("sleep 1")
    url = "http://127.0.0.1:9"  # the discard port: nothing listens there
    for args in (["submit", path], ["status"], ["results", "abc"], ["cancel", "abc"]):
        result = runner.invoke(app, [*args, "--scheduler", url])
        assert result.exit_code == 2, args
        assert f"cannot reach the scheduler at {url}" in result.stderr


def test_short_or_exposed_tokens_are_refused(tmp_path: Path) -> None:
    journal = ["--journal", str(tmp_path / "j.db")]
    short = runner.invoke(app, ["scheduler", "--token", "s3cret", *journal])
    assert short.exit_code == 2
    assert "at least 16 characters" in short.stderr
    exposed = tmp_path / "token"
    exposed.write_text("a-long-enough-token-here\n")
    exposed.chmod(0o644)
    shared = runner.invoke(app, ["scheduler", "--token-file", str(exposed), *journal])
    assert shared.exit_code == 2
    assert "others may read this token file" in shared.stderr
    half_tls = runner.invoke(app, ["scheduler", "--tls-cert", str(exposed), *journal])
    assert half_tls.exit_code == 2
    assert "--tls-cert and --tls-key go together" in half_tls.stderr


def test_help_shows_every_default_and_no_type_tags() -> None:
    commands = ("run", "scheduler", "submit", "retry", "results", "worker", "bench")
    texts = {
        name: runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}) for name in commands
    }
    for name, shown in texts.items():
        assert shown.exit_code == 0, (name, shown.output)
        for tag in ("<str>", "<int", "<float", "<path>", "<bool>", "--no-"):
            assert tag not in shown.output, (name, tag)
        assert " ." not in shown.output, name  # no text cut out of a help line
        usage = shown.output.splitlines()[0]
        assert "{" not in usage, usage  # arguments as written, not in typer's braces
    assert texts["run"].output.startswith("Usage: taskfleet run [OPTIONS] FILE...\n")
    assert texts["retry"].output.startswith("Usage: taskfleet retry [OPTIONS] JOB\n")
    assert "default: (one per CPU core)" in texts["run"].output
    scheduler = " ".join(texts["scheduler"].output.split())  # however its lines wrap
    assert "default: (~/.local/state/taskfleet/journal.sqlite3)" in scheduler
    worker = texts["worker"].output
    for default in ("(300)", "(60)", "(3600)", "(20)", "(one per CPU)"):
        assert f"default: {default}" in worker
    assert "TASKFLEET_TASK_TIMEOUT" in worker


def test_version() -> None:
    from importlib.metadata import version

    shown = runner.invoke(app, ["--version"])
    assert (shown.exit_code, shown.output) == (0, f"taskfleet {version('taskfleet')}\n")


def test_the_jobs_table_fits_80_columns_with_every_figure_whole() -> None:
    from rich.console import Console

    from client.cli.service import print_jobs

    console = Console(width=80, record=True, file=io.StringIO())
    info = {
        "job": "ab12cd34",
        "state": "cancelled",
        "placement": "hybrid",
        "tasks": 1000000,
        "succeeded": 999000,
        "failed": 12,
        "cancelled": 988,
        "files": ["/home/someone/work/a-long-workload-name.txt", "[red]b.txt"],
        "file_count": 5,
    }
    print_jobs(console, [info])
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    header, first, *rest = text.splitlines()
    assert header.split() == [
        "job", "state", "where", "tasks", "succeeded", "failed", "cancelled", "files",
    ]  # fmt: skip
    assert first.split()[:7] == [
        "ab12cd34",
        "cancelled",
        "hybrid",
        "1000000",
        "999000",
        "12",
        "988",
    ]
    assert "[red]b.txt" in "".join(line.strip() for line in [first, *rest])  # shown as it is


def test_the_clis_bound_on_retries_is_the_schedulers() -> None:
    from client.cli.app import MAX_RETRIES as CLI_MAX_RETRIES
    from scheduler.retries import MAX_RETRIES

    assert CLI_MAX_RETRIES == MAX_RETRIES


def test_the_worker_help_shows_the_workers_own_defaults() -> None:
    result = runner.invoke(app, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option, default in [
        ("--idle-timeout", Default.IDLE_TIMEOUT_SECONDS),
        ("--visibility-timeout", Default.VISIBILITY_TIMEOUT_SECONDS),
        ("--timeout", Default.TASK_TIMEOUT_SECONDS),
        ("--poll-seconds", Default.POLL_SECONDS),
    ]:
        (line,) = [line for line in result.stdout.splitlines() if f"  {option} " in line]
        assert f"default: ({default})" in line


def test_the_default_retention_of_scheduler_and_prune_is_the_journals() -> None:
    # Written out in the CLI, not imported: --help must not load the journal.
    from client.cli.service import DEFAULT_KEEP_DAYS as CLI_KEEP_DAYS
    from scheduler.jobs.retention import DEFAULT_KEEP_DAYS

    assert CLI_KEEP_DAYS == DEFAULT_KEEP_DAYS
