import json
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scheduler.errors import JobNotFoundError, JobStateError
from scheduler.jobs.journal import DISPATCHED, SENT, JobState, Journal, Placement
from worker.bundle import UsageReport
from worker.result import Outcome, Status, decode, encode_lines, make_result
from worker.usage import Usage


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "j.sqlite3")
    yield opened
    opened.close()


def job_with(
    journal: Journal, job_id: str, rows: list[tuple[int, int, str]], files: list[str]
) -> None:
    journal.create_job(job_id)
    journal.add_tasks(job_id, rows)
    journal.seal_job(job_id, files, len(rows))


def record(line: int) -> bytes:
    return json.dumps({"line": line}).encode() + b"\n"


def test_uploading_jobs_are_invisible_until_sealed(journal: Journal) -> None:
    journal.create_job("a")
    journal.add_tasks("a", [(1, 1, "sleep 1")])
    assert journal.active_jobs() == []
    assert journal.jobs() == []
    journal.seal_job("a", ["w.txt"], 1)
    (info,) = journal.active_jobs()
    assert (info.id, info.state, info.total, info.files) == ("a", JobState.QUEUED, 1, ["w.txt"])
    assert journal.jobs() == [info]


def test_pending_tasks_come_one_file_at_a_time_in_order(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x"), (1, 4, "y"), (2, 2, "z")], ["f1", "f2"])
    first = journal.pending("a", (0, 0), 10)
    assert first is not None
    assert (first.file_number, first.lines, first.texts) == (1, [1, 4], ["x", "y"])
    journal.mark_dispatched("a", 1, first.lines)
    assert journal.job("a").state == JobState.RUNNING
    second = journal.pending("a", (1, 4), 10)
    assert second is not None
    assert (second.file_number, second.lines) == (2, [2])
    assert journal.pending("a", (0, 0), 10) == second  # dispatched tasks are not pending


def test_results_are_numbered_and_a_duplicate_is_ignored(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x"), (1, 2, "y")], ["f"])
    seq = journal.finish("a", 1, [(1, Status.SUCCEEDED, record(1))], seq=1)
    seq = journal.finish("a", 1, [(1, Status.FAILED, record(99))], seq)  # delivered twice
    assert seq == 2
    seq = journal.finish("a", 1, [(2, Status.FAILED, record(2))], seq)
    info = journal.job("a")
    assert (info.state, info.finished, info.succeeded) == (JobState.DONE, 2, 1)
    assert journal.results_page("a", 0, 10) == [(1, record(1)), (2, record(2))]
    assert journal.results_page("a", 1, 10) == [(2, record(2))]


def test_cancel_closes_pending_tasks_only(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x"), (1, 2, "y"), (1, 3, "z")], ["f"])
    journal.mark_dispatched("a", 1, [1])
    seq = journal.cancel("a", seq=1)
    info = journal.job("a")
    assert info.state == JobState.CANCELLED
    assert info.finished == 2
    cancelled = [json.loads(r) for _, r in journal.results_page("a", 0, 10)]
    assert [(r["line"], r["status"]) for r in cancelled] == [(2, "cancelled"), (3, "cancelled")]
    seq = journal.finish("a", 1, [(1, Status.SUCCEEDED, record(1))], seq)
    assert journal.job("a").finished == 3
    assert seq == 4


def test_recover_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    before = Journal(path)
    job_with(before, "a", [(1, 1, "x"), (1, 2, "y"), (1, 3, "z")], ["f"])
    before.mark_dispatched("a", 1, [1, 2])
    before.finish("a", 1, [(1, Status.SUCCEEDED, record(1))], seq=1)
    before.create_job("half")  # an upload cut off by the crash
    before.add_tasks("half", [(1, 1, "x")])
    before.close()

    after = Journal(path)
    seq = after.recover(fleet=False)
    assert seq == 3
    with pytest.raises(JobNotFoundError):
        after.job("half")
    results = [json.loads(r) for _, r in after.results_page("a", 1, 10)]
    assert [(r["line"], r["status"], r["id"]) for r in results] == [(2, "lost", "a:1:2")]
    pending = after.pending("a", (0, 0), 10)
    assert pending is not None
    assert pending.lines == [3]  # never started: it will run
    after.close()


@pytest.mark.parametrize(("fleet", "lost"), [(True, []), (False, [2, 3])])
def test_tasks_sent_to_the_fleet_wait_across_a_restart_with_it(
    tmp_path: Path, fleet: bool, lost: list[int]
) -> None:
    path = tmp_path / "j.sqlite3"
    before = Journal(path)
    before.create_job("a", Placement.REMOTE)
    before.add_tasks("a", [(1, 1, "x"), (1, 2, "y"), (1, 3, "z")])
    before.seal_job("a", ["f"], 3)
    before.mark_dispatched("a", 1, [2, 3], SENT)
    before.close()

    after = Journal(path)
    after.recover(fleet=fleet)
    assert after.job("a").placement == Placement.REMOTE
    results = [json.loads(r) for _, r in after.results_page("a", 0, 10)]
    assert [r["line"] for r in results if r["status"] == "lost"] == lost
    pending = after.pending("a", (0, 0), 10)
    assert pending is not None
    assert pending.lines == [1]
    after.close()


def test_a_journal_of_an_earlier_version_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
        " files TEXT NOT NULL DEFAULT '[]', total INTEGER NOT NULL DEFAULT 0,"
        " finished INTEGER NOT NULL DEFAULT 0, succeeded INTEGER NOT NULL DEFAULT 0,"
        " created_at REAL NOT NULL, finished_at REAL)"
    )
    old.execute(
        "CREATE TABLE tasks (job TEXT NOT NULL, file_number INTEGER NOT NULL,"
        " line INTEGER NOT NULL, text TEXT NOT NULL, state INTEGER NOT NULL DEFAULT 0,"
        " seq INTEGER, record BLOB, PRIMARY KEY (job, file_number, line)) WITHOUT ROWID"
    )
    old.execute("INSERT INTO jobs (id, state, created_at) VALUES ('a', 'done', 1.0)")
    # Before job_files, a job's every file name was in jobs.files.
    old.execute(
        "INSERT INTO jobs (id, state, files, created_at)"
        """ VALUES ('named', 'done', '["w.txt", "v.txt"]', 1.0)"""
    )
    old.execute(
        "INSERT INTO jobs (id, state, total, finished, succeeded, created_at)"
        " VALUES ('old', 'cancelled', 3, 3, 1, 1.0)"
    )
    for line, status in enumerate(("succeeded", "failed", "cancelled"), start=1):
        old.execute(
            "INSERT INTO tasks (job, file_number, line, text, state, seq, record)"
            " VALUES ('old', 1, ?, 'x', 2, ?, ?)",
            (line, line, json.dumps({"status": status}).encode() + b"\n"),
        )
    old.commit()
    old.close()
    journal = Journal(path)
    assert (journal.job("a").placement, journal.job("a").retries) == (Placement.LOCAL, 0)
    # Counts by status come from the records a journal of that version holds.
    assert journal.job("old").by_status() == {
        "succeeded": 1,
        "failed": 1,
        "timed_out": 0,
        "lost": 0,
        "cancelled": 1,
    }
    assert journal.job_files("named") == ["w.txt", "v.txt"]
    assert journal.job("named").file_count == 2
    assert journal.job("old").usage == Usage()  # the usage columns are there, at zero
    journal.add_usage("old", Usage(sqs_requests=2))
    assert journal.job("old").usage.sqs_requests == 2
    journal.create_job("b", retries=1)  # the retry columns are there
    journal.add_tasks("b", [(1, 1, "exit 1")])
    journal.seal_job("b", ["w"], 1)
    journal.mark_dispatched("b", 1, [1])
    journal.finish("b", 1, [(1, Status.FAILED, result_record(1, Status.FAILED, 1))], seq=1)
    assert journal.next_retry("b") is not None
    # The same columns, of the same types, as a journal made new.
    fresh = Journal(tmp_path / "new.sqlite3")
    for table in ("jobs", "tasks"):
        assert columns_of(journal, table) == columns_of(fresh, table)
    fresh.close()
    journal.close()


def columns_of(journal: Journal, table: str) -> set[tuple[str, str, int, object]]:
    """A table's columns: name, declared type, NOT NULL, default."""
    rows = journal.db.execute(f"PRAGMA table_info({table})").fetchall()
    return {(name, kind, notnull, default) for _, name, kind, notnull, default, _ in rows}


def test_unknown_job_is_an_error(journal: Journal) -> None:
    with pytest.raises(JobNotFoundError, match="nope"):
        journal.job("nope")


def result_record(line: int, status: Status, exit_code: int | None) -> bytes:
    outcome = Outcome(status, exit_code, 1.0, 1.0, 0.0)
    return encode_lines([make_result(f"b:1:{line}", "b", "w", line, "x", "local-1", outcome)])


def timed_record(line: int, duration_ms: float) -> bytes:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 1.0, duration_ms)
    return encode_lines([make_result(f"a:1:{line}", "a", "w", line, "x", "local-1", outcome)])


def test_a_task_that_fails_waits_for_its_retry_then_keeps_its_attempts(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal.create_job("b", retries=2)
    journal.add_tasks("b", [(1, line, "x") for line in (1, 2, 3)])
    journal.seal_job("b", ["w"], 3)
    journal.mark_dispatched("b", 1, [1, 2])  # line 3 is still pending
    failed = [(1, Status.FAILED, result_record(1, Status.FAILED, 9))]
    assert journal.finish("b", 1, failed, seq=1) == 1  # nothing stored: it waits
    assert journal.job("b").finished == 0
    due = journal.next_retry("b")
    assert due is not None
    assert time.time() < due <= time.time() + 0.5
    # Waiting, it is neither pending in order nor swept up with its neighbours.
    assert journal.pending("b", (0, 0), 10) == journal.pending("b", (1, 2), 10)
    journal.mark_dispatched("b", 1, [1, 3])
    assert journal.retries_due("b", 10) is None  # not due yet
    monkeypatch.setattr(time, "time", lambda: due + 0.01)
    retry = journal.retries_due("b", 10)
    assert retry is not None
    assert (retry.file_number, retry.lines) == (1, [1])
    journal.mark_retries_dispatched("b", 1, retry.lines, DISPATCHED)
    assert journal.next_retry("b") is None
    lost = [(1, Status.LOST, result_record(1, Status.LOST, None))]
    assert journal.finish("b", 1, lost, seq=1) == 1  # its second attempt: one more to go
    journal.mark_retries_dispatched("b", 1, [1], DISPATCHED)
    succeeded = [(1, Status.SUCCEEDED, result_record(1, Status.SUCCEEDED, 0))]
    assert journal.finish("b", 1, succeeded, seq=1) == 2
    ((_, stored),) = journal.results_page("b", 0, 10)
    final = decode(stored)
    assert (final.status, final.attempt, final.earlier_exit_codes) == (
        Status.SUCCEEDED,
        3,
        (9, None),
    )


def test_a_cancelled_task_is_not_retried_and_a_waiting_one_is_cancelled(
    journal: Journal,
) -> None:
    journal.create_job("b", retries=3)
    journal.add_tasks("b", [(1, 1, "x"), (1, 2, "x")])
    journal.seal_job("b", ["w"], 2)
    journal.mark_dispatched("b", 1, [1])
    journal.finish("b", 1, [(1, Status.TIMED_OUT, result_record(1, Status.TIMED_OUT, None))], 1)
    journal.cancel("b", seq=1)
    assert journal.job("b").state == JobState.CANCELLED
    records = {decode(r).line: decode(r) for _, r in journal.results_page("b", 0, 10)}
    assert {line: r.status for line, r in records.items()} == {
        1: Status.CANCELLED,
        2: Status.CANCELLED,
    }
    assert (records[1].attempt, records[1].earlier_exit_codes) == (2, (None,))
    assert journal.next_retry("b") is None


def test_retry_job_copies_the_tasks_that_did_not_succeed(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x"), (1, 2, "y"), (2, 5, "z")], ["f1", "f2"])
    with pytest.raises(JobStateError, match="still has tasks to run"):
        journal.retry_job("a", "b", Placement.LOCAL, 0)
    journal.mark_dispatched("a", 1, [1, 2])
    journal.mark_dispatched("a", 2, [5])
    seq = journal.finish("a", 1, [(1, Status.SUCCEEDED, b'{"status":"succeeded"}\n')], 1)
    seq = journal.finish("a", 1, [(2, Status.FAILED, b'{"status":"failed"}\n')], seq)
    journal.finish("a", 2, [(5, Status.LOST, b'{"status":"lost"}\n')], seq)
    assert journal.retry_job("a", "b", Placement.REMOTE, 1) == 2
    info = journal.job("b")
    assert (info.state, info.total, info.placement, info.retries) == ("queued", 2, "remote", 1)
    assert journal.job_files("b") == ["f1", "f2"]
    first = journal.pending("b", (0, 0), 10)
    assert first is not None
    assert (first.lines, first.texts) == ([2], ["y"])
    journal.mark_dispatched("b", 1, [2])
    journal.finish("b", 1, [(2, Status.SUCCEEDED, b'{"status":"succeeded"}\n')], 1)
    journal.mark_dispatched("b", 2, [5])
    journal.finish("b", 2, [(5, Status.SUCCEEDED, b'{"status":"succeeded"}\n')], 2)
    with pytest.raises(JobStateError, match="every task of job b succeeded"):
        journal.retry_job("b", "c", Placement.LOCAL, 0)
    with pytest.raises(JobNotFoundError):
        journal.job("c")  # nothing half made


def test_a_task_waiting_for_a_retry_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.create_job("b", retries=1)
    journal.add_tasks("b", [(1, 1, "x")])
    journal.seal_job("b", ["w"], 1)
    journal.mark_dispatched("b", 1, [1])
    journal.finish("b", 1, [(1, Status.FAILED, result_record(1, Status.FAILED, 2))], seq=1)
    due = journal.next_retry("b")
    journal.close()

    restarted = Journal(path)
    restarted.recover(fleet=False)  # what a scheduler does as it starts
    assert restarted.next_retry("b") == due  # still waiting, not reported lost
    assert restarted.job("b").finished == 0
    restarted.close()


def test_results_sent_back_for_a_retry_are_counted_as_taken(journal: Journal) -> None:
    journal.create_job("b", retries=1)
    journal.add_tasks("b", [(1, 1, "x"), (1, 2, "x"), (1, 3, "x")])
    journal.seal_job("b", ["w"], 3)
    journal.mark_dispatched("b", 1, [1, 2, 3], SENT)
    results = [
        (1, "x", Status.FAILED, result_record(1, Status.FAILED, 1)),
        (2, "x", Status.LOST, result_record(2, Status.LOST, None)),
        (3, "x", Status.SUCCEEDED, result_record(3, Status.SUCCEEDED, 0)),
    ]
    stored = journal.finish_sent("b", 1, results, seq=5)
    # All three taken (so the fleet link knows the bundle is done): two wait for
    # their retry, the third is stored.
    assert stored == (6, 3)
    assert journal.job("b").finished == 1
    waiting = journal.retries_due("b", 10)
    assert waiting is None  # not yet due
    assert journal.next_retry("b") is not None
    rows = journal.db.execute("SELECT line FROM tasks WHERE job = 'b' AND due IS NOT NULL")
    assert sorted(line for (line,) in rows) == [1, 2]  # both, not only the first


def test_a_cancelled_job_with_a_task_still_running_is_not_retried(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x"), (1, 2, "y")], ["f"])
    journal.mark_dispatched("a", 1, [1])  # running
    journal.cancel("a", seq=1)  # line 2 cancelled; line 1 runs on
    assert journal.job("a").state == JobState.CANCELLED
    with pytest.raises(JobStateError, match=r"still has tasks to run \(1 of 2 finished\)"):
        journal.retry_job("a", "b", Placement.LOCAL, 0)


def test_cancelling_an_ended_job_changes_nothing(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x")], ["f"])
    journal.mark_dispatched("a", 1, [1])
    journal.finish("a", 1, [(1, Status.SUCCEEDED, b'{"status":"succeeded"}\n')], seq=1)
    before = journal.job("a")
    assert journal.cancel("a", seq=2) == 2
    assert journal.job("a") == before
    cancelled = journal.job("a")
    assert cancelled.state == JobState.DONE


def test_a_cancelled_record_says_why(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x")], ["f"])
    journal.cancel("a", seq=1)
    ((_, record),) = journal.results_page("a", 0, 10)
    assert decode(record).error == "job cancelled before the task ran"


def test_usage_reports_are_counted_once_however_often_delivered(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "sleep 1")], ["w.txt"])
    used = Usage(instance_seconds=1.5, sqs_requests=3, dynamodb_writes=2, bytes_sent=100)
    report = UsageReport("i-1/x", 1, "a", used)
    assert journal.add_usage("a", used, report)
    assert not journal.add_usage("a", used, report)  # delivered twice
    journal.add_usage("a", Usage(sqs_requests=1))  # the scheduler's own: no report id
    info = journal.job("a")
    assert info.usage == Usage(1.5, 4, 2, 0, 100)
    assert info.as_dict()["aws_requests"] == 6
    assert info.as_dict()["instance_seconds"] == 1.5


def test_a_job_waits_for_the_last_report_of_each_worker_that_ran_it(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "sleep 1")], ["w.txt"])
    one = Usage(sqs_requests=1)
    journal.add_usage("a", one, UsageReport("i-1/x", 1, "a", one))
    journal.add_usage("a", one, UsageReport("i-2/y", 1, "a", one, final=True))
    assert journal.usage_to_come("a") == 1  # i-1 holds bundles of the job still
    journal.add_usage("a", one, UsageReport("i-1/x", 3, "a", one, final=True))
    assert journal.usage_to_come("a") == 0
    # An earlier report delivered late does not undo the later one's word.
    journal.add_usage("a", one, UsageReport("i-1/x", 2, "a", one))
    assert journal.usage_to_come("a") == 0
    assert journal.job("a").usage.sqs_requests == 4  # each counted
    # A report naming a job this journal does not know is counted for none.
    journal.add_usage("nope", one, UsageReport("i-1/x", 4, "nope", one))
    assert journal.usage_to_come("nope") == 0


def test_use_for_no_job_is_the_fleets_overhead(journal: Journal) -> None:
    journal.add_usage(None, Usage(sqs_requests=5), UsageReport("i-1/x", 9, None, Usage()))
    journal.add_usage(None, Usage(sqs_requests=2))
    assert journal.overhead() == Usage(sqs_requests=7)


def test_local_work_counts_cpu_seconds(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "sleep 1")], ["w.txt"])
    journal.add_cpu_seconds("a", 0.25)
    journal.add_cpu_seconds("a", 0.5)
    assert journal.job("a").cpu_seconds == 0.75


