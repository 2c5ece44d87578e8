import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import is_running, needs_root_tools, wait_for
from worker.contracts import TOKEN_VARIABLE
from worker.errors import WorkerConfigError
from worker.execute import (
    MEANWHILE_SECONDS,
    SPAWNING,
    Plan,
    RunningCommand,
    ShellRunner,
    SpawnedCommand,
    TaskRunner,
    TaskUser,
    _poll_ms,
    keep_descriptors_from_commands,
    plan,
    precise_sleep,
    run_sleep,
    scrub_secrets,
    wait_for_exit,
)
from worker.result import OUTPUT_LIMIT_BYTES, Outcome, Status


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


def test_a_sleep_does_not_burn_a_core() -> None:
    # It sleeps in the kernel and watches the clock only for its last moment.
    used = time.process_time()
    precise_sleep(0.3)
    assert time.process_time() - used < 0.05


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
    assert (second.status, second.exit_code, second.error) == (Status.SUCCEEDED, 0, None)
    assert second.stdout == "x"  # nothing left over from the first command


def test_a_command_that_moves_its_outputs_offset_leaves_no_gap_for_the_next(
    shell: ShellRunner,
) -> None:
    # The offset is shared by every command's stdout; writes must still start at 0.
    moved = shell.run(f"{sys.executable} -c 'import os; os.lseek(1, 100, 0)'", timeout=10)
    assert (moved.status, moved.stdout) == (Status.SUCCEEDED, "")
    assert shell.run("printf x", timeout=10).stdout == "x"


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
    assert (outcome.status, outcome.exit_code) == (Status.FAILED, None)
    assert outcome.error == reason.refusal
    # It never ran: it ends as it starts, now.
    assert outcome.started_at == outcome.finished_at
    assert time.time() - 60 < outcome.started_at <= time.time()
    assert outcome.duration_ms == 0.0


def assert_times_agree(outcome: Outcome, before: float) -> None:
    """A record's start, end and duration tell one story: it started after
    ``before``, ended by now, and lasted what its times say, in milliseconds
    rounded to the microsecond."""
    assert outcome.started_at is not None
    assert before <= outcome.started_at <= outcome.finished_at <= time.time()
    assert isinstance(outcome.duration_ms, float)
    assert outcome.duration_ms == round(outcome.duration_ms, 3)
    elapsed_ms = (outcome.finished_at - outcome.started_at) * 1000.0
    assert outcome.duration_ms == pytest.approx(elapsed_ms, abs=0.005)


def test_durations_are_rounded_to_the_microsecond(shell: ShellRunner) -> None:
    before = time.time()
    for outcome in (run_sleep(1), run_sleep(60), shell.run("/bin/sleep 0.06", timeout=10)):
        assert_times_agree(outcome, before)
    assert run_sleep(60).duration_ms >= 60


def test_a_task_runner_sleeps_in_process_and_runs_commands_with_its_time_limit() -> None:
    heard: list[int] = []
    runner = TaskRunner(timeout=1.0, on_command=heard.append)
    try:
        slept = runner.run("sleep 40", plan("sleep 40"))
        assert heard == []  # no process for a sleep
        ran = runner.run("echo hi", plan("echo hi"))
        limited = runner.run("/bin/sleep 5", plan("/bin/sleep 5"))
    finally:
        runner.close()
    assert (slept.status, slept.stdout) == (Status.SUCCEEDED, None)
    assert slept.duration_ms >= 40
    assert (ran.status, ran.stdout) == (Status.SUCCEEDED, "hi\n")
    assert limited.status is Status.TIMED_OUT
    assert limited.error == "killed after the time limit of 1 s"
    # Before each command it hears that one is being started, then its pid.
    assert len(heard) == 4
    assert heard[0::2] == [SPAWNING, SPAWNING]
    assert all(pid > 0 for pid in heard[1::2])


