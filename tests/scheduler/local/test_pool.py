"""The pool with real worker processes."""

import json
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.context import ForkContext
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import PoolError
from scheduler.local import pool as pool_module
from scheduler.local.orphans import children
from scheduler.local.pool import LocalPool, WorkerLost
from tests.conftest import is_running, wait_for
from worker import execute
from worker.execute import SpawnedCommand
from worker.local import Chunk, ChunkReport
from worker.task_log import MAX_CHUNK_TASKS
from worker.workload import TaskBatch


@pytest.fixture
def pool() -> Iterator[LocalPool]:
    with LocalPool(workers=2, timeout=30) as started:
        yield started


def chunk(chunk_id: int, *texts: str) -> Chunk:
    return Chunk(
        chunk_id, "job", 1, "w.txt", TaskBatch(list(range(1, len(texts) + 1)), list(texts))
    )


def collect(
    pool: LocalPool, until: int, timeout: float = 30
) -> list[tuple[Chunk, ChunkReport] | WorkerLost]:
    events: list[tuple[Chunk, ChunkReport] | WorkerLost] = []
    deadline = time.monotonic() + timeout
    while len(events) < until and time.monotonic() < deadline:
        events.extend(pool.wait(0.2))
    return events


def test_chunks_run_on_the_worker_they_were_given_to(pool: LocalPool) -> None:
    pool.assign("local-1", chunk(1, "sleep 0", "echo one"))
    pool.assign("local-2", chunk(2, "echo two"))
    assert pool.load() == {"local-1": 1, "local-2": 1}
    events = collect(pool, until=2)
    by_chunk = {e[0].chunk_id: e[1] for e in events if not isinstance(e, WorkerLost)}
    assert set(by_chunk) == {1, 2}
    assert json.loads(by_chunk[2].records)["worker"] == "local-2"
    assert pool.load() == {"local-1": 0, "local-2": 0}


def test_a_dead_worker_is_replaced_and_its_chunks_accounted_for(pool: LocalPool) -> None:
    # The first chunk kills its own worker; the second waits behind it, unstarted.
    pool.assign("local-1", chunk(1, "sleep 0", "kill -9 $PPID", "sleep 0"))
    pool.assign("local-1", chunk(2, "sleep 0"))
    events = collect(pool, until=1)
    lost = [event for event in events if isinstance(event, WorkerLost)]
    assert len(lost) == 1
    assert lost[0].worker == "local-1"
    assert lost[0].exit_code == -signal.SIGKILL
    # The sleep before the kill finished: reported from the worker's task log.
    ((done, progress),) = lost[0].finished
    assert (done.chunk_id, progress.first, progress.size, progress.done) == (1, 0, 1, False)
    assert json.loads(progress.records)["status"] == "succeeded"
    # The killer was in hand; the sleep after it, and chunk 2, never started.
    (in_hand,) = lost[0].in_hand
    assert (in_hand.chunk_id, in_hand.tasks.lines) == (1, [2])
    assert [(c.chunk_id, c.tasks.lines) for c in lost[0].unstarted] == [(1, [3]), (2, [1])]
    assert sorted(pool.load()) == ["local-2", "local-3"]
    pool.assign("local-3", chunk(3, "echo again"))
    (event,) = collect(pool, until=1)
    assert not isinstance(event, WorkerLost)


def test_a_chunk_begun_while_the_last_report_waits_is_not_given_back(pool: LocalPool) -> None:
    # Chunk 1's report (megabytes) outgrows the pipe's socket buffers while
    # nobody reads it, so it is still on its way when chunk 2 starts and kills
    # the worker. Chunk 2 had started; only chunk 3 may run again.
    pool.assign("local-1", chunk(1, *["sleep 0"] * MAX_CHUNK_TASKS))
    pool.assign("local-1", chunk(2, "kill -9 $PPID"))
    pool.assign("local-1", chunk(3, "echo three"))
    worker = pool._workers["local-1"].process
    worker.join(30)
    assert worker.exitcode == -signal.SIGKILL
    events = collect(pool, until=1)
    lost = [event for event in events if isinstance(event, WorkerLost)]
    assert len(lost) == 1
    # Chunk 1 finished: from its report if it reached the pipe whole, else from
    # the task log; once either way.
    reports = [e for e in events if not isinstance(e, WorkerLost)] + lost[0].finished
    assert sum(p.size for c, p in reports if c.chunk_id == 1) == MAX_CHUNK_TASKS
    assert [(c.chunk_id, c.tasks.lines) for c in lost[0].in_hand] == [(2, [1])]
    assert [c.chunk_id for c in lost[0].unstarted] == [3]


def test_stopping_at_once_kills_running_commands(tmp_path: Path) -> None:
    pidfile = tmp_path / "command.pid"
    with LocalPool(workers=1, timeout=None) as pool:
        # A real command (not a built-in sleep), in a session of its own.
        pool.assign("local-1", chunk(1, f"echo $$ > {pidfile}; exec /bin/sleep 60"))
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        command = int(pidfile.read_text())
        pids = [w.process.pid for w in pool._workers.values()]
        began = time.monotonic()
        pool.stop(graceful=False)
        assert time.monotonic() - began < 10
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    wait_for(lambda: not is_running(command), timeout=10)  # the command too, not orphaned


