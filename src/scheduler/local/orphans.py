"""The processes a dead worker leaves behind, so its scheduler can tell whether the
command it was starting had begun.

A worker notes that it is about to start a command, then starts it, then notes
its pid. If it dies between the first note and the second, only the process
tree can say whether the command exists: the scheduler asks Linux to make it
the new parent of what its workers leave behind (a "child subreaper"), so a
command that was forked, even one that has already exited, is then its own
child, until it reaps it. A scheduler with no such child knows the command
never began, and runs it elsewhere.

Commands that put processes in the background leave them here too when they
exit first; ``reap`` collects those that have ended, as init would have.
"""

import contextlib
import ctypes
import os
import sys
from collections.abc import Collection

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


def children() -> dict[int, str]:
    """This process's children and their state letter (``Z`` for ended, not reaped)."""
    me = os.getpid()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # "pid (name) state ppid ...": the name may hold spaces and parentheses.
                state, ppid = stat.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue  # it ended while we looked
        if int(ppid) == me:
            found[int(entry.name)] = state
    return found


def orphans(known: Collection[int]) -> list[int]:
    """Children of this process other than ``known`` ones (its workers, their fork
    server): processes left behind by workers that died or commands that exited."""
    return [pid for pid in children() if pid not in known]


def ended_orphans(known: Collection[int]) -> list[int]:
    """The orphans (see ``orphans``) that have ended and wait to be reaped."""
    return [pid for pid, state in children().items() if pid not in known and state == "Z"]


def reap(pids: Collection[int]) -> None:
    """Collect ended processes, so none lingers as a zombie."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
