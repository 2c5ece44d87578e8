"""A held bundle's bookkeeping: what starts, what waits to be sent, what is progress."""

import time

import pytest

from worker import bundle_run
from worker.bundle import Bundle, BundleTask
from worker.bundle_run import BundleRun
from worker.claims import Claim, is_done, progress_bitmap
from worker.result import Result, Status


def held(*texts: str, done: bytes = b"", recovered: dict[int, Result] | None = None) -> BundleRun:
    tasks = [BundleTask(1, n, text) for n, text in enumerate(texts, start=1)]
    message = {"ReceiptHandle": "r1", "Body": "{}"}
    return BundleRun(message, Bundle("b1", "job1", ["w.txt"], tasks), Claim(done), recovered)


def result(line: int, stdout: str = "") -> Result:
    now = time.time()
    return Result(
        f"job1:1:{line}", "job1", "w.txt", line, "echo", Status.SUCCEEDED, 0, "i-1",
        now, now, 1.0, None, stdout, "", False,
    )  # fmt: skip


def test_progress_bitmaps_round_trip() -> None:
    bitmap = progress_bitmap({0, 3, 9}, 12)
    assert len(bitmap) == 2
    assert [i for i in range(12) if is_done(bitmap, i)] == [0, 3, 9]
    assert not is_done(b"", 0)


def test_an_heir_starts_only_what_has_no_progress() -> None:
    run = held("a", "b", "c", "d", done=progress_bitmap({0, 2}, 4))
    assert [run.next_task(), run.next_task(), run.next_task()] == [1, 3, None]
    assert run.tasks_waiting() == 2  # both running
    run.finished(1, result(2))
    assert run.finished(3, result(4))  # the last: report now
    assert run.ended()
    unsent = run.take_unsent()
    assert [index for index, _ in unsent] == [1, 3]
    assert run.mark_sent([1, 3]) == progress_bitmap({0, 1, 2, 3}, 4)


def test_results_wait_about_a_second_unless_many(monkeypatch: pytest.MonkeyPatch) -> None:
    run = held("a", "b", "c")
    for _ in range(3):
        run.next_task()
    run.finished(0, result(1))
    assert not run.due()  # one result, just now: it waits for company
    monkeypatch.setattr(bundle_run, "REPORT_INTERVAL_SECONDS", 0.0)
    assert run.due()
    monkeypatch.setattr(bundle_run, "REPORT_INTERVAL_SECONDS", 60.0)
    assert run.finished(1, result(2, stdout="x" * bundle_run.REPORT_BYTES))  # a full batch


def test_a_released_bundle_starts_and_keeps_nothing() -> None:
    run = held("a", "b")
    assert run.next_task() == 0
    run.release()
    assert run.next_task() is None
    assert run.tasks_waiting() == 0
    run.finished(0, result(1))
    assert run.take_unsent() == []


def test_results_finished_before_a_restart_are_sent_at_once_not_run() -> None:
    # Task 0 was sent (progress), 1 and 2 finished unsent; 3 had not run.
    recovered = {0: result(1), 1: result(2), 2: result(3), 9: result(10)}
    run = held("a", "b", "c", "d", done=progress_bitmap({0}, 4), recovered=recovered)
    assert run.due()  # no second's wait: they are old already
    assert [index for index, _ in run.take_unsent()] == [1, 2]  # not the sent one, nor 9
    assert [run.next_task(), run.next_task()] == [3, None]


def test_a_cancelled_bundle_starts_nothing_more_and_reports_the_rest_cancelled() -> None:
    run = held("a", "b", "c", "d")
    assert run.next_task() == 0  # running when the cancellation comes
    assert run.cancel() == [1, 2, 3]  # never started
    assert run.next_task() is None
    assert run.tasks_waiting() == 1  # the running one, until it ends
    run.add_results([(n, result(n + 1)) for n in (1, 2, 3)])
    assert run.finished(0, result(1))  # the last to end: report now
    assert sorted(index for index, _ in run.take_unsent()) == [0, 1, 2, 3]


def test_a_released_bundle_takes_no_more_results() -> None:
    run = held("a", "b")
    run.release()
    run.add_results([(0, result(1))])
    assert run.take_unsent() == []


def test_the_last_task_cut_off_by_a_stop_leaves_its_bundle_unended() -> None:
    run = held("a", "b")
    assert [run.next_task(), run.next_task()] == [0, 1]
    run.finished(0, result(1))
    run.release()  # a stop: the running task is killed, and yields no result
    run.finished(1, None)
    assert not run.ended()  # given back, not marked done: its next holder runs it
    assert run.tasks_waiting() == 0  # nothing more starts here


def test_a_task_ending_after_its_bundle_was_given_back_runs_again_elsewhere() -> None:
    # Its result came too late to be sent: the bundle must not be marked done.
    run = held("a", "b")
    assert [run.next_task(), run.next_task()] == [0, 1]
    run.finished(0, result(1))
    run.release()
    run.finished(1, result(1))
    assert not run.ended()
    assert [index for index, _ in run.take_unsent()] == [0]  # the late result is not kept
