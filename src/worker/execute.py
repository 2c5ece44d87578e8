"""Running one task: a built-in sleep, or a shell command with a time limit.

Shell commands run in their own session (process group) so a time limit or a
stop can kill the whole tree they started, and their output goes to a spool
file so a command that prints gigabytes costs disk, not memory. A line with
no shell syntax at all (words of plain characters, the first one a program on
the PATH and not a shell builtin) is started without the shell: the same
program with the same arguments, a fifth less time for a quick command.
Commands are started with ``os.posix_spawn``: some 50 us less a command than
``subprocess.Popen``, of the 850 us a quick one took on the machines measured;
as another user, which posix_spawn cannot do, with Popen.
"""

import contextlib
import fcntl
import io
import math
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import msgspec

from worker.contracts import TOKEN_VARIABLE
from worker.environ_block import erase_value
from worker.errors import TaskLineError, WorkerConfigError
from worker.result import OUTPUT_LIMIT_BYTES, Outcome, Status
from worker.task import check_line

#: Environment variables that hold secrets: no task inherits them.
SECRET_VARIABLES = (TOKEN_VARIABLE,)

#: How long before a sleep's deadline the worker stops trusting the kernel
#: timer and watches the clock instead. Timer wake-ups overshoot by 0.1-0.2 ms
#: on the machines measured, which alone would cost a 10 ms task 1-2 % of its
#: time. While it watches, the worker yields the core at every look, so many
#: workers waiting on one core do not hold each other past their deadlines.
SLEEP_SPIN_SECONDS = 0.0005


#: A line the shell would only split on spaces: words of characters that mean
#: nothing to it (no quotes, $, globs, ~, redirections, ;, &, |, #, =, \\).
PLAIN_LINE = re.compile(r"[A-Za-z0-9_./@%+:,-]+( +[A-Za-z0-9_./@%+=:,-]+)*")

#: Words the shell runs itself, differently from a program of the same name
#: (echo -e, kill's job ids, ...) or with no program at all (cd, exit, ...):
#: lines starting with one go through the shell. (true and false are the same
#: either way.)
SHELL_WORDS = frozenset(
    [
        *("alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec"),
        *("exit", "export", "fc", "fg", "getopts", "hash", "jobs", "kill", "let", "local"),
        *("printf", "read", "readonly", "return", "set", "shift", "test", "times", "trap"),
        *("type", "ulimit", "umask", "unalias", "unset", "wait", ".", ":"),
    ]
)

#: Programs looked up per worker, at most (the lookups are cached).
PROGRAM_CACHE_SIZE = 1024


def scrub_secrets() -> None:
    """Drop secret variables from this process's environment, so that no task
    (nor any process started from here) inherits them, and erase their values
    from the environment this process was started with, which any process of
    the same user could otherwise read in /proc/PID/environ."""
    for name in SECRET_VARIABLES:
        erase_value(name)
        os.environ.pop(name, None)


