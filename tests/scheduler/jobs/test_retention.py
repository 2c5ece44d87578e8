"""Pruning the journal: ended jobs go whole after their retention, nothing that
may still change goes, and the file gives the space back (fast tier)."""

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.errors import JobNotFoundError
from scheduler.jobs import journal as journal_module
from scheduler.jobs.dispatch import JournalSource
from scheduler.jobs.file_store import FileStore
from scheduler.jobs.journal import DISPATCHED, SCHEMA, JobState, Journal
from scheduler.jobs.retention import (
    Retention,
    journal_bytes,
    prune_journal,
)
from worker.bundle import UsageReport
from worker.result import Status
from worker.usage import Usage

#: A result record of about a kilobyte.
BIG_RECORD = b'{"stdout": "' + b"x" * 1000 + b'"}\n'


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "j.sqlite3")
    yield opened
    opened.close()


def ended_job(journal: Journal, job_id: str, tasks: int = 1, record: bytes = b"{}\n") -> None:
    """A job of ``tasks`` tasks, each finished with ``record``."""
    journal.create_job(job_id)
    journal.add_tasks(job_id, [(1, line, f"sleep {line}") for line in range(1, tasks + 1)])
    journal.seal_job(job_id, ["w.txt"], tasks)
    results = [(line, Status.SUCCEEDED, record) for line in range(1, tasks + 1)]
    journal.finish(job_id, 1, results, journal.next_seq())


def rows_of(journal: Journal, job_id: str) -> dict[str, int]:
    """How many rows each table holds for a job."""
    return {
        table: journal.db.execute(
            f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (job_id,)
        ).fetchone()[0]
        for table, column in (
            ("jobs", "id"),
            ("tasks", "job"),
            ("job_files", "job"),
            ("usage_reports", "job"),
            ("usage_senders", "job"),
        )
    }


def test_a_job_ended_before_the_cutoff_goes_with_every_row_of_it(journal: Journal) -> None:
    ended_job(journal, "old", tasks=3)
    used = Usage(sqs_requests=1)
    journal.add_usage("old", used, UsageReport("i-1/x", 1, "old", used))
    assert set(rows_of(journal, "old").values()) != {0}
    assert journal.prune(time.time() + 1) == 1
    assert rows_of(journal, "old") == dict.fromkeys(rows_of(journal, "old"), 0)
    with pytest.raises(JobNotFoundError):
        journal.job("old")


def test_only_jobs_that_ended_before_the_cutoff_and_can_change_no_more_go(
    journal: Journal,
) -> None:
    ended_job(journal, "old")
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    ended_job(journal, "recent")  # ended after the cutoff
    journal.create_job("running")
    journal.add_tasks("running", [(1, 1, "sleep 1"), (1, 2, "sleep 2")])
    journal.seal_job("running", ["w.txt"], 2)
    journal.mark_dispatched("running", 1, [1, 2], DISPATCHED)
    journal.finish("running", 1, [(1, Status.SUCCEEDED, b"{}\n")], journal.next_seq())
    journal.create_job("uploading")
    journal.add_tasks("uploading", [(1, 1, "sleep 1")])
    # Cancelled with a task still running: its result is to come.
    journal.create_job("cancelled")
    journal.add_tasks("cancelled", [(1, 1, "sleep 1"), (1, 2, "sleep 2")])
    journal.seal_job("cancelled", ["w.txt"], 2)
    journal.mark_dispatched("cancelled", 1, [1], DISPATCHED)
    journal.cancel("cancelled", journal.next_seq())
    assert journal.job("cancelled").state == JobState.CANCELLED
    journal.db.execute("UPDATE jobs SET finished_at = 0 WHERE id = 'cancelled'")  # long ago

    assert journal.prune(cutoff) == 1
    remaining = {row[0] for row in journal.db.execute("SELECT id FROM jobs")}
    assert remaining == {"recent", "running", "uploading", "cancelled"}
    assert journal.prune(time.time() + 1) == 1  # now "recent" too; the others stay
    assert {row[0] for row in journal.db.execute("SELECT id FROM jobs")} == {
        "running",
        "uploading",
        "cancelled",
    }


def test_a_large_job_goes_in_short_steps(journal: Journal) -> None:
    tasks = journal_module.PRUNE_TASK_ROWS * 2 + 5
    ended_job(journal, "big", tasks=tasks)
    cutoff = time.time() + 1
    steps = []
    while step := journal.prune_step(cutoff):
        steps.append(step)
    assert [step.tasks for step in steps] == [
        journal_module.PRUNE_TASK_ROWS,
        journal_module.PRUNE_TASK_ROWS,
        5,
    ]
    assert [step.jobs for step in steps] == [0, 0, 1]  # the job's row goes last
    assert rows_of(journal, "big")["jobs"] == 0


