"""JournalSink.fleet_results: the fleet's results reach the journal only for
the job, file, line and text that were sent (the fleet guard, fast tier)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.jobs.dispatch import JournalSink, JournalSource
from scheduler.jobs.journal import SENT, Journal, Placement
from worker.result import Outcome, Result, Status, make_result
from worker.task import task_id
from worker.workdir import TaskFiles

FILES = ["w.txt"]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "j.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def sink(journal: Journal) -> JournalSink:
    """A sink over a journal with job "a": line 1 sent to the fleet, line 2 not."""
    made = JournalSink(journal, notify=lambda: None, fleet=True)
    journal.create_job("a", Placement.REMOTE)
    journal.add_tasks("a", [(1, 1, "sleep 1"), (1, 2, "sleep 2")])
    journal.seal_job("a", FILES, 2)
    journal.mark_dispatched("a", 1, [1], SENT)
    return made


def fleet_result(
    line: int,
    text: str,
    *,
    job: str = "a",
    file: str = "w.txt",
    status: Status = Status.SUCCEEDED,
    worker: str = "i-1",
) -> Result:
    outcome = Outcome(status, 0 if status is Status.SUCCEEDED else 1, 1.0, 2.0, 1.0)
    return make_result(task_id(job, 1, line), job, file, line, text, worker, outcome)


def stored(journal: Journal) -> list[tuple[str, str, str]]:
    """(id, status, worker) of every record the job keeps."""
    records = (json.loads(record) for _, record in journal.results_page("a", 0, 100))
    return [(r["id"], r["status"], r["worker"]) for r in records]


@pytest.mark.parametrize(
    "forged",
    [
        fleet_result(2, "sleep 2"),  # never sent to the fleet
        fleet_result(1, "sleep 9"),  # sent, but with another text
        fleet_result(1, "sleep 1", job="b"),  # another job's id, in job a's message
        fleet_result(1, "sleep 1", file="other.txt"),  # a file the job does not have
    ],
    ids=["unsent", "changed-text", "other-job", "other-file"],
)
def test_a_result_for_no_task_sent_is_not_taken(
    journal: Journal, sink: JournalSink, forged: Result
) -> None:
    assert sink.fleet_results("a", [forged], FILES) == 0
    assert stored(journal) == []
    assert journal.job("a").finished == 0
    # The task that was sent still takes its own result afterwards.
    assert sink.fleet_results("a", [fleet_result(1, "sleep 1")], FILES) == 1
    assert stored(journal) == [("a:1:1", "succeeded", "i-1")]


def test_a_duplicate_result_keeps_the_first(journal: Journal, sink: JournalSink) -> None:
    assert sink.fleet_results("a", [fleet_result(1, "sleep 1")], FILES) == 1
    again = fleet_result(1, "sleep 1", status=Status.FAILED, worker="i-2")
    assert sink.fleet_results("a", [again], FILES) == 0
    assert stored(journal) == [("a:1:1", "succeeded", "i-1")]
    info = journal.job("a")
    assert (info.finished, info.succeeded, info.failed) == (1, 1, 0)


def test_only_the_sent_task_of_a_mixed_message_is_taken(
    journal: Journal, sink: JournalSink
) -> None:
    message = [fleet_result(2, "sleep 2"), fleet_result(1, "sleep 1"), fleet_result(1, "x")]
    assert sink.fleet_results("a", message, FILES) == 1
    assert stored(journal) == [("a:1:1", "succeeded", "i-1")]


class StubFiles:
    """Job "f" has files of its own; every other job none. Notes the jobs that end."""

    def __init__(self, tmp_path: Path) -> None:
        self.files = TaskFiles(str(tmp_path / "f"), str(tmp_path / "f" / "inputs"))
        self.ended: list[str] = []

    def task_files(self, job_id: str) -> TaskFiles | None:
        return self.files if job_id == "f" else None

    def admit(self, _job_id: str, records: list[bytes]) -> list[bytes]:
        return records

    def job_ended(self, job_id: str) -> None:
        self.ended.append(job_id)


def test_a_chunk_carries_its_jobs_files_and_a_job_that_ends_lets_them_go(
    journal: Journal, tmp_path: Path
) -> None:
    files = StubFiles(tmp_path)
    source = JournalSource(journal, files)
    for job_id in ("f", "g"):
        journal.create_job(job_id)
        journal.add_tasks(job_id, [(1, 1, "cat x")])
        journal.seal_job(job_id, FILES, 1)
    source.refresh()
    chunks = {chunk.job_id: chunk for chunk in (source.take(10), source.take(10)) if chunk}
    assert chunks["f"].files == files.files
    assert chunks["g"].files is None
    journal.finish("f", 1, [(1, Status.SUCCEEDED, b"{}\n")], journal.next_seq())
    source.refresh()
    assert files.ended == ["f"]