class TaskUser(NamedTuple):
    """The unprivileged account shell tasks run as, apart from their worker.

    On a fleet instance the worker holds the instance's role; a task run as
    the worker could take its credentials. Run as this user, a task starts
    with a clean environment, in the user's home, with no capability of the
    worker's (the kernel drops them when root switches to another user).
    """

    uid: int
    gid: int
    home: str
    environment: dict[str, str]

    @classmethod
    def named(cls, name: str) -> "TaskUser":
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise WorkerConfigError(f"--task-user: no user {name!r} on this machine") from None
        if entry.pw_uid == 0:
            raise WorkerConfigError(f"--task-user: {name!r} is root; tasks need their own user")
        if os.geteuid() != 0:
            raise WorkerConfigError("--task-user: only a worker run as root can switch users")
        home = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"
        environment = {
            "HOME": home,
            "USER": name,
            "LOGNAME": name,
            "SHELL": "/bin/sh",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        return cls(entry.pw_uid, entry.pw_gid, home, environment)


def precise_sleep(seconds: float) -> None:
    """Sleep for ``seconds``, waking as close after the deadline as the clock allows."""
    deadline = time.perf_counter() + seconds
    coarse = seconds - SLEEP_SPIN_SECONDS
    if coarse > 0:
        time.sleep(coarse)
    while time.perf_counter() < deadline:
        os.sched_yield()  # let other workers whose deadlines came first have the core


#: What ``on_command`` hears just before a command is started: from here on it
#: may be running, though its pid is not known yet.
SPAWNING = -1


class RunningCommand(Protocol):
    """What the runner needs of a started command: ``subprocess.Popen`` has it all."""

    @property
    def args(self) -> Any: ...  # what it was started with, as Popen keeps it

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


#: Signals a command starts with at their default action, as ``Popen`` does:
#: Python ignores SIGPIPE, and a program would never hear of a closed pipe.
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


#: posix_spawn has no working directory of its own (Python offers no chdir
#: action): a command started in one is started while this process is there,
#: one at a time, and the process goes back to where it was.
_CHDIR = threading.Lock()


class SpawnedCommand:
    """A command started by ``os.posix_spawn`` in a session of its own, with its
    standard streams from ``streams`` (input, output, error), in ``cwd`` (this
    process's if None): the part of Popen's interface the runner uses. Popen
    does more work in Python for each command (and cannot start a session
    through posix_spawn)."""

    def __init__(
        self,
        program: str,
        arguments: list[str],
        environment: dict[bytes, bytes],
        streams: tuple[int, int, int],
        cwd: str | None = None,
    ) -> None:
        self.args = arguments
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(streams)]
        if cwd is None:
            self.pid = self._spawn(program, arguments, environment, actions)
        else:
            with _CHDIR:
                back = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.chdir(cwd)
                    self.pid = self._spawn(program, arguments, environment, actions)
                finally:
                    os.fchdir(back)
                    os.close(back)
        self.returncode: int | None = None

    @staticmethod
    def _spawn(
        program: str,
        arguments: list[str],
        environment: dict[bytes, bytes],
        actions: list[tuple[int, int, int]],
    ) -> int:
        return os.posix_spawn(
            program,
            arguments,
            environment,
            file_actions=actions,
            setsigdef=RESTORED_SIGNALS,
            setsid=True,
        )

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None:  # only without a pidfd (before Linux 5.3): poll
            deadline = time.monotonic() + timeout
            while self.poll() is None:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                time.sleep(0.001)
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def keep_descriptors_from_commands() -> None:
    """Mark every descriptor this process was given, past 0-2, close-on-exec: what
    Popen's ``close_fds`` does for each command, done once for posix_spawn (the
    ones Python opens are close-on-exec already)."""
    with contextlib.suppress(FileNotFoundError):  # no /proc: nothing to go by
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own, closed by now
                if int(name) > 2:
                    os.set_inheritable(int(name), False)


