"""Bundles cut by work: tiny tasks together, long ones apart, shares shrinking."""

from scheduler.fleet.bundle_sizing import (
    MAX_BUNDLE_SECONDS,
    MIN_BUNDLE_SECONDS,
    UNKNOWN_COMMAND_SECONDS,
    BundleSizer,
)


def test_tiny_sleeps_travel_together() -> None:
    texts = ["sleep 0"] * 10_000
    assert BundleSizer().cut(texts, remaining=10_000, slots=32) == 10_000  # 2 s of work


def test_a_sorted_workload_cuts_where_the_long_tasks_begin() -> None:
    sizer = BundleSizer()
    texts = ["sleep 0"] * 500 + ["sleep 200"] * 400
    first = sizer.cut(texts, remaining=len(texts), slots=32)
    # The short tasks and only as many long ones as make up the bundle's work.
    assert first == 510
    rest = texts[first:]
    second = sizer.cut(rest, remaining=len(rest), slots=32)
    assert second == 10  # 2 s of 200 ms tasks: the 400 spread over 40 bundles


def test_long_tasks_get_a_fair_share_and_never_exceed_it() -> None:
    sizer = BundleSizer()
    texts = ["sleep 1000"] * 40
    assert sizer.cut(texts, remaining=40, slots=8) == 3  # 40 s over 16 shares: 2.5 s
    assert sizer.cut(texts[:4], remaining=4, slots=8) == 2  # near the end: the floor
    hours = ["sleep 3600000"] * 10
    assert sizer.cut(hours, remaining=10, slots=1) == 1
    week = ["sleep 60000"] * 100_000
    taken = sizer.cut(week[:10_000], remaining=100_000, slots=1)
    assert taken * 60 <= MAX_BUNDLE_SECONDS + 60


def test_commands_are_guessed_small_then_learned() -> None:
    sizer = BundleSizer()
    texts = ["gzip -9 big.file"] * 1000
    assert sizer.cost(texts[0]) == UNKNOWN_COMMAND_SECONDS
    # Unknown, all alike: each bundle a fair share of them (1,000 over 8 shares).
    assert sizer.cut(texts, remaining=1000, slots=4) == 125
    for _ in range(20):
        sizer.observe_command(0.004)
    # Learned: 4 s of work in all, under the floor of a bundle.
    assert sizer.cut(texts, remaining=1000, slots=4) == round(MIN_BUNDLE_SECONDS / 0.004)


def test_a_line_that_cannot_run_costs_nothing() -> None:
    sizer = BundleSizer()
    assert sizer.cost("sleep -1") == 0.0
    assert sizer.cut([], remaining=0, slots=4) == 0
