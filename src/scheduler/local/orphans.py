"""The processes a dead worker leaves behind, so its scheduler can tell whether the
command it was starting had begun.

A worker notes that it is about to start a command, then starts it, then notes
its pid. If it dies between the first note and the second, only the process
tree can say whether the command exists: the scheduler asks Linux to make it
the new parent of what its workers leave behind (a "child subreaper"), so a
command that was forked, even one that has already exited, is then its own
child, until it reaps it. A scheduler with no such child knows the command
never began, and runs it elsewhere; one with such a child ends it, and what it
started, so it cannot run on once its task is reported lost.

Commands that put processes in the background leave them here too when they
exit first; ``reap`` collects those that have ended, as init would have. A
dying worker's command is told from them by when it started and by its
session: the worker notes the clock (``worker.local.boot_ticks``) before it
starts a command, and only an orphan started since then that leads a session
(or has not yet left ours) can be it (``started_commands``).
"""

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Collection
from typing import NamedTuple

#: prctl(2) option: orphaned descendants are re-parented to this process.
PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process the parent of its descendants' orphans; False where the
    system cannot (then a worker that died while starting a command has its
    task reported lost, since it may have run)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


class Child(NamedTuple):
    """What /proc says of a child process."""

    state: str  # Z: ended, not reaped
    session: int  # its session's id: its own pid if it leads one
    started: int  # when, in clock ticks since the machine booted


def children() -> dict[int, Child]:
    """This process's children, by pid."""
    me = os.getpid()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # "pid (name) state ppid pgrp session ... starttime (the 22nd)": the
                # name may hold spaces and parentheses.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == me:
            found[int(entry.name)] = Child(fields[0], int(fields[3]), int(fields[19]))
    return found


def orphans(known: Collection[int]) -> dict[int, Child]:
    """Children of this process other than ``known`` ones (its workers, their fork
    server): processes left behind by workers that died or commands that exited."""
    return {pid: child for pid, child in children().items() if pid not in known}


def ended_orphans(known: Collection[int]) -> list[int]:
    """The orphans (see ``orphans``) that have ended and wait to be reaped."""
    return [pid for pid, child in orphans(known).items() if child.state == "Z"]


def started_commands(known: Collection[int], ticks: int) -> dict[int, Child]:
    """The orphans that can be a command a dead worker began to start at ``ticks``
    (``worker.local.boot_ticks``): started since then, and leading a session of
    their own (a command's) or still in ours (forked, not yet in its session).
    What earlier commands left in the background is in their sessions: not taken
    (unless it made a session of its own in the same clock tick)."""
    ours = os.getsid(0)
    return {
        pid: child
        for pid, child in orphans(known).items()
        if child.started >= ticks and child.session in (pid, ours)
    }


def end(processes: dict[int, Child]) -> None:
    """Kill processes a dead worker left running: one that leads a session (a
    command) with everything it started; one that does not (a command forked but
    not yet in a session of its own, so still in ours) alone."""
    for pid, child in processes.items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if child.session == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def reap(pids: Collection[int]) -> None:
    """Collect ended processes, so none lingers as a zombie."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