def test_the_slowest_finished_tasks_come_longest_first(journal: Journal) -> None:
    job_with(journal, "a", [(1, n, f"sleep {n}") for n in range(1, 6)], ["w.txt"])
    journal.mark_dispatched("a", 1, [1, 2, 3, 4, 5])
    durations = {1: 30, 2: 500, 3: 10, 4: 200, 5: 50}
    rows = [(n, Status.SUCCEEDED, timed_record(n, durations[n])) for n in range(1, 5)]
    journal.finish("a", 1, rows, seq=1)  # line 5 is still running
    slowest = [decode(record).line for record in journal.slowest("a", 3)]
    assert slowest == [2, 4, 1]


def test_a_job_as_the_api_shows_it(journal: Journal) -> None:
    journal.create_job("a", Placement.HYBRID, retries=2)
    journal.add_tasks("a", [(1, 1, "sleep 1"), (1, 2, "exit 1"), (2, 1, "echo")])
    journal.seal_job("a", ["w.txt", "v.txt"], 3)
    journal.mark_dispatched("a", 1, [1, 2])
    rows = [(1, Status.SUCCEEDED, timed_record(1, 10)), (2, Status.LOST, timed_record(2, 5))]
    journal.finish("a", 1, rows, seq=1)
    used = Usage(2.5, 10, 3, 1, 2048)
    journal.add_usage("a", used)
    journal.add_cpu_seconds("a", 0.25)
    info = journal.job("a")
    assert info.as_dict() == {
        "job": "a",
        "state": JobState.RUNNING,
        "placement": "hybrid",
        "files": ["w.txt", "v.txt"],
        "file_count": 2,
        "tasks": 3,
        "finished": 1,  # the lost one waits for its retry
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
        "by_status": {"succeeded": 1, "failed": 0, "timed_out": 0, "lost": 0, "cancelled": 0},
        "created_at": info.created_at,
        "finished_at": None,
        "retries": 2,
        "instance_seconds": 2.5,
        "aws_requests": 14,
        "usage": {
            "instance_seconds": 2.5,
            "sqs_requests": 10,
            "dynamodb_writes": 3,
            "dynamodb_reads": 1,
            "bytes_sent": 2048,
            "s3_writes": 0,
            "s3_reads": 0,
            "s3_bytes": 0,
        },
        "cpu_seconds": 0.25,
    }
    assert time.time() - 60 < info.created_at <= time.time()
    journal.cancel("a", seq=3)
    ended = journal.job("a")
    assert ended.finished_at is not None
    assert ended.as_dict()["finished_at"] == ended.finished_at
    assert ended.as_dict()["cancelled"] == 2  # the one waiting to retry, the one pending


