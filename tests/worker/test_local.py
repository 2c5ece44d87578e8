import ctypes
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from worker.execute import TaskRunner, plan
from worker.inputs import check_uploads, stage
from worker.local import (
    Chunk,
    ChunkReport,
    CpuLap,
    ReportSender,
    SendOnce,
    Tracking,
    lost_results,
    run_chunk,
    run_in_own_dir,
)
from worker.result import Outcome, Status
from worker.task_log import TaskLog, new_ring, read_task_log
from worker.workdir import TaskFiles, WorkDirs, remove_tree
from worker.workload import TaskBatch

RING = new_ring()


@pytest.fixture
def tracking(tmp_path: Path) -> Tracking:
    started = ctypes.c_uint64(1)  # the chunk run is the worker's first
    log = TaskLog(tmp_path / "tasks.log", RING)
    return Tracking(started, (ctypes.c_int64 * 4)(1, -1, 0, 0), log, CpuLap())


class RecordingPipe:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def test_a_chunk_reports_every_task_in_order(tracking: Tracking, tmp_path: Path) -> None:
    pipe = RecordingPipe()
    chunk = Chunk(7, "job1", 2, "w.txt", TaskBatch([3, 5, 8], ["sleep 0", "exit 1", "sleep x"]))
    runner = TaskRunner(timeout=10)
    try:
        run_chunk(pipe, "local-1", chunk, runner, tracking)
    finally:
        runner.close()
    # Each task was logged as it ended: a scheduler reads them if the worker dies.
    logged = read_task_log(tmp_path / "tasks.log", RING)[1]
    assert sorted(logged) == [0, 1, 2]
    assert isinstance(logged[0], tuple)  # a sleep: its two clock readings
    assert isinstance(logged[1], Outcome)
    assert logged[1].exit_code == 1
    assert list(tracking.position)[:3] == [1, 2, 0]  # the last task it was on, no command
    assert len(pipe.sent) == 1
    report: ChunkReport = pipe.sent[0]
    assert (report.chunk_id, report.first, report.size, report.done) == (7, 0, 3, True)
    records = [json.loads(line) for line in report.records.splitlines()]
    assert [r["id"] for r in records] == ["job1:2:3", "job1:2:5", "job1:2:8"]
    assert [r["status"] for r in records] == ["succeeded", "failed", "failed"]
    assert records[2]["error"].startswith("invalid task:")
    assert all(r["worker"] == "local-1" and r["file"] == "w.txt" for r in records)
    assert report.by_status == {Status.SUCCEEDED: 1, Status.FAILED: 2}


def test_sleep_records_carry_epoch_times_and_their_duration(tracking: Tracking) -> None:
    pipe = RecordingPipe()
    chunk = Chunk(1, "j", 1, "w.txt", TaskBatch([1, 2], ["sleep 20", "sleep 0"]))
    runner = TaskRunner(timeout=None)
    before = time.time()
    try:
        run_chunk(pipe, "w", chunk, runner, tracking)
    finally:
        runner.close()
    after = time.time()
    report: ChunkReport = pipe.sent[0]
    slept, instant = [json.loads(line) for line in report.records.splitlines()]
    assert 20.0 <= slept["duration_ms"] < 1000.0
    assert 0.0 <= instant["duration_ms"] < slept["duration_ms"]
    for record in (slept, instant):
        assert (record["status"], record["exit_code"], record["error"]) == ("succeeded", 0, None)
        assert before - 0.01 <= record["started_at"] <= record["finished_at"] <= after + 0.01
        measured_ms = (record["finished_at"] - record["started_at"]) * 1000.0
        assert abs(measured_ms - record["duration_ms"]) < 0.01
    assert slept["finished_at"] <= instant["started_at"]
    assert report.task_seconds == (slept["duration_ms"] + instant["duration_ms"]) / 1000.0


def reports_of(
    texts: list[str], tracking: Tracking, pipe: RecordingPipe | None = None
) -> list[ChunkReport]:
    """The reports of one chunk of ``texts`` (lines 1, 2, ...) run to its end."""
    pipe = pipe or RecordingPipe()
    chunk = Chunk(1, "j", 1, "w.txt", TaskBatch(list(range(1, len(texts) + 1)), texts))
    runner = TaskRunner(timeout=20)
    try:
        run_chunk(pipe, "w", chunk, runner, tracking)
    finally:
        runner.close()
    return pipe.sent


def test_a_long_chunk_reports_before_it_ends(monkeypatch: Any, tracking: Tracking) -> None:
    monkeypatch.setattr("worker.local.FLUSH_NS", 0)
    reports = reports_of(["sleep 1", "sleep 1", "sleep 1"], tracking)
    assert [(r.first, r.size, r.done) for r in reports] == [
        (0, 1, False),
        (1, 1, False),
        (2, 1, True),
    ]


