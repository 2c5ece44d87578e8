"""Reading this process's children from /proc, and which of them can be a command."""

import os
import subprocess
import time

from scheduler.local.orphans import children, started_commands
from worker.local import TICKS_PER_SECOND, boot_ticks


def test_children_have_their_state_session_and_start() -> None:
    before = boot_ticks()
    with subprocess.Popen(["sleep", "30"], start_new_session=True) as process:
        try:
            child = children()[process.pid]
            assert child.state in ("R", "S")
            assert child.session == process.pid
            assert before <= child.started <= boot_ticks()
        finally:
            process.kill()


def test_only_children_started_since_and_in_a_session_of_theirs_or_ours_can_be_commands() -> None:
    older = subprocess.Popen(["sleep", "30"], start_new_session=True)
    time.sleep(3 / TICKS_PER_SECOND)  # its start is a tick or more before the reading
    ticks = boot_ticks()
    leader = subprocess.Popen(["sleep", "30"], start_new_session=True)
    in_ours = subprocess.Popen(["sleep", "30"])
    try:
        assert children()[in_ours.pid].session == os.getsid(0)
        found = set(started_commands(set(), ticks))
        assert found & {older.pid, leader.pid, in_ours.pid} == {leader.pid, in_ours.pid}
        # Known processes (the workers) are never taken.
        assert leader.pid not in started_commands({leader.pid}, ticks)
    finally:
        for process in (older, leader, in_ours):
            process.kill()
            process.wait()
