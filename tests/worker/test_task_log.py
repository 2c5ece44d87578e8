"""A local worker's task log: outcomes in a file, sleeps in a ring of shared memory."""

from pathlib import Path

from worker.result import Outcome, Status
from worker.task_log import RING_TASKS, TaskLog, new_ring, read_task_log


def test_sleeps_and_outcomes_are_read_back_by_chunk_and_index(tmp_path: Path) -> None:
    ring = new_ring()
    log = TaskLog(tmp_path / "log", ring)
    failed = Outcome(Status.FAILED, 3, 1.0, 2.0, 1000.0, "out", "err")
    log.sleep(1, 0, 10, 20)
    log.outcome(1, 1, failed)
    log.sleep(2, 0, 30, 40)
    log.close()
    assert read_task_log(tmp_path / "log", ring) == {1: {0: (10, 20), 1: failed}, 2: {0: (30, 40)}}


def test_a_torn_outcome_is_skipped_and_emptying_forgets_outcomes(tmp_path: Path) -> None:
    ring = new_ring()
    log = TaskLog(tmp_path / "log", ring)
    log.outcome(1, 0, Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1000.0))
    whole = (tmp_path / "log").read_bytes()
    with (tmp_path / "log").open("ab") as file:
        file.write(whole[:-3])  # a second entry, cut off by the worker's death
    assert list(read_task_log(tmp_path / "log", ring)[1]) == [0]
    log.empty()
    log.outcome(2, 0, Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1000.0))
    assert list(read_task_log(tmp_path / "log", ring)) == [2]


def test_the_ring_keeps_the_newest_sleeps(tmp_path: Path) -> None:
    ring = new_ring()
    log = TaskLog(tmp_path / "log", ring)
    for n in range(RING_TASKS + 5):
        log.sleep(1, n, n, n + 1)
    logged = read_task_log(tmp_path / "log", ring)[1]
    assert len(logged) == RING_TASKS
    assert min(logged) == 5
    assert logged[RING_TASKS + 4] == (RING_TASKS + 4, RING_TASKS + 5)