class ShellRunner:
    """Runs shell commands one at a time, reusing two spool files for their output.

    With a ``user``, each command runs as that user (see TaskUser).
    ``on_command`` hears ``SPAWNING`` just before each command is started, and
    its pid (and process group) once it has been.
    """

    def __init__(
        self, user: TaskUser | None = None, on_command: Callable[[int], None] | None = None
    ) -> None:
        self.user = user
        self.on_command = on_command
        self._search_path = (user.environment if user else os.environ).get("PATH", os.defpath)
        self._programs: dict[str, str | None] = {}
        self._stdout = _spool()
        self._stderr = _spool()
        self._stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.current: RunningCommand | None = None
        if user is None:
            keep_descriptors_from_commands()
        # The environment commands get: this process's, as it is now. A copy, as
        # bytes: posix_spawn takes 35 us to read os.environ itself.
        self._environment = dict(os.environb)

    def close(self) -> None:
        self._stdout.close()
        self._stderr.close()
        os.close(self._stdin)

    def kill_current(self) -> None:
        """Kill the running command and everything it started (used on stop)."""
        if self.current is not None and self.current.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.current.pid, signal.SIGKILL)

    def argv(self, command: str) -> tuple[str, list[str]]:
        """What to start for a command, and its arguments (the first its name, as the
        shell gives it): the program itself when the line is plain words and its
        program is found, else the shell (which then also says why a program is
        missing, exit 127, as it would)."""
        if PLAIN_LINE.fullmatch(command):
            words = command.split()
            # A relative path (./x) is the task directory's, which the lookup
            # here cannot see: the shell finds it there.
            if words[0] not in SHELL_WORDS and ("/" not in words[0] or words[0][0] == "/"):
                program = self._program(words[0])
                if program is not None:
                    return program, words
        return "/bin/sh", ["/bin/sh", "-c", command]

    def _program(self, name: str) -> str | None:
        if name not in self._programs:
            if len(self._programs) >= PROGRAM_CACHE_SIZE:
                self._programs.clear()
            self._programs[name] = shutil.which(name, path=self._search_path)
        return self._programs[name]

    def _start(self, program: str, arguments: list[str], cwd: str | None = None) -> RunningCommand:
        streams = (self._stdin, self._stdout.fileno(), self._stderr.fileno())
        if self.user is None:
            return SpawnedCommand(program, arguments, self._environment, streams, cwd)
        return subprocess.Popen(
            arguments,
            executable=program,
            stdin=streams[0],
            stdout=streams[1],
            stderr=streams[2],
            start_new_session=True,
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[],
            env=self.user.environment,
            cwd=cwd or self.user.home,
        )

    def run(
        self,
        command: str,
        timeout: float | None,
        meanwhile: Callable[[], None] | None = None,
        cwd: str | None = None,
    ) -> Outcome:
        """Run a command to its end or its time limit, in ``cwd`` if given;
        ``meanwhile`` is called every MEANWHILE_SECONDS while it runs (see
        ``wait_for_exit``)."""
        started_at = time.time()
        began = time.perf_counter()
        program, arguments = self.argv(command)
        if self.on_command is not None:
            self.on_command(SPAWNING)
        try:
            self.current = self._start(program, arguments, cwd)
        except OSError as start_error:
            return _finished(Status.FAILED, None, started_at, began, error=str(start_error))
        if self.on_command is not None:
            self.on_command(self.current.pid)
        try:
            exit_code: int | None = wait_for_exit(self.current, timeout, meanwhile)
            status = Status.SUCCEEDED if exit_code == 0 else Status.FAILED
            error = None if exit_code == 0 else f"exit code {exit_code}"
        except subprocess.TimeoutExpired:
            self.kill_current()
            self.current.wait()
            exit_code = None
            status = Status.TIMED_OUT
            error = f"killed after the time limit of {timeout:g} s"
        finally:
            self.current = None
        stdout, cut_out = _read_spool(self._stdout.fileno())
        stderr, cut_err = _read_spool(self._stderr.fileno())
        return _finished(
            status,
            exit_code,
            started_at,
            began,
            stdout=stdout,
            stderr=stderr,
            truncated=cut_out or cut_err,
            error=error,
        )


def wait_for_exit(
    process: RunningCommand,
    timeout: float | None,
    meanwhile: Callable[[], None] | None = None,
) -> int:
    """The process's exit code, once it exits; ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds. ``Popen.wait(timeout)`` polls with sleeps of 0.5 ms and
    more, which was most of what a quick command cost; a pidfd wakes this at once.

    ``meanwhile`` is called every MEANWHILE_SECONDS while the process runs (a
    worker sends what finished before a long command; not on kernels before
    Linux 5.3, which have no pidfd)."""
    if timeout is None and meanwhile is None:
        return process.wait()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux 5.3+: poll as subprocess does
        return process.wait(timeout)
    began = time.monotonic()
    try:
        watch = select.poll()
        watch.register(pidfd, select.POLLIN)
        while not watch.poll(_poll_ms(began, timeout, meanwhile is not None)):
            if timeout is not None and time.monotonic() - began >= timeout:
                raise subprocess.TimeoutExpired(process.args, timeout)
            if meanwhile is not None:
                meanwhile()
    finally:
        os.close(pidfd)
    return process.wait()


#: How often ``wait_for_exit`` calls its ``meanwhile`` while a command runs.
MEANWHILE_SECONDS = 0.5


