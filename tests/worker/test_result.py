import json

from worker.result import Outcome, Status, decode, encode_lines, make_result, unfinished

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


def test_unfinished_outcome_has_no_exit_code() -> None:
    outcome = unfinished(Status.LOST, "worker died", 5.0)
    assert outcome.status is Status.LOST
    assert outcome.exit_code is None
    assert outcome.error == "worker died"
    assert outcome.duration_ms == 0.0
