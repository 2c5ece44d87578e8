"""The retry policy: which endings run again, how long they wait, what the record keeps."""

import pytest

from scheduler.retries import (
    MAX_RETRIES,
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
    attempted,
    check_retries,
    retry_delay,
    should_retry,
)
from worker.result import Outcome, Status, make_result


@pytest.mark.parametrize("status", [Status.FAILED, Status.TIMED_OUT, Status.LOST])
def test_a_task_that_did_not_succeed_runs_again_while_retries_are_left(status: Status) -> None:
    assert should_retry(status, 1, retries=1)
    assert should_retry(status, 2, retries=2)
    assert not should_retry(status, 2, retries=1)  # its second attempt was its last
    assert not should_retry(status, 1, retries=0)


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.CANCELLED])
def test_success_and_cancellation_never_run_again(status: Status) -> None:
    assert not should_retry(status, 1, retries=MAX_RETRIES)


def test_waits_double_from_half_a_second_up_to_ten() -> None:
    assert RETRY_FIRST_SECONDS == 0.5
    assert [retry_delay(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert retry_delay(50) == RETRY_MAX_SECONDS


def test_the_record_names_the_attempt_and_the_exit_codes_before_it() -> None:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1000.0)
    first = make_result("j:1:1", "j", "w", 1, "x", "local-1", outcome)
    assert (attempted(first, []).attempt, first.earlier_exit_codes) == (1, ())
    third = attempted(make_result("j:1:2", "j", "w", 2, "x", "local-1", outcome), [3, None])
    assert (third.attempt, third.earlier_exit_codes) == (3, (3, None))


def test_retries_are_bounded() -> None:
    check_retries(0)
    check_retries(MAX_RETRIES)
    for wrong in (-1, MAX_RETRIES + 1):
        with pytest.raises(ValueError, match=f"retries must be 0 to {MAX_RETRIES}"):
            check_retries(wrong)