def test_failed_counts_every_task_that_ran_and_did_not_succeed(journal: Journal) -> None:
    job_with(journal, "a", [(1, n, "x") for n in range(1, 6)], ["w.txt"])
    journal.mark_dispatched("a", 1, [1, 2, 3, 4])
    statuses = [Status.FAILED, Status.TIMED_OUT, Status.LOST, Status.LOST]
    rows = [(n, status, result_record(n, status, None)) for n, status in enumerate(statuses, 1)]
    journal.finish("a", 1, rows, seq=1)
    journal.add_cpu_seconds("a", 0.1234567)
    shown = journal.job("a").as_dict()
    assert (shown["failed"], shown["cancelled"], shown["finished"]) == (4, 0, 4)
    assert shown["cpu_seconds"] == 0.123457  # to the microsecond


def test_a_journal_serves_every_thread(journal: Journal) -> None:
    # The service's request handlers and its dispatcher share one journal.
    job_with(journal, "a", [(1, 1, "x")], ["w.txt"])
    with ThreadPoolExecutor(1) as other:
        assert other.submit(lambda: journal.job("a").id).result() == "a"


def test_a_cancelled_job_whose_task_was_running_has_it_lost_after_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    before = Journal(path)
    job_with(before, "a", [(1, 1, "x"), (1, 2, "y")], ["w.txt"])
    before.mark_dispatched("a", 1, [1])
    before.cancel("a", seq=1)  # line 2 is cancelled; line 1 was running
    before.close()
    after = Journal(path)
    after.recover(fleet=False)
    records = {decode(r).line: decode(r) for _, r in after.results_page("a", 0, 10)}
    assert {line: r.status for line, r in records.items()} == {
        1: Status.LOST,
        2: Status.CANCELLED,
    }
    assert records[1].error == (
        "the scheduler stopped while the task was running; it may or may not have run"
    )
    assert after.job("a").finished == 2
    after.close()