class MarkingPipe(RecordingPipe):
    """Records reports, and creates ``mark`` when one comes before its chunk's end."""

    def __init__(self, mark: Path) -> None:
        super().__init__()
        self.mark = mark

    def send(self, message: Any) -> None:
        super().send(message)
        if not message.done:
            self.mark.touch()


def test_what_finished_before_a_long_command_is_reported_while_it_runs(
    tracking: Tracking, tmp_path: Path
) -> None:
    # The long command runs until the report of the two before it has been sent.
    mark = tmp_path / "reported"
    waits = f"while [ ! -e {mark} ]; do sleep 0.05; done"
    reports = reports_of(["sleep 0", "echo quick", waits, "sleep 0"], tracking, MarkingPipe(mark))
    assert [(r.first, r.size, r.done) for r in reports] == [(0, 2, False), (2, 2, True)]
    records = [json.loads(line) for line in reports[1].records.splitlines()]
    assert records[0]["status"] == "succeeded"  # it saw the report, and ended


def test_what_finished_before_a_long_sleep_is_reported_first(tracking: Tracking) -> None:
    reports = reports_of(["echo quick", "sleep 0", "sleep 600"], tracking)
    assert [(r.first, r.size, r.done) for r in reports] == [(0, 2, False), (2, 1, True)]


def test_an_early_report_to_a_scheduler_that_is_gone_waits_for_the_command() -> None:
    def gone() -> int:
        raise BrokenPipeError("the scheduler went away")

    early = SendOnce(gone)
    early()  # inside a command's wait: the command is not cut short
    assert early.at == 0  # nothing sent: the next report, after the command, fails


def test_lost_results_cover_the_rest_of_a_chunk() -> None:
    chunk = Chunk(1, "j", 1, "w.txt", TaskBatch([1, 2, 3], ["a", "b", "c"]))
    lost = lost_results(chunk, 1, "worker died")
    assert [(r.line, r.task, r.status, r.error) for r in lost] == [
        (2, "b", Status.LOST, "worker died"),
        (3, "c", Status.LOST, "worker died"),
    ]


def progress(chunk_id: int, records: bytes = b"") -> ChunkReport:
    return ChunkReport("w", chunk_id, 0, 0, records, {}, 0.0, 0.0, True)


def test_reports_are_sent_in_order_and_flushed_on_close() -> None:
    theirs, ours = multiprocessing.Pipe()
    sender = ReportSender(ours)
    big = b"x" * 1_000_000  # more than a pipe holds: sending waits for the reader
    for chunk_id in range(3):  # one being sent, QUEUED_REPORTS waiting: none blocks
        sender.send(progress(chunk_id, big))
    received = [theirs.recv().chunk_id for _ in range(3)]
    sender.send(progress(3))
    sender.close()
    received.append(theirs.recv().chunk_id)
    assert received == [0, 1, 2, 3]
    assert not theirs.poll(0.05)


def test_a_report_to_a_scheduler_that_is_gone_fails() -> None:
    theirs, ours = multiprocessing.Pipe()
    theirs.close()
    sender = ReportSender(ours)
    with pytest.raises(BrokenPipeError, match="cannot report"):
        sender.send(progress(1))  # a small report goes at once
    with pytest.raises(BrokenPipeError, match="cannot report"):
        sender.send(progress(2, b"x" * 1_000_000))
    sender.close()


def test_a_big_report_to_a_scheduler_that_is_gone_fails_with_the_next() -> None:
    theirs, ours = multiprocessing.Pipe()
    theirs.close()
    sender = ReportSender(ours)
    sender.send(progress(1, b"x" * 1_000_000))  # no ring: the thread sends it
    sender.close()  # the thread met the closed pipe and ended anyway
    with pytest.raises(BrokenPipeError, match="cannot report"):
        sender.send(progress(2))


def test_a_task_whose_jobs_inputs_went_fails_and_its_worker_goes_on(tmp_path: Path) -> None:
    """A service cancelling a job removes its copy of its inputs while a chunk
    of it may still run here: that chunk's next task fails, the worker lives."""
    (tmp_path / "in.txt").write_text("shared")
    run = tmp_path / "run"
    run.mkdir()
    stage(check_uploads([str(tmp_path / "in.txt")]), run / "inputs")
    dirs = WorkDirs(TaskFiles(str(run), str(run / "inputs")))
    remove_tree(run / "inputs")
    chunk = Chunk(1, "job", 1, "w.txt", TaskBatch([1], ["cat in.txt"]))
    runner = TaskRunner(10)
    try:
        outcome = run_in_own_dir(runner, dirs, chunk, 0, plan("cat in.txt"), None)
    finally:
        runner.close()
    assert outcome.status == Status.FAILED
    assert (outcome.error or "").startswith("no directory:")
