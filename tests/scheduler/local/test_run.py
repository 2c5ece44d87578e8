"""The embedded run with real worker processes."""

import io
import json
from collections import Counter
from typing import Any

from scheduler.local.run import run_embedded
from scheduler.summary import Summary
from tests.conftest import WriteWorkload
from worker.workload import check_workload

Record = dict[str, Any]


def run(
    paths: list[str], workers: int = 2, timeout: float | None = 30
) -> tuple[list[Record], Summary]:
    output = io.BytesIO()
    summary = run_embedded(
        paths, counts=check_workload(paths), workers=workers, timeout=timeout, output=output
    )
    records = [json.loads(line) for line in output.getvalue().splitlines()]
    return records, summary


def test_every_task_of_a_mixed_workload_reports_exactly_once(workload: WriteWorkload) -> None:
    first = workload(*(["sleep 0"] * 500 + ["echo hi", "exit 3", "sleep 20"]))
    second = workload("# comment", "", "printf 'a\\nb'", "sleep 1")
    records, summary = run([first, second])
    ids = Counter(record["id"] for record in records)
    assert len(ids) == 505
    assert set(ids.values()) == {1}
    job = records[0]["job"]
    assert f"{job}:2:3" in ids
    assert f"{job}:2:4" in ids
    by_line = {(r["file"], r["line"]): r for r in records}
    assert by_line[(first, 502)]["status"] == "failed"
    assert by_line[(first, 502)]["exit_code"] == 3
    assert by_line[(second, 3)]["stdout"] == "a\nb"
    assert by_line[(first, 503)]["duration_ms"] >= 20
    assert summary.done == 505
    assert summary.failed == 1
    assert summary.exit_code() == 1


def test_a_task_that_kills_its_worker_is_reported_lost(workload: WriteWorkload) -> None:
    path = workload("sleep 0", "kill -9 $PPID", "sleep 0")
    after = workload("echo after")  # another file: always another chunk
    records, summary = run([path, after], workers=1)
    assert len(records) == 4
    assert len({r["id"] for r in records}) == 4
    by_place = {(r["file"], r["line"]): r for r in records}
    killer = by_place[(path, 2)]
    assert killer["status"] == "lost"
    assert "died" in killer["error"]
    assert by_place[(path, 1)]["status"] == "succeeded"
    # Unreported tasks of the dead worker's chunk may have run: lost, not re-run.
    assert by_place[(path, 3)]["status"] in ("lost", "succeeded")
    assert by_place[(after, 1)]["status"] == "succeeded"  # a new worker took over
    assert summary.exit_code() == 1


def test_time_limit_applies_to_each_command(workload: WriteWorkload) -> None:
    path = workload("true && sleep 5 && echo never", "echo quick")
    records, _ = run([path], timeout=0.5)
    statuses = {r["line"]: r["status"] for r in records}
    assert statuses == {1: "timed_out", 2: "succeeded"}
