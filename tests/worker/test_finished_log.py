"""The finished-but-unsent results a remote worker keeps on its instance."""

import stat
from pathlib import Path

from worker.finished_log import FinishedLog
from worker.result import Result, Status


def result(line: int) -> Result:
    now = 1_780_000_000.5
    return Result(
        f"job1:1:{line}", "job1", "w.txt", line, "echo", Status.SUCCEEDED, 0, "i-1",
        now, now, 1.0, None, f"out {line}\n", "", False,
    )  # fmt: skip


def test_a_new_process_reads_what_the_old_one_finished(tmp_path: Path) -> None:
    FinishedLog(tmp_path / "finished").append("b1", 2, result(3))
    FinishedLog(tmp_path / "finished").append("b1", 0, result(1))
    again = FinishedLog(tmp_path / "finished")
    assert again.read("b1") == {2: result(3), 0: result(1)}
    assert again.read("b2") == {}


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = FinishedLog(tmp_path)
    log.append("b1", 0, result(1))
    with (tmp_path / "b1.jsonl").open("ab") as file:
        file.write(b'[1,{"id":"job1:1:2","jo')  # the process died mid-write
    assert log.read("b1") == {0: result(1)}


def test_logs_are_private_and_go_when_done(tmp_path: Path) -> None:
    log = FinishedLog(tmp_path / "finished")
    log.append("b1", 0, result(1))
    log.append("b2", 0, result(1))
    assert stat.S_IMODE((tmp_path / "finished").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "finished" / "b1.jsonl").stat().st_mode) == 0o600
    log.forget("b1")
    assert log.read("b1") == {}
    log.clear()
    assert list((tmp_path / "finished").iterdir()) == []