def test_a_task_that_fails_every_attempt_is_stored_after_its_last(journal: Journal) -> None:
    journal.create_job("b", retries=1)
    journal.add_tasks("b", [(1, 1, "exit 4")])
    journal.seal_job("b", ["w"], 1)
    journal.mark_dispatched("b", 1, [1])
    failed = [(1, Status.FAILED, result_record(1, Status.FAILED, 4))]
    assert journal.finish("b", 1, failed, seq=1) == 1  # sent back for its retry
    journal.mark_retries_dispatched("b", 1, [1], DISPATCHED)
    assert journal.finish("b", 1, failed, seq=1) == 2  # no retry left: stored
    ((_, stored),) = journal.results_page("b", 0, 10)
    final = decode(stored)
    assert (final.status, final.attempt, final.earlier_exit_codes) == (Status.FAILED, 2, (4,))


def test_results_for_no_task_of_the_journal_are_not_taken(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x")], ["w.txt"])
    assert journal.finish_sent("a", 1, [], seq=7) == (7, 0)
    stranger = [(1, "x", Status.SUCCEEDED, record(1))]
    assert journal.finish_sent("no-such-job", 1, stranger, seq=7) == (7, 0)


def test_cancelled_records_name_their_own_file(journal: Journal) -> None:
    job_with(journal, "a", [(1, 1, "x"), (2, 1, "y"), (3, 1, "z")], ["f1", "f2", "f3"])
    journal.cancel("a", seq=1)
    records = [decode(r) for _, r in journal.results_page("a", 0, 10)]
    assert [(r.file, r.task) for r in records] == [("f1", "x"), ("f2", "y"), ("f3", "z")]


def test_a_page_of_results_stops_once_it_reaches_its_size(journal: Journal) -> None:
    job_with(journal, "a", [(1, n, "x") for n in range(1, 6)], ["w.txt"])
    journal.mark_dispatched("a", 1, [1, 2, 3, 4, 5])
    journal.finish("a", 1, [(n, Status.SUCCEEDED, record(n)) for n in range(1, 6)], seq=1)
    size = len(record(1))  # every record here is as long
    assert [seq for seq, _ in journal.results_page("a", 0, 10, max_bytes=2 * size)] == [1, 2]
    assert [seq for seq, _ in journal.results_page("a", 0, 10, max_bytes=2 * size + 1)] == [
        1,
        2,
        3,
    ]
    assert len(journal.results_page("a", 0, 10, max_bytes=10**6)) == 5


def test_a_jobs_progress_and_its_records_by_status(journal: Journal) -> None:
    job_with(journal, "a", [(1, n, "x") for n in range(1, 5)], ["w.txt"])
    assert journal.progress("a") == (JobState.QUEUED, 0, 4)
    journal.mark_dispatched("a", 1, [1, 2, 3])
    statuses = {1: Status.FAILED, 2: Status.SUCCEEDED, 3: Status.FAILED}
    rows = [(n, status, result_record(n, status, 1)) for n, status in statuses.items()]
    journal.finish("a", 1, rows, seq=1)
    assert journal.progress("a") == (JobState.RUNNING, 3, 4)
    failed = journal.records_with_status("a", Status.FAILED, 10)
    assert [decode(r).line for r in failed] == [1, 3]  # in the order they arrived
    assert [decode(r).line for r in journal.records_with_status("a", Status.FAILED, 1)] == [1]
    assert journal.records_with_status("a", Status.LOST, 10) == []
    with pytest.raises(JobNotFoundError, match="no job 'nope'"):
        journal.progress("nope")


def test_the_jobs_list_holds_the_hundred_newest(journal: Journal) -> None:
    for n in range(101):
        job_with(journal, f"job{n}", [(1, 1, "x")], ["w.txt"])
    listed = journal.jobs()
    assert len(listed) == 100
    assert "job0" not in {info.id for info in listed}  # the oldest
    assert len(journal.jobs(limit=3)) == 3


# The fleet guard: a result from the response queue is stored only for a task
# of that job that was sent to the fleet, with the text that was sent. Anything
# else (a forged message, a stale one, one about a local task) changes nothing.


def journal_rows(journal: Journal) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every row of both tables: what "changes nothing" is checked against."""
    jobs = journal.db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    tasks = journal.db.execute("SELECT * FROM tasks ORDER BY job, file_number, line").fetchall()
    return jobs, tasks


def fleet_job(journal: Journal, job_id: str, retries: int = 0) -> None:
    """A job of three tasks: line 1 sent to the fleet, line 2 run locally, line 3 pending."""
    journal.create_job(job_id, Placement.HYBRID, retries)
    journal.add_tasks(job_id, [(1, 1, "sleep 1"), (1, 2, "sleep 2"), (1, 3, "sleep 3")])
    journal.seal_job(job_id, ["w.txt"], 3)
    journal.mark_dispatched(job_id, 1, [1], SENT)
    journal.mark_dispatched(job_id, 1, [2], DISPATCHED)


@pytest.mark.parametrize("retries", [0, 1])
@pytest.mark.parametrize(
    ("line", "text"),
    [(2, "sleep 2"), (3, "sleep 3"), (1, "sleep 9"), (1, "rm -rf ~")],
    ids=["run-locally", "never-sent", "changed-text", "other-command"],
)
def test_a_fleet_result_for_a_task_not_sent_with_that_text_changes_nothing(
    journal: Journal, retries: int, line: int, text: str
) -> None:
    fleet_job(journal, "a", retries)
    before = journal_rows(journal)
    for status in (Status.SUCCEEDED, Status.FAILED):  # FAILED would go back for a retry
        forged = [(line, text, status, result_record(line, status, 0))]
        assert journal.finish_sent("a", 1, forged, seq=4) == (4, 0)
    assert journal_rows(journal) == before
    assert journal.results_page("a", 0, 10) == []


def test_a_fleet_result_for_another_job_changes_nothing(journal: Journal) -> None:
    fleet_job(journal, "a")
    journal.create_job("b")  # the same file, line and text, run locally
    journal.add_tasks("b", [(1, 1, "sleep 1")])
    journal.seal_job("b", ["w.txt"], 1)
    journal.mark_dispatched("b", 1, [1], DISPATCHED)
    before = journal_rows(journal)
    result = [(1, "sleep 1", Status.SUCCEEDED, result_record(1, Status.SUCCEEDED, 0))]
    assert journal.finish_sent("b", 1, result, seq=4) == (4, 0)
    assert journal.finish_sent("a", 2, result, seq=4) == (4, 0)  # a file the job lacks
    assert journal_rows(journal) == before


def test_a_fleet_result_for_a_sent_task_is_stored_and_a_duplicate_keeps_the_first(
    journal: Journal,
) -> None:
    fleet_job(journal, "a")
    first = result_record(1, Status.SUCCEEDED, 0)
    sent = [(1, "sleep 1", Status.SUCCEEDED, first)]
    assert journal.finish_sent("a", 1, sent, seq=4) == (5, 1)
    after_first = journal_rows(journal)
    again = [(1, "sleep 1", Status.FAILED, result_record(1, Status.FAILED, 3))]
    assert journal.finish_sent("a", 1, again, seq=5) == (5, 0)
    assert journal.finish_sent("a", 1, sent, seq=5) == (5, 0)
    assert journal_rows(journal) == after_first
    assert journal.results_page("a", 0, 10) == [(4, first)]
    info = journal.job("a")
    assert (info.finished, info.succeeded, info.failed) == (1, 1, 0)


def test_task_filters_read_through_an_index_not_the_jobs_records(journal: Journal) -> None:
    """The dashboard's task filters by status and slowest read only the tasks they
    return: a scan of a 200,000-task job's records made 60 of them hold job
    status up for 18 s (issue 25)."""
    asked: list[str] = []
    journal.db.set_trace_callback(asked.append)
    journal.records_with_status("a", Status.FAILED, 50)
    journal.slowest("a", 50)
    journal.db.set_trace_callback(None)
    plans = [journal.db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall() for sql in asked]
    details = [" / ".join(str(step[-1]) for step in plan) for plan in plans]
    assert details == [
        "SEARCH tasks USING INDEX tasks_by_status (job=? AND <expr>=? AND seq>?)",
        "SEARCH tasks USING INDEX tasks_by_duration (job=?)",  # in order: no sort step
    ]


def test_a_journal_no_one_filters_stores_results_without_the_filters_indexes(
    tmp_path: Path,
) -> None:
    """A `run --remote`'s own journal: the filters' indexes cost about half of
    storing a result (bench/journal_store.py), and nothing there reads them."""

    def indexes(journal: Journal) -> set[str]:
        rows = journal.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {str(name) for (name,) in rows}

    unfiltered = Journal(tmp_path / "run.sqlite3", task_filters=False)
    fleet_job(unfiltered, "a")
    record = result_record(1, Status.SUCCEEDED, 0)
    assert unfiltered.finish_sent("a", 1, [(1, "sleep 1", Status.SUCCEEDED, record)], seq=1) == (
        2,
        1,
    )
    assert unfiltered.results_page("a", 0, 10) == [(1, record)]
    assert not {"tasks_by_status", "tasks_by_duration"} & indexes(unfiltered)
    unfiltered.close()
    service = Journal(tmp_path / "service.sqlite3")
    assert {"tasks_by_status", "tasks_by_duration"} <= indexes(service)
    service.close()