def program_on_path(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A program that succeeds, in ``folder``, put first on this process's PATH."""
    program = folder / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return program


def test_a_program_gone_since_it_was_looked_up_fails_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = program_on_path("vanishing", tmp_path, monkeypatch)
    runner = ShellRunner()
    try:
        assert runner.run("vanishing", timeout=10).status is Status.SUCCEEDED
        program.unlink()  # the worker still knows where it was
        before = time.time()
        gone = runner.run("vanishing", timeout=10)
    finally:
        runner.close()
    assert (gone.status, gone.exit_code, gone.stdout, gone.truncated) == (
        Status.FAILED,
        None,
        None,
        False,
    )
    assert "No such file or directory" in (gone.error or "")
    assert_times_agree(gone, before)


def test_a_task_users_programs_are_found_on_its_own_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = program_on_path("only-on-the-workers-path", tmp_path, monkeypatch)
    user = TaskUser(65534, 65534, "/", {"PATH": "/usr/bin:/bin"})
    as_worker, as_user = ShellRunner(), ShellRunner(user)
    try:
        assert as_worker.argv(program.name) == (str(program), [program.name])
        # Not on the user's PATH: the shell runs the line, and says it is not found.
        assert as_user.argv(program.name)[0] == "/bin/sh"
        assert Path(as_user.argv("ls")[0]).parent in (Path("/usr/bin"), Path("/bin"))
    finally:
        as_worker.close()
        as_user.close()


def test_output_that_is_not_utf8_is_kept_with_replacement_characters(
    shell: ShellRunner,
) -> None:
    outcome = shell.run("printf 'a\\377b'; printf 'c\\376' >&2", timeout=10)
    assert (outcome.stdout, outcome.stderr) == ("a\ufffdb", "c\ufffd")


def test_a_shell_line_runs_as_sh_and_its_errors_say_so(shell: ShellRunner) -> None:
    outcome = shell.run("echo $0; no-such-program-here;", timeout=10)
    assert outcome.stdout == "/bin/sh\n"
    assert (outcome.stderr or "").startswith("/bin/sh:")


def test_a_command_reads_nothing_from_its_workers_stdin(shell: ShellRunner) -> None:
    # The worker's stdin (here a pipe with a line in it, left open) is not the task's.
    read_end, write_end = os.pipe()
    os.write(write_end, b"the worker's own input\n")
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        outcome = shell.run("cat", timeout=2)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert (outcome.status, outcome.stdout) == (Status.SUCCEEDED, "")


def test_killing_with_nothing_running_does_nothing(shell: ShellRunner) -> None:
    shell.kill_current()  # a stop before the first command
    assert shell.run("true", timeout=10).status is Status.SUCCEEDED
    shell.kill_current()  # a stop between commands
    assert shell.current is None


def spawned(arguments: list[str]) -> SpawnedCommand:
    streams = (0, 1, 2)
    return SpawnedCommand(arguments[0], arguments, dict(os.environb), streams)


@pytest.mark.parametrize("start", [subprocess.Popen, spawned], ids=["popen", "posix-spawn"])
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "without-pidfd"])
def test_waiting_for_a_command_ends_as_popen_wait_does(
    pidfd: bool, start: Callable[[list[str]], RunningCommand], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:  # an older kernel: the command's own wait, with a time limit
        monkeypatch.delattr(os, "pidfd_open")
    slow = start(["/bin/sleep", "3"])
    try:
        with pytest.raises(subprocess.TimeoutExpired) as raised:
            wait_for_exit(slow, 0.1)
        assert slow.args == ["/bin/sleep", "3"]
        assert (raised.value.cmd, raised.value.timeout) == (slow.args, 0.1)
        assert slow.poll() is None
    finally:
        os.kill(slow.pid, signal.SIGKILL)
        assert slow.wait() == -signal.SIGKILL
    quick = start(["/bin/sh", "-c", "exit 3"])
    assert wait_for_exit(quick, 10) == 3
    assert quick.poll() == 3  # and again: it has been collected
    assert wait_for_exit(start(["/bin/true"]), None) == 0


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


#: A command that prints the descriptors it has (3: the listing's own).
OPEN_DESCRIPTORS = (
    f"{sys.executable} -c 'import os; print(*sorted(map(int, os.listdir(\"/proc/self/fd\"))))'"
)


@contextlib.contextmanager
def handed_descriptor(fd: int) -> Iterator[None]:
    """``fd`` open and inheritable, as a shell that started this process may leave
    one; whatever was there before is put back."""
    read_end, write_end = os.pipe()
    try:
        saved: int | None = os.dup(fd)
    except OSError:
        saved = None  # nothing was there
    os.dup2(write_end, fd)  # inheritable, as dup2 makes it
    try:
        yield
    finally:
        if saved is None:
            os.close(fd)
        else:
            os.dup2(saved, fd, inheritable=False)
            os.close(saved)
        os.close(read_end)
        os.close(write_end)


def test_a_command_gets_no_descriptor_its_worker_was_handed() -> None:
    # 3: the first past the standard three.
    with handed_descriptor(3):
        runner = ShellRunner()
        try:
            outcome = runner.run(OPEN_DESCRIPTORS, timeout=10)
        finally:
            runner.close()
    # Only the standard three, and the listing's own: not the one it was handed,
    # nor the worker's own (its spools, its /dev/null).
    assert (outcome.status, outcome.stdout) == (Status.SUCCEEDED, "0 1 2 3\n")


def test_descriptors_are_kept_from_commands_past_the_standard_three_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standard = [os.get_inheritable(fd) for fd in (0, 1, 2)]
    keep_descriptors_from_commands()
    assert [os.get_inheritable(fd) for fd in (0, 1, 2)] == standard

    def no_proc(path: str) -> list[str]:
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "listdir", no_proc)
    keep_descriptors_from_commands()  # nothing to go by: nothing done, no error