def test_stopping_at_once_reports_what_finished_and_what_was_cut_off(tmp_path: Path) -> None:
    marker = tmp_path / "second-done"
    texts = ["echo a", f"echo b; touch {marker}", "/bin/sleep 30", "echo d"]
    with LocalPool(workers=1, timeout=None) as pool:
        pool.assign("local-1", chunk(1, *texts))
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)  # into the long one
        (stopped,) = pool.stop(graceful=False)
    records = [json.loads(line) for _, p in stopped.finished for line in p.records.splitlines()]
    assert [(r["line"], r["stdout"]) for r in records] == [(1, "a\n"), (2, "b\n")]
    assert [c.tasks.lines for c in stopped.in_hand] == [[3]]
    assert [c.tasks.lines for c in stopped.unstarted] == [[4]]


def test_a_chunk_larger_than_a_worker_can_account_for_is_refused(pool: LocalPool) -> None:
    with pytest.raises(PoolError, match="at most 4096 tasks"):
        pool.assign("local-1", chunk(1, *["sleep 0"] * (MAX_CHUNK_TASKS + 1)))


def die_while_starting(*, after_fork: bool, at_start: int = 1) -> type[SpawnedCommand]:
    """A command start whose worker is SIGKILLed while it starts its ``at_start``-th
    command: before the fork, or after it (the command then exists; its pid never
    reached the pool). The commands before it start as usual."""

    class Dying(SpawnedCommand):
        starts = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            Dying.starts += 1
            if Dying.starts < at_start or after_fork:
                super().__init__(*args, **kwargs)
            if Dying.starts == at_start:
                os.kill(os.getpid(), signal.SIGKILL)

    return Dying


def running_with_argument(argument: str) -> list[int]:
    """Processes whose command line holds ``argument`` as one of its words."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                words = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                argument.encode() in words
                and Path(entry.path, "stat").read_text().split(")")[-1].split()[0] != "Z"
            ):
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("after_fork", [False, True], ids=["before-fork", "after-fork"])
def test_a_worker_dying_while_it_starts_a_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, after_fork: bool
) -> None:
    # Forked workers carry the patched start; each dies in the moment between
    # noting that it starts the command and noting the command's pid.
    monkeypatch.setattr(pool_module, "start_context", ForkContext)
    monkeypatch.setattr(execute, "SpawnedCommand", die_while_starting(after_fork=after_fork))
    ran = tmp_path / "ran"
    with LocalPool(workers=1, timeout=30) as pool:
        pool.assign("local-1", chunk(1, "sleep 0", f"touch {ran}", "sleep 0"))
        (lost,) = [e for e in collect(pool, until=1) if isinstance(e, WorkerLost)]
        monkeypatch.undo()  # the replacement worker starts commands as usual
        if after_fork:
            # Its command was forked and may have run: lost, never run again.
            assert [c.tasks.lines for c in lost.in_hand] == [[2]]
            assert [c.tasks.lines for c in lost.unstarted] == [[3]]
        else:
            # Nothing was left behind: the command never began, and runs elsewhere.
            assert lost.in_hand == []
            assert [c.tasks.lines for c in lost.unstarted] == [[2, 3]]
            assert not ran.exists()


def test_the_command_a_dying_worker_had_forked_is_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its task is reported lost: the command must not run on unseen.
    monkeypatch.setattr(pool_module, "start_context", ForkContext)
    monkeypatch.setattr(execute, "SpawnedCommand", die_while_starting(after_fork=True))
    with LocalPool(workers=1, timeout=60) as pool:
        pool.assign("local-1", chunk(1, "/bin/sleep 30.25"))
        (lost,) = [e for e in collect(pool, until=1) if isinstance(e, WorkerLost)]
        monkeypatch.undo()
        assert [c.tasks.lines for c in lost.in_hand] == [[1]]
        wait_for(lambda: running_with_argument("30.25") == [], timeout=10)


def test_what_earlier_commands_left_running_neither_blocks_a_rerun_nor_is_ended(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Earlier commands left processes in the background: one in their session,
    # one in a session of its own; then the worker dies before it forks the next
    # command. Neither is a sign of that command (the second started before the
    # worker began to start it): it runs elsewhere, and both run on.
    monkeypatch.setattr(pool_module, "start_context", ForkContext)
    dying = die_while_starting(after_fork=False, at_start=3)
    monkeypatch.setattr(execute, "SpawnedCommand", dying)
    ran = tmp_path / "ran"
    texts = ["/bin/sleep 30.5 &", "setsid /bin/sleep 30.75 &", "sleep 50", f"touch {ran}"]
    with LocalPool(workers=1, timeout=60) as pool:
        pool.assign("local-1", chunk(1, *texts))
        (lost,) = [e for e in collect(pool, until=1) if isinstance(e, WorkerLost)]
        monkeypatch.undo()
        try:
            assert lost.in_hand == []
            assert [c.tasks.lines for c in lost.unstarted] == [[4]]
            assert len(running_with_argument("30.5")) == 1
            assert len(running_with_argument("30.75")) == 1
        finally:
            for pid in running_with_argument("30.5") + running_with_argument("30.75"):
                os.kill(pid, signal.SIGKILL)


def test_ended_orphans_are_reaped(pool: LocalPool, tmp_path: Path) -> None:
    # A command that leaves a process in the background: once the command has
    # exited, the pool is that process's parent, and collects it when it ends.
    pidfile = tmp_path / "background.pid"
    pool.assign("local-1", chunk(1, f"/bin/sleep 0.2 & echo $! > {pidfile}"))
    collect(pool, until=1)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    background = int(pidfile.read_text())
    wait_for(lambda: background in children() and children()[background].state == "Z")
    pool._next_reap = 0.0
    pool.wait(0.01)
    assert background not in children()
