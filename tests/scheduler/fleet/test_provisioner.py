import pytest

from scheduler.fleet.provisioner import desired_capacity


def desired(
    waiting: int, in_flight: int = 0, busy: int = 0, slots: int = 2, lo: int = 0, hi: int = 16
) -> int:
    return desired_capacity(
        waiting=waiting,
        in_flight=in_flight,
        busy=busy,
        slots_per_instance=slots,
        minimum=lo,
        maximum=hi,
    )


def test_none_while_the_queue_is_empty() -> None:
    assert desired(0) == 0


def test_one_for_the_first_bundle() -> None:
    assert desired(1) == 1


def test_every_slot_of_an_instance_counts() -> None:
    assert desired(20) == 10  # 20 one-task bundles on 2-slot instances
    assert desired(20, slots=1) == 16  # up to the maximum
    assert desired(5, slots=1) == 5


def test_bundles_running_are_not_counted_again() -> None:
    # 20 tasks running on 10 instances, nothing waiting: 10, not 15 (each holds two).
    assert desired(0, in_flight=20, busy=10) == 10


def test_instances_idle_in_a_last_partial_wave_are_let_go() -> None:
    # Four bundles left running, on four of sixteen instances.
    assert desired(0, in_flight=4, busy=4) == 4


def test_instances_holding_work_are_kept_even_when_the_queue_lags() -> None:
    assert desired(0, in_flight=0, busy=3) == 3


def test_the_group_minimum_holds() -> None:
    assert desired(0, lo=2) == 2
    assert desired(1, lo=2) == 2


@pytest.mark.parametrize(
    ("waiting", "slots", "lo", "hi"), [(-1, 2, 0, 1), (0, 2, 3, 2), (0, 2, -1, 1), (0, 0, 0, 1)]
)
def test_nonsense_is_refused(waiting: int, slots: int, lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match=r"cannot be negative|bad group limits"):
        desired(waiting, slots=slots, lo=lo, hi=hi)
