import pytest

from scheduler.local.chunking import TARGET_CHUNK_SECONDS, ChunkSizer
from worker.task_log import MAX_CHUNK_TASKS


def test_first_chunk_is_one_task_to_learn_the_duration() -> None:
    sizer = ChunkSizer(workers=4)
    assert sizer.size(remaining=None) == 1
    assert sizer.prefetch() == 1


def test_tiny_tasks_travel_in_big_chunks() -> None:
    sizer = ChunkSizer(workers=2)
    sizer.observe(tasks=1000, busy_seconds=0.002)
    assert sizer.size(remaining=None) == MAX_CHUNK_TASKS
    assert sizer.prefetch() == 2


def test_chunks_hold_about_the_target_time_of_work() -> None:
    sizer = ChunkSizer(workers=2)
    sizer.observe(tasks=10, busy_seconds=0.1)  # 10 ms a task
    assert sizer.size(remaining=None) == pytest.approx(TARGET_CHUNK_SECONDS / 0.01, abs=1)


def test_long_tasks_go_one_at_a_time_without_prefetch() -> None:
    sizer = ChunkSizer(workers=8)
    sizer.observe(tasks=1, busy_seconds=5.0)
    assert sizer.size(remaining=None) == 1
    assert sizer.prefetch() == 1


def test_chunks_shrink_near_the_end_of_a_job() -> None:
    sizer = ChunkSizer(workers=4)
    sizer.observe(tasks=100, busy_seconds=0.1)  # 1 ms a task
    assert sizer.size(remaining=None) == 500
    # Short tasks: a worker holds two chunks, so each is half a share of what is
    # left per chunk held: 800 / (2 * 4 workers * 2).
    assert sizer.prefetch() == 2
    assert sizer.size(remaining=800) == 50
    assert sizer.size(remaining=3) == 1
    assert sizer.size(remaining=0) == 1


def test_even_tiny_tasks_shrink_to_one_near_the_end() -> None:
    # A sorted file keeps its long tasks last: the tail must spread whatever the
    # tasks before it cost.
    sizer = ChunkSizer(workers=4)
    sizer.observe(tasks=1000, busy_seconds=0.001)  # 1 µs a task
    assert sizer.size(remaining=100_000) == MAX_CHUNK_TASKS
    assert sizer.size(remaining=800) == 50
    assert sizer.size(remaining=40) == 3
    assert sizer.size(remaining=8) == 1


def test_what_workers_hold_is_never_more_than_half_of_what_is_left() -> None:
    # Heavy-tailed work on many workers: if held chunks took all that is left, the
    # workers that drew the long tasks would finish long after the rest.
    sizer = ChunkSizer(workers=16)
    sizer.observe(tasks=20, busy_seconds=0.56)  # 28 ms a task: short, two held
    for remaining in (400, 160, 33):
        held = sizer.size(remaining) * sizer.workers * sizer.prefetch()
        assert held <= remaining / 2 + sizer.workers * sizer.prefetch()


def test_mean_follows_changing_durations() -> None:
    sizer = ChunkSizer(workers=1)
    sizer.observe(tasks=100, busy_seconds=0.001)
    small = sizer.size(remaining=None)
    for _ in range(20):
        sizer.observe(tasks=1, busy_seconds=1.0)
    assert sizer.size(remaining=None) < small
    assert sizer.size(remaining=None) == 1


def test_nonsense_is_refused_or_ignored() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ChunkSizer(workers=0)
    sizer = ChunkSizer(workers=1)
    sizer.observe(tasks=0, busy_seconds=1.0)
    assert sizer.mean_task_seconds is None