def test_the_file_shrinks_once_pruned(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    try:
        for number in range(20):
            ended_job(journal, f"job{number}", tasks=200, record=BIG_RECORD)
        journal.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        full = path.stat().st_size
        assert journal.prune(time.time() + 1) == 20
        assert journal.free_pages() > 0
        journal.shrink()
        assert journal.free_pages() == 0
        assert path.stat().st_size < full / 4
    finally:
        journal.close()


def test_a_journal_of_an_earlier_version_is_compacted_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # as an earlier version made it: no auto-vacuum
        db.executescript(SCHEMA)
    journal = Journal(path)
    try:
        ended_job(journal, "old", tasks=500, record=BIG_RECORD)
    finally:
        journal.close()
    before = journal_bytes(path)
    report = prune_journal(path, keep_seconds=0)
    assert (report.jobs, report.compacted, report.bytes_before) == (1, True, before)
    assert report.bytes_after == journal_bytes(path) < before / 4
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
    assert prune_journal(path, keep_seconds=0).compacted is False


def test_retention_prunes_step_by_step_once_due_and_shrinks(journal: Journal) -> None:
    retention = Retention(keep_seconds=0)
    assert retention.every == 1.0  # a short retention is looked at often
    ended_job(journal, "a", tasks=300, record=BIG_RECORD)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (rows_of(journal, "a")["jobs"] or journal.free_pages()):
        retention.step(journal)
        time.sleep(0.01)
    assert rows_of(journal, "a")["jobs"] == 0
    assert journal.free_pages() == 0


def test_the_dispatch_source_holds_only_the_active_jobs(journal: Journal) -> None:
    source = JournalSource(journal)
    for number in range(3):
        journal.create_job(f"j{number}")
        journal.add_tasks(f"j{number}", [(1, 1, "sleep 0")])
        journal.seal_job(f"j{number}", ["w.txt"], 1)
    source.refresh()
    assert [cursor.job_id for cursor in source.cursors] == ["j0", "j1", "j2"]
    chunk = source.take(10)
    assert chunk is not None
    assert chunk.job_id == "j0"
    journal.finish("j0", 1, [(1, Status.SUCCEEDED, b"{}\n")], journal.next_seq())
    journal.prune(time.time() + 1)
    source.refresh()
    assert sorted(cursor.job_id for cursor in source.cursors) == ["j1", "j2"]
    source.refresh()  # an ended job is not taken for a new one
    assert sorted(cursor.job_id for cursor in source.cursors) == ["j1", "j2"]


def test_retention_goes_on_pruning_when_the_file_cannot_shrink(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # an earlier version's journal, not compacted
        db.executescript(SCHEMA)
    journal = Journal(path)
    try:
        retention = Retention(keep_seconds=0)
        deadline = time.monotonic() + 10
        for name in ("a", "b"):  # the second is pruned after the first left free pages
            ended_job(journal, name, tasks=300, record=BIG_RECORD)
            while time.monotonic() < deadline and rows_of(journal, name)["jobs"]:
                retention.step(journal)
                time.sleep(0.01)
            assert rows_of(journal, name)["jobs"] == 0
        assert journal.free_pages() > 0  # kept for new rows until it is compacted
    finally:
        journal.close()


def test_a_pruned_jobs_files_go_with_it_and_no_one_elses(journal: Journal, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    for job_id in ("0000aaa1", "0000aaa2"):
        ended_job(journal, job_id)
        store.give_job(job_id, None, outputs=True)
    journal.db.execute("UPDATE jobs SET finished_at = 0 WHERE id = '0000aaa1'")
    stranger = store.jobs / "0000aaa3"  # a folder the journal never had a job for
    stranger.mkdir()
    retention = Retention(keep_seconds=3600, files=store)
    retention._next = 0.0  # a pruning is due
    for _ in range(5):  # a few steps: the pruning, then the shrinking
        retention.step(journal)
    assert not store.has_job("0000aaa1")
    assert store.has_job("0000aaa2")
    assert stranger.is_dir()
    assert prune_journal(tmp_path / "j.sqlite3", 0, store).jobs == 1  # the other, at start
    assert not store.has_job("0000aaa2")
    assert stranger.is_dir()