def _poll_ms(began: float, timeout: float | None, meanwhile: bool) -> float | None:
    """How long one poll may wait, in milliseconds (None: until the process exits)."""
    wait = MEANWHILE_SECONDS if meanwhile else math.inf
    if timeout is not None:
        wait = min(wait, max(0.0, began + timeout - time.monotonic()))
    return None if wait == math.inf else wait * 1000


def _spool() -> "io.FileIO":
    """A file for commands' output, read and emptied through its descriptor.
    Appending: what a command writes goes to the end, however far the offset it
    shares with the last command had moved, so emptying it needs no seek."""
    spool = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - closed in close()
    flags = fcntl.fcntl(spool.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(spool.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
    return spool


def _read_spool(spool: int) -> tuple[str, bool]:
    """A spool's text, up to the output limit, and whether it held more; it is
    emptied for the next command. (One system call when the command wrote
    nothing: each costs a few microseconds just after a command ran.)"""
    kept = os.pread(spool, OUTPUT_LIMIT_BYTES + 1, 0)
    if kept:
        os.ftruncate(spool, 0)
    cut = len(kept) > OUTPUT_LIMIT_BYTES
    return kept[:OUTPUT_LIMIT_BYTES].decode("utf-8", errors="replace"), cut


def _finished(
    status: Status,
    exit_code: int | None,
    started_at: float,
    began: float,
    *,
    stdout: str | None = None,
    stderr: str | None = None,
    truncated: bool = False,
    error: str | None = None,
) -> Outcome:
    duration = time.perf_counter() - began
    return Outcome(
        status,
        exit_code,
        started_at,
        started_at + duration,
        round(duration * 1000.0, 3),
        stdout,
        stderr,
        truncated,
        error,
    )


def run_sleep(milliseconds: int) -> Outcome:
    """Run a built-in ``sleep N`` task."""
    started_at = time.time()
    began = time.perf_counter()
    if milliseconds:
        precise_sleep(milliseconds / 1000.0)
    duration = time.perf_counter() - began
    return Outcome(
        Status.SUCCEEDED, 0, started_at, started_at + duration, round(duration * 1000.0, 3)
    )


def sleep_timed_out(timeout: float) -> Outcome:
    """A built-in sleep longer than the time limit: it sleeps the limit and times
    out, as a command would."""
    outcome = run_sleep(round(timeout * 1000.0))
    error = f"stopped at the time limit of {timeout:g} s"
    return msgspec.structs.replace(outcome, status=Status.TIMED_OUT, exit_code=None, error=error)


class Plan(NamedTuple):
    """What running a task line means: a built-in sleep, a shell command, or
    nothing at all (the line cannot run, and why)."""

    sleep_ms: int | None  # a built-in sleep of this many milliseconds
    refusal: str | None = None  # why the line cannot run

    @property
    def is_command(self) -> bool:
        return self.sleep_ms is None and self.refusal is None


def plan(text: str) -> Plan:
    """How a task line runs (parsed once per distinct line of a chunk)."""
    try:
        return Plan(check_line(text))
    except TaskLineError as error:
        return Plan(None, f"invalid task: {error}")


class TaskRunner:
    """Runs task lines: sleeps in process, everything else through the shell."""

    def __init__(
        self,
        timeout: float | None,
        user: TaskUser | None = None,
        on_command: Callable[[int], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self.shell = ShellRunner(user, on_command)

    def run(
        self,
        text: str,
        planned: Plan,
        meanwhile: Callable[[], None] | None = None,
        cwd: str | None = None,
    ) -> Outcome:
        """Run one task line, given ``plan(text)``, a command in ``cwd`` if given;
        ``meanwhile`` is called every MEANWHILE_SECONDS while a command runs."""
        if planned.sleep_ms is not None:
            if self.timeout is not None and planned.sleep_ms > self.timeout * 1000.0:
                return sleep_timed_out(self.timeout)
            return run_sleep(planned.sleep_ms)
        if planned.refusal is not None:
            now = time.time()
            return Outcome(Status.FAILED, None, now, now, 0.0, error=planned.refusal)
        return self.shell.run(text, self.timeout, meanwhile, cwd)

    def close(self) -> None:
        self.shell.close()
