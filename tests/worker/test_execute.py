import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import is_running
from worker.execute import Plan, ShellRunner, TaskRunner, plan, run_sleep
from worker.result import OUTPUT_LIMIT_BYTES, Status


def test_sleep_lasts_at_least_its_duration() -> None:
    began = time.perf_counter()
    outcome = run_sleep(30)
    elapsed = time.perf_counter() - began
    assert outcome.status is Status.SUCCEEDED
    assert outcome.exit_code == 0
    assert elapsed >= 0.030
    assert outcome.duration_ms >= 30.0
    assert outcome.started_at is not None
    assert outcome.finished_at >= outcome.started_at + 0.030


def test_sleep_zero_does_not_sleep() -> None:
    outcome = run_sleep(0)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.duration_ms < 5.0


@pytest.fixture
def shell() -> Iterator[ShellRunner]:
    runner = ShellRunner()
    yield runner
    runner.close()


def test_shell_command_captures_output_and_exit_code(shell: ShellRunner) -> None:
    outcome = shell.run("echo out; echo err >&2; exit 4", timeout=10)
    assert outcome.status is Status.FAILED
    assert outcome.exit_code == 4
    assert outcome.stdout == "out\n"
    assert outcome.stderr == "err\n"
    assert outcome.error == "exit code 4"
    assert outcome.truncated is False


def test_shell_success_and_spool_reuse(shell: ShellRunner) -> None:
    assert shell.run("printf long-output", timeout=10).stdout == "long-output"
    second = shell.run("printf x", timeout=10)
    assert second.status is Status.SUCCEEDED
    assert second.stdout == "x"  # nothing left over from the first command


def test_output_is_cut_to_the_limit(shell: ShellRunner) -> None:
    outcome = shell.run(f"head -c {OUTPUT_LIMIT_BYTES * 3} /dev/zero | tr '\\0' a", timeout=10)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.stdout is not None
    assert len(outcome.stdout) == OUTPUT_LIMIT_BYTES
    assert outcome.truncated is True


def test_output_of_exactly_the_limit_is_whole(shell: ShellRunner) -> None:
    outcome = shell.run(f"head -c {OUTPUT_LIMIT_BYTES} /dev/zero | tr '\\0' a", timeout=10)
    assert outcome.stdout is not None
    assert len(outcome.stdout) == OUTPUT_LIMIT_BYTES
    assert outcome.truncated is False


def test_stderr_past_the_limit_is_cut_and_says_so(shell: ShellRunner) -> None:
    command = f"echo out; head -c {OUTPUT_LIMIT_BYTES + 1} /dev/zero | tr '\\0' e >&2"
    outcome = shell.run(command, timeout=10)
    assert (outcome.stdout, outcome.truncated) == ("out\n", True)
    assert outcome.stderr == "e" * OUTPUT_LIMIT_BYTES


def test_time_limit_kills_the_whole_process_group(shell: ShellRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    began = time.monotonic()
    outcome = shell.run(f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.5)
    assert time.monotonic() - began < 10
    assert outcome.status is Status.TIMED_OUT
    assert outcome.exit_code is None
    assert outcome.error is not None
    assert "time limit" in outcome.error
    background = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while is_running(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(background)  # the grandchild died with its group


def test_a_command_that_cannot_start_fails(shell: ShellRunner) -> None:
    outcome = shell.run("/nonexistent/program", timeout=10)
    assert outcome.status is Status.FAILED
    assert outcome.exit_code == 127


def test_plan_and_runner_report_invalid_lines_as_failed() -> None:
    assert plan("sleep 5") == Plan(5)
    assert plan("echo x").is_command
    reason = plan("sleep -3")
    assert reason.sleep_ms is None
    assert not reason.is_command
    assert (reason.refusal or "").startswith("invalid task:")
    runner = TaskRunner(timeout=None)
    try:
        outcome = runner.run("sleep -3", reason)
    finally:
        runner.close()
    assert outcome.status is Status.FAILED
    assert outcome.error == reason.refusal


def test_durations_are_rounded_to_the_microsecond(shell: ShellRunner) -> None:
    for outcome in (run_sleep(1), shell.run("true", timeout=10)):
        assert outcome.duration_ms == round(outcome.duration_ms, 3)


@pytest.mark.parametrize(
    ("line", "direct"),
    [
        ("true", True),
        ("ls -la /tmp", True),
        ("dd if=/dev/null of=/dev/null", True),
        ("echo -e hello", False),  # the shell's echo differs from /bin/echo
        ("A=1 env", False),  # an assignment
        ("ls ~", False),  # tilde expansion
        ("ls *.txt", False),  # a glob
        ("echo $HOME", False),
        ("cd /tmp", False),  # a builtin with no program
        ("no-such-program-here", False),  # the shell says exit 127, as usual
        ("true; false", False),
    ],
)
def test_plain_lines_run_without_the_shell(line: str, direct: bool) -> None:
    runner = ShellRunner()
    try:
        program, argv = runner.argv(line)
    finally:
        runner.close()
    assert (program != "/bin/sh") == direct
    if direct:
        assert argv == line.split()
        assert Path(program).name == argv[0]


def test_a_program_run_without_the_shell_behaves_as_with_it(tmp_path: Path) -> None:
    runner = ShellRunner()
    try:
        direct = runner.run(f"ls {tmp_path} /no/such/path", timeout=10)
        through_shell = runner.run(f"ls {tmp_path} /no/such/path;", timeout=10)
        missing = runner.run("no-such-program-here", timeout=10)
    finally:
        runner.close()
    assert (direct.exit_code, direct.stdout, direct.stderr) == (
        through_shell.exit_code,
        through_shell.stdout,
        through_shell.stderr,
    )
    assert direct.exit_code == 2
    assert (missing.exit_code, missing.status) == (127, Status.FAILED)
    assert "not found" in (missing.stderr or "")
