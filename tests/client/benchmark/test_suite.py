import pytest

from client.benchmark.runners import Workload
from client.benchmark.suite import (
    FULL,
    QUICK,
    Experiment,
    Row,
    absent_row,
    compare_to_peers,
    uneven,
)


def test_ideal_time_is_known_for_sleeps_that_take_time() -> None:
    assert Workload("sleep 10", 1000, 4).ideal_seconds == 2.5  # 250 tasks a worker, 10 ms
    assert Workload("sleep 10", 1001, 4).ideal_seconds == 2.51  # the busiest worker's share
    assert Workload("sleep 0", 1000, 4).ideal_seconds is None
    assert Workload("true", 1000, 4).ideal_seconds is None


def test_the_ideal_time_of_uneven_sleeps_is_the_least_any_schedule_could_take() -> None:
    sorted_ones = Workload("sorted", 5, 2, (0, 0, 0, 1000, 1000))
    assert sorted_ones.ideal_seconds == 1.0  # the work spread evenly
    assert Workload("tail", 3, 2, (10, 10, 5000)).ideal_seconds == 5.0  # the longest task
    assert sorted_ones.texts() == ["sleep 0"] * 3 + ["sleep 1000"] * 2
    assert Workload("true", 2, 1).texts() == ["true", "true"]


def test_uneven_workloads_are_the_same_on_every_run() -> None:
    sorted_ones, tailed = uneven((1, 2), short=10, long=2, tailed=50)
    _, tailed_again = uneven((1, 2), short=10, long=2, tailed=50)
    assert sorted_ones.durations == (0,) * 10 + (250, 250)
    assert tailed.durations == tailed_again.durations
    assert min(tailed.durations) >= 10
    assert max(tailed.durations) <= 2000
    assert [w.durations for w in tailed.workloads()] == [tailed.durations] * 2


def test_a_peer_that_is_not_installed_is_shown_absent_and_left_out_of_comparisons() -> None:
    rows = compare_to_peers(
        [
            make_row("taskfleet run", False, 1.0, 0.99),
            make_row("Pool", True, 1.1, 0.90),
            absent_row("efficiency", Workload("sleep 10", 100, 1), "GNU parallel -j"),
        ]
    )
    assert rows[0].vs_best_peer == pytest.approx(1.1)
    assert (rows[2].absent, rows[2].vs_best_peer, rows[2].runs) == (True, None, [])


def test_experiments_scale_tasks_per_worker_or_keep_a_total() -> None:
    per_worker = Experiment("efficiency", "sleep 10", None, 100, (1, 4))
    assert [(w.tasks, w.workers) for w in per_worker.workloads()] == [(100, 1), (400, 4)]
    total = Experiment("throughput", "sleep 0", 5000, None, (1, 4))
    assert [(w.tasks, w.workers) for w in total.workloads()] == [(5000, 1), (5000, 4)]


def test_the_full_run_covers_the_seeds_experiments() -> None:
    lines = {(e.kind, e.line) for e in FULL}
    assert lines == {
        ("throughput", "sleep 0"),
        ("efficiency", "sleep 10"),
        ("efficiency", "sleep 1000"),
        ("efficiency", "sleep 10000"),
        ("uneven", "sorted"),
        ("uneven", "heavy-tailed"),
        ("commands", "true"),
    }
    assert {e.tasks for e in FULL if e.kind == "throughput"} == {10_000, 100_000}
    assert {e.per_worker for e in FULL if e.kind == "efficiency"} == {1000, 100, 10}
    assert all(e.workers == (1, 2, 4, 8, 16) for e in FULL)
    assert len(QUICK) < len(FULL)


def make_row(system: str, peer: bool, seconds: float, efficiency: float | None) -> Row:
    return Row("efficiency", "sleep 10", 100, 1, system, peer, seconds, [seconds], 1.0, efficiency)


def test_each_row_is_compared_to_the_best_peer() -> None:
    rows = compare_to_peers(
        [
            make_row("taskfleet run", False, 1.0, 0.99),
            make_row("Pool", True, 1.1, 0.90),
            make_row("Executor", True, 1.2, 0.80),
        ]
    )
    assert [round(r.vs_best_peer or 0, 3) for r in rows] == [1.1, 1.0, 0.889]


def test_throughput_rows_are_compared_by_tasks_per_second() -> None:
    rows = [
        Row("throughput", "sleep 0", 100, 2, "taskfleet run", False, 0.01, [0.01], 10_000.0, None),
        Row("throughput", "sleep 0", 100, 2, "Pool", True, 0.04, [0.04], 2_500.0, None),
    ]
    assert [r.vs_best_peer for r in compare_to_peers(rows)] == [4.0, 1.0]
