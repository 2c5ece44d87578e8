import pytest

from scheduler.fleet.provisioner import desired_capacity


def desired(backlog: int, in_service: int = 0, busy: int = 0, lo: int = 0, hi: int = 16) -> int:
    return desired_capacity(
        backlog=backlog, in_service=in_service, busy=busy, minimum=lo, maximum=hi
    )


def test_none_while_the_queue_is_empty() -> None:
    assert desired(0) == 0
    assert desired(0, in_service=5) == 0  # idle instances may go


def test_one_for_the_first_bundle() -> None:
    assert desired(1) == 1


def test_one_per_pending_bundle_up_to_the_maximum() -> None:
    assert desired(5) == 5
    assert desired(5, in_service=2, busy=2) == 7
    assert desired(100) == 16


def test_busy_instances_are_kept() -> None:
    assert desired(0, in_service=4, busy=3) == 3


def test_work_waiting_never_shrinks_the_fleet() -> None:
    assert desired(1, in_service=6, busy=0) == 6


def test_the_group_minimum_holds() -> None:
    assert desired(0, lo=2) == 2
    assert desired(1, lo=2) == 2


@pytest.mark.parametrize(("backlog", "lo", "hi"), [(-1, 0, 1), (0, 3, 2), (0, -1, 1)])
def test_nonsense_is_refused(backlog: int, lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match=r"cannot be negative|bad group limits"):
        desired(backlog, lo=lo, hi=hi)
