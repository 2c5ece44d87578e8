"""Pruning a scheduler's journal with the real CLI: `taskfleet prune` beside a
running scheduler, and a scheduler that prunes as it starts."""

import re
import sqlite3
from pathlib import Path

import pytest

from scheduler.jobs.file_store import store_of
from tests.conftest import StartScheduler, WriteWorkload, run_cli

pytestmark = pytest.mark.e2e


def submitted_job(workload: WriteWorkload, url: str) -> str:
    """Run a small job on the scheduler at ``url`` to its end; its id."""
    done = run_cli("submit", workload("sleep 0", "echo hi"), "--scheduler", url)
    assert done.returncode == 0, done.stderr
    match = re.search(r"job (\S+): 2 tasks", done.stderr)
    assert match is not None, done.stderr
    return match[1]


def jobs_in(journal: Path) -> set[str]:
    with sqlite3.connect(journal) as db:
        return {job_id for (job_id,) in db.execute("SELECT id FROM jobs")}


def test_prune_beside_a_running_scheduler_forgets_ended_jobs(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    service = scheduler_service(journal=journal)
    job = submitted_job(workload, service.url)

    kept = run_cli("prune", "--journal", str(journal))  # 30 days: the job stays
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("pruned 0 jobs ended over 30 days ago; journal ")
    assert jobs_in(journal) == {job}

    pruned = run_cli("prune", "--journal", str(journal), "--keep-days", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 1 jobs ended over 0 days ago")
    assert jobs_in(journal) == set()
    gone = run_cli("status", job, "--scheduler", service.url)
    assert gone.returncode == 2
    assert "404" in gone.stderr

    # The scheduler goes on as before.
    assert submitted_job(workload, service.url) != job


def test_a_scheduler_prunes_its_journal_as_it_starts(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    first = scheduler_service(journal=journal)
    jobs = {submitted_job(workload, first.url) for _ in range(2)}
    first.kill()

    kept = scheduler_service("--keep-days", "1", journal=journal)
    assert "pruned" not in kept.log.read_text()
    assert jobs_in(journal) == jobs
    kept.kill()

    pruning = scheduler_service("--keep-days", "0", journal=journal)
    assert "pruned 2 jobs ended over 0 days ago" in pruning.log.read_text()
    assert jobs_in(journal) == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--keep-days", "-1"), "--keep-days"),
        (("--keep-days", "soon"), "--keep-days"),
        (("--journal", "/nonexistent/journal.sqlite3"), "--journal: /nonexistent/journal"),
    ],
)
def test_prune_refuses_bad_input_naming_the_option(args: tuple[str, ...], message: str) -> None:
    refused = run_cli("prune", *args)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert refused.stdout == ""


def test_prune_refuses_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    refused = run_cli("prune", "--journal", str(text))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"taskfleet: --journal: {text}: ")
    assert len(refused.stderr.splitlines()) == 1
    assert text.read_text() == "not a database\n" * 100


def test_prune_forgets_a_pruned_jobs_files_too(
    workload: WriteWorkload, scheduler_service: StartScheduler, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    service = scheduler_service(journal=journal)
    done = run_cli("submit", workload("echo x > x.txt"), "-s", service.url, "--keep-files")
    assert done.returncode == 0, done.stderr
    job = re.search(r"job (\S+): 1 tasks", done.stderr)
    assert job is not None, done.stderr
    folder = store_of(journal) / "jobs" / job[1]
    assert (folder / "outputs").is_dir()
    pruned = run_cli("prune", "--journal", str(journal), "--keep-days", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert not folder.exists()
