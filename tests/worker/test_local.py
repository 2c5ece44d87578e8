import json
from typing import Any

from worker.execute import TaskRunner
from worker.local import Chunk, Progress, lost_results, run_chunk
from worker.result import Status
from worker.workload import TaskBatch


class RecordingPipe:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def test_a_chunk_reports_every_task_in_order() -> None:
    pipe = RecordingPipe()
    chunk = Chunk(7, "job1", 2, "w.txt", TaskBatch([3, 5, 8], ["sleep 0", "exit 1", "sleep x"]))
    runner = TaskRunner(timeout=10)
    try:
        run_chunk(pipe, "local-1", chunk, runner)  # type: ignore[arg-type]
    finally:
        runner.close()
    assert len(pipe.sent) == 1
    report: Progress = pipe.sent[0]
    assert (report.chunk_id, report.first, report.size, report.done) == (7, 0, 3, True)
    records = [json.loads(line) for line in report.records.splitlines()]
    assert [r["id"] for r in records] == ["job1:2:3", "job1:2:5", "job1:2:8"]
    assert [r["status"] for r in records] == ["succeeded", "failed", "failed"]
    assert records[2]["error"].startswith("invalid task:")
    assert all(r["worker"] == "local-1" and r["file"] == "w.txt" for r in records)
    assert report.by_status == {Status.SUCCEEDED: 1, Status.FAILED: 2}


def test_a_long_chunk_reports_before_it_ends(monkeypatch: Any) -> None:
    monkeypatch.setattr("worker.local.FLUSH_SECONDS", 0.0)
    pipe = RecordingPipe()
    chunk = Chunk(1, "j", 1, "w.txt", TaskBatch([1, 2, 3], ["sleep 1", "sleep 1", "sleep 1"]))
    runner = TaskRunner(timeout=None)
    try:
        run_chunk(pipe, "w", chunk, runner)  # type: ignore[arg-type]
    finally:
        runner.close()
    reports: list[Progress] = pipe.sent
    assert [(r.first, r.size, r.done) for r in reports] == [
        (0, 1, False),
        (1, 1, False),
        (2, 1, True),
    ]


def test_lost_results_cover_the_rest_of_a_chunk() -> None:
    chunk = Chunk(1, "j", 1, "w.txt", TaskBatch([1, 2, 3], ["a", "b", "c"]))
    lost = lost_results(chunk, 1, "worker died")
    assert [(r.line, r.task, r.status, r.error) for r in lost] == [
        (2, "b", Status.LOST, "worker died"),
        (3, "c", Status.LOST, "worker died"),
    ]