def test_a_command_hears_of_a_closed_pipe_as_programs_expect(shell: ShellRunner) -> None:
    # Python ignores SIGPIPE; a command must not: `yes` ends quietly by the signal
    # when `head` has what it needs, instead of complaining of a write error.
    outcome = shell.run("yes | head -n 1", timeout=10)
    assert (outcome.status, outcome.stdout, outcome.stderr) == (Status.SUCCEEDED, "y\n", "")


def test_no_task_inherits_the_service_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, "a-secret-token")
    monkeypatch.setenv("TASKFLEET_OTHER", "kept")
    scrub_secrets()
    assert TOKEN_VARIABLE not in os.environ
    scrub_secrets()  # again, with nothing to drop
    runner = ShellRunner()
    try:
        seen = runner.run("env", timeout=10).stdout or ""
    finally:
        runner.close()
    assert "a-secret-token" not in seen
    assert "TASKFLEET_OTHER=kept" in seen


class Accounts:
    """Stand-in for the system's accounts: ``name`` with ``uid`` and ``home``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, worker_is_root: bool = True) -> None:
        self.entries: dict[str, pwd.struct_passwd] = {}
        monkeypatch.setattr(pwd, "getpwnam", self.getpwnam)
        monkeypatch.setattr(os, "geteuid", lambda: 0 if worker_is_root else 1000)

    def add(self, name: str, uid: int, home: Path | str) -> None:
        fields = (name, "x", uid, uid + 100, "", str(home), "/bin/bash")
        self.entries[name] = pwd.struct_passwd(fields)

    def getpwnam(self, name: str) -> pwd.struct_passwd:
        return self.entries[name]


def test_a_task_user_gets_a_clean_environment_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = Accounts(monkeypatch)
    accounts.add("builder", 1, tmp_path)
    accounts.add("homeless", 2, tmp_path / "gone")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    assert TaskUser.named("builder") == TaskUser(
        1,
        101,
        str(tmp_path),
        {
            "HOME": str(tmp_path),
            "USER": "builder",
            "LOGNAME": "builder",
            "SHELL": "/bin/sh",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "de_DE.UTF-8",
        },
    )
    monkeypatch.delenv("LANG")
    homeless = TaskUser.named("homeless")
    assert (homeless.home, homeless.environment["HOME"]) == ("/", "/")  # its home is missing
    assert homeless.environment["LANG"] == "C.UTF-8"


def test_a_task_user_must_exist_and_not_be_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = Accounts(monkeypatch)
    accounts.add("root", 0, tmp_path)
    with pytest.raises(WorkerConfigError, match=r"^--task-user: no user 'nobody-here' on this"):
        TaskUser.named("nobody-here")
    with pytest.raises(WorkerConfigError, match=r"^--task-user: 'root' is root; tasks need their"):
        TaskUser.named("root")


def test_only_a_worker_run_as_root_can_switch_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Accounts(monkeypatch, worker_is_root=False).add("builder", 1, tmp_path)
    with pytest.raises(WorkerConfigError, match=r"^--task-user: only a worker run as root can"):
        TaskUser.named("builder")


@pytest.mark.parametrize("timeout", [20.0, None], ids=["time-limit", "no-time-limit"])
def test_a_long_commands_wait_calls_meanwhile_while_it_runs(
    tmp_path: Path, timeout: float | None
) -> None:
    # The command runs until something is done meanwhile.
    mark = tmp_path / "meanwhile"
    calls: list[float] = []

    def meanwhile() -> None:
        calls.append(time.monotonic())
        mark.touch()

    line = f"while [ ! -e {mark} ]; do sleep 0.05; done"
    runner = TaskRunner(timeout)
    try:
        waits = runner.run(line, plan(line), meanwhile)
    finally:
        runner.close()
    assert waits.status is Status.SUCCEEDED
    assert len(calls) == 1


def test_a_time_limit_holds_with_calls_meanwhile(shell: ShellRunner) -> None:
    limited = shell.run("/bin/sleep 5", timeout=1.2, meanwhile=lambda: None)
    assert limited.status is Status.TIMED_OUT
    assert 1.2 <= limited.duration_ms / 1000 < 10


def test_how_long_a_wait_polls() -> None:
    now = time.monotonic()
    assert _poll_ms(now, None, meanwhile=False) is None  # until the command exits
    assert _poll_ms(now, None, meanwhile=True) == MEANWHILE_SECONDS * 1000
    assert (_poll_ms(now, 0.2, meanwhile=True) or 1000) <= 200  # the time limit comes first
    assert _poll_ms(now - 30, 10, meanwhile=False) == 0  # past it: no wait at all


@pytest.fixture
def as_nobody() -> Iterator[TaskRunner]:
    """A runner whose commands run as the user every Linux system has (root only)."""
    needs_root_tools()
    runner = TaskRunner(timeout=10, user=TaskUser.named("nobody"))
    yield runner
    runner.close()


def test_a_task_users_command_has_streams_of_its_own(as_nobody: TaskRunner) -> None:
    # The worker's stdin (a pipe with a line in it) is not the command's: it reads
    # nothing, and cannot write there either.
    line = "cat; echo into-its-input >&0; echo out; echo err >&2"
    read_end, write_end = os.pipe()
    os.write(write_end, b"the worker's own input\n")
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        outcome = as_nobody.run(line, plan(line))
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert outcome.stdout == "out\n"
    refused, err = (outcome.stderr or "").splitlines()
    assert (refused.startswith("/bin/sh: 1: echo:"), err) == (True, "err")  # read-only


def test_a_task_users_command_is_killed_with_what_it_started_at_the_time_limit() -> None:
    needs_root_tools()
    folder = Path(tempfile.mkdtemp())  # nobody may write here
    folder.chmod(0o777)
    pidfile = folder / "pid"
    runner = TaskRunner(timeout=0.5, user=TaskUser.named("nobody"))
    line = f"/bin/sleep 30 & echo $! > {pidfile}; wait"
    began = time.monotonic()
    try:
        outcome = runner.run(line, plan(line))
    finally:
        runner.close()
    assert time.monotonic() - began < 10
    assert outcome.status is Status.TIMED_OUT
    background = int(pidfile.read_text())
    shutil.rmtree(folder)
    wait_for(lambda: not is_running(background))  # it died with its session


def test_a_task_user_keeps_no_group_of_its_workers(as_nobody: TaskRunner) -> None:
    own = os.getgroups()
    os.setgroups([*own, 4242])  # a worker in a group of its own
    try:
        outcome = as_nobody.run("id -G", plan("id -G"))
    finally:
        os.setgroups(own)
    assert (outcome.stdout or "").split() == [str(TaskUser.named("nobody").gid)]


def test_a_sleep_longer_than_the_time_limit_times_out_at_the_limit() -> None:
    runner = TaskRunner(timeout=0.2)
    try:
        began = time.perf_counter()
        limited = runner.run("sleep 5000", plan("sleep 5000"))
        took = time.perf_counter() - began
        within = runner.run("sleep 100", plan("sleep 100"))
    finally:
        runner.close()
    assert limited.status is Status.TIMED_OUT
    assert limited.error == "stopped at the time limit of 0.2 s"
    assert limited.duration_ms >= 200
    assert took < 4  # not the whole 5 s
    assert within.status is Status.SUCCEEDED


def test_a_command_runs_in_the_directory_it_is_given_and_the_worker_stays_put(
    shell: ShellRunner, tmp_path: Path
) -> None:
    (tmp_path / "run.sh").write_text("pwd\n")
    (tmp_path / "run.sh").chmod(0o755)
    here = os.getcwd()
    plain = shell.run("pwd", None, cwd=str(tmp_path))  # started without the shell
    relative = shell.run("./run.sh", None, cwd=str(tmp_path))  # the task directory's ./
    through_shell = shell.run("pwd && echo x > made", None, cwd=str(tmp_path))
    assert [plain.stdout, relative.stdout, through_shell.stdout] == [f"{tmp_path}\n"] * 3
    assert (tmp_path / "made").read_text() == "x\n"
    assert os.getcwd() == here
