"""The files bench's task lines, arithmetic and table, on cases worked out by hand."""

import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from bench.files_path import (
    INPUT,
    Sizes,
    by_hand_line,
    by_service,
    mb_per_s,
    median,
    per_task,
    rates_by_instance,
    summary,
    table,
    work_line,
)

SMALL = Sizes(tasks=3, input_bytes=10_000, small_files=4, small_bytes=100, large_bytes=1_000)


@pytest.mark.parametrize("line", [1, 2, 9])
def test_a_task_writes_its_slices_of_the_input(tmp_path: Path, line: int) -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes: every slice is told apart by its offset
    sizes = SMALL._replace(input_bytes=len(data))
    (tmp_path / INPUT).write_bytes(data)
    subprocess.run(["/bin/sh", "-c", work_line(sizes, line)], cwd=tmp_path, check=True)
    span = len(data) - 1_000 - 400
    start = (line - 1) * 1_000 % span
    written = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name != INPUT}
    assert sorted(written) == ["large.bin", "small-000", "small-001", "small-002", "small-003"]
    assert written["large.bin"] == data[start : start + 1_000]
    small = b"".join(written[f"small-00{n}"] for n in range(4))
    assert small == data[start + 1_000 : start + 1_400]
    assert all(len(written[f"small-00{n}"]) == 100 for n in range(4))


def test_an_input_smaller_than_a_tasks_output_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller than what a task writes"):
        work_line(SMALL._replace(input_bytes=1_400), 1)


def test_a_task_by_hand_wraps_the_same_work() -> None:
    words = shlex.split(by_hand_line(SMALL, 2, "bucket", "by-hand/abc"))
    assert words == [
        sys.executable, "-m", "bench.files_by_hand", "bucket", f"by-hand/abc/{INPUT}", INPUT,
        "by-hand/abc/out/2", work_line(SMALL, 2),
    ]  # fmt: skip


def test_requests_by_service_and_per_task() -> None:
    counts = Counter({"s3 GetObject": 5, "s3 PutObject": 3, "sqs ReceiveMessage": 10})
    services = by_service(counts)
    assert services == {"sqs": 10, "dynamodb": 0, "s3": 8}
    assert per_task(services, 4) == {"sqs": 2.5, "dynamodb": 0.0, "s3": 2.0, "all": 4.5}


def test_rates() -> None:
    assert mb_per_s(50_000_000, 0.5) == 100.0
    assert mb_per_s(1, None) is None
    assert mb_per_s(1, 0.0) is None
    transfers = [("i-a", 10_000_000, 0.5), ("i-a", 10_000_000, 1.5), ("i-b", 3_000_000, None)]
    assert rates_by_instance(transfers) == {"i-a": 10.0, "i-b": None}
    assert median([10.0, None, 30.0, 20.0]) == 20.0
    assert median([None]) is None


def test_a_runs_summary() -> None:
    figures = summary(
        SMALL._replace(tasks=10),
        wall=12.345,
        requests={"sqs": 30, "dynamodb": 20, "s3": 15},
        fetched={"i-a": 50_000_000, "i-b": 50_000_000},
        input_rates={"i-a": 100.0, "i-b": 200.0, "i-c": None},
        output_bytes=20_000_000,
        output_seconds=4.0,
    )
    assert figures == {
        "wall_seconds": 12.3,
        "s3_per_task": 1.5,
        "sqs_per_task": 3.0,
        "dynamodb_per_task": 2.0,
        "all_per_task": 6.5,
        "instances": 2,
        "input_fetched_mb": 100.0,
        "input_fetched_per_instance_mb": 50.0,
        "input_mb_per_s": 150.0,
        "output_mb": 20.0,
        "output_mb_per_s": 5.0,
    }


def test_the_table_puts_the_runs_side_by_side() -> None:
    first = {"wall_seconds": 12.3, "s3_per_task": 1.5, "input_fetched_mb": 1_234.5}
    second = {"wall_seconds": 40.0, "s3_per_task": 12.0, "input_mb_per_s": None}
    lines = table({"taskfleet": first, "by hand": second}).splitlines()
    assert lines[0].split() == ["taskfleet", "by", "hand"]
    assert lines[1].split() == ["wall", "(s)", "12.30", "40.00"]
    assert lines[2].split() == ["S3", "requests", "per", "task", "1.50", "12.00"]
    assert lines[5].split() == ["input", "fetched", "in", "total", "(MB)", "1,234.5", "n/a"]
    assert len(lines) == 10
    assert len({len(line) for line in lines}) == 1  # columns aligned
