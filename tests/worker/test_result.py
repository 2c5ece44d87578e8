import json
import time

from worker.result import Outcome, Status, decode, encode_lines, make_result, unfinished_results

KEYS = {
    "id",
    "job",
    "file",
    "line",
    "task",
    "status",
    "exit_code",
    "worker",
    "started_at",
    "finished_at",
    "duration_ms",
    "error",
    "stdout",
    "stderr",
    "truncated",
    "attempt",
    "earlier_exit_codes",
    "files",
    "files_error",
    "files_object",
}


def test_records_are_json_lines_with_every_key() -> None:
    shell = Outcome(Status.FAILED, 2, 1000.5, 1001.25, 750.0, "o\u00e9\n", 'e"\\', True, "x")
    sleep = Outcome(Status.SUCCEEDED, 0, 2000.0, 2000.01, 10.0)
    results = [
        make_result("j:1:3", "j", "dir/w.txt", 3, "exit 2", "local-1", shell),
        make_result("j:1:4", "j", "dir/w.txt", 4, "sleep 10", "local-2", sleep),
    ]
    encoded = encode_lines(results)
    lines = encoded.decode().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == KEYS
    assert set(second) == KEYS
    assert first["status"] == "failed"
    assert first["stdout"] == "o\u00e9\n"
    assert first["stderr"] == 'e"\\'
    assert first["duration_ms"] == 750.0
    assert second["stdout"] is None
    assert second["exit_code"] == 0
    assert decode(lines[0]) == results[0]


def test_a_task_that_never_ran_has_no_exit_code_worker_or_start() -> None:
    before = time.time()
    first, second = unfinished_results(
        "j", [(1, "a.txt", 3, "echo a"), (2, "b.txt", 1, "exit 1")], Status.LOST, "worker died"
    )
    assert (first.id, first.file, first.line, first.task) == ("j:1:3", "a.txt", 3, "echo a")
    assert (second.id, second.file) == ("j:2:1", "b.txt")
    for result in (first, second):
        assert (result.status, result.exit_code, result.error) == (Status.LOST, None, "worker died")
        assert (result.worker, result.started_at, result.duration_ms) == (None, None, 0.0)
        assert before <= result.finished_at <= time.time()
    record = json.loads(encode_lines([first]))
    assert (record["worker"], record["started_at"]) == (None, None)
    assert decode(encode_lines([first])) == first
