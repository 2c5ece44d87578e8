from pathlib import Path

import pytest

from tests.conftest import WriteWorkload
from worker.errors import EmptyWorkloadError, WorkloadError
from worker.task import MAX_LINE_CHARS
from worker.workload import TaskReader, check_workload


def read_all(path: str) -> list[tuple[int, str]]:
    pairs: list[tuple[int, str]] = []
    with TaskReader(path) as reader:
        while (batch := reader.read(2)).lines:
            pairs.extend(zip(batch.lines, batch.texts, strict=True))
    return pairs


def test_blank_lines_comments_and_crlf_are_handled(workload: WriteWorkload) -> None:
    path = workload(raw=b"# header\r\n\r\nsleep 5\r\n   \r\n  echo hi  \r\n#sleep 1\r\nsleep 0")
    assert read_all(path) == [(3, "sleep 5"), (5, "echo hi"), (7, "sleep 0")]


def test_counts_span_several_files(workload: WriteWorkload) -> None:
    first = workload("sleep 1", "sleep 2")
    second = workload("# nothing", "echo x", "echo y", "echo z")
    counts = check_workload([first, second])
    assert counts.total == 5
    assert counts.per_file == (2, 3)


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        (["sleep 1", "sleep"], 2, "needs a duration"),
        (["sleep -1"], 1, "whole number"),
        (["echo ok", "# c", "sleep 1.5"], 3, "whole number"),
        (["sleep abc"], 1, "whole number"),
        (["sleep 999999999"], 1, "above the maximum"),
        (["x" * (MAX_LINE_CHARS + 1)], 1, "characters long"),
    ],
)
def test_bad_lines_are_refused_with_file_and_line(
    workload: WriteWorkload, lines: list[str], line: int, reason: str
) -> None:
    path = workload(*lines)
    with pytest.raises(WorkloadError, match=reason) as refused:
        check_workload([path])
    assert str(refused.value).startswith(f"{path}:{line}: ")


def test_invalid_utf8_names_the_line(workload: WriteWorkload) -> None:
    path = workload(raw=b"sleep 1\necho \xff\xfe\n")
    with pytest.raises(WorkloadError, match=r":2: is not valid UTF-8 \(byte 0xff at column 6\)"):
        check_workload([path])


def test_nul_byte_names_the_line(workload: WriteWorkload) -> None:
    path = workload(raw=b"sleep 1\nsleep 2\necho a\x00b\n")
    with pytest.raises(WorkloadError, match=r":3: line contains a NUL byte"):
        check_workload([path])


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="no such file"):
        check_workload([str(tmp_path / "absent.txt")])
    with pytest.raises(WorkloadError, match="is a directory"):
        check_workload([str(tmp_path)])


def test_a_bad_second_file_refuses_the_whole_submission(workload: WriteWorkload) -> None:
    good = workload("sleep 1")
    bad = workload("sleep x")
    with pytest.raises(WorkloadError, match=f"{bad}:1:"):
        check_workload([good, bad])


def test_a_workload_without_tasks_says_so(workload: WriteWorkload) -> None:
    path = workload("# only a comment", "", "   ")
    with pytest.raises(EmptyWorkloadError, match="no tasks"):
        check_workload([path])
    with pytest.raises(EmptyWorkloadError, match="no workload file"):
        check_workload([])


def test_unchecked_reading_leaves_parsing_to_workers(workload: WriteWorkload) -> None:
    path = workload("sleep nope", "echo ok")
    with TaskReader(path, check=False) as reader:
        assert reader.read(10).texts == ["sleep nope", "echo ok"]


def test_only_newlines_end_lines(workload: WriteWorkload) -> None:
    # Characters str.splitlines() would break on stay inside their task.
    path = workload(raw="echo a\x0cb\nsleep 1\r\necho c\u2028d\x1ce\n\necho f".encode())
    assert read_all(path) == [
        (1, "echo a\x0cb"),
        (2, "sleep 1"),
        (3, "echo c\u2028d\x1ce"),
        (5, "echo f"),
    ]


def test_line_numbers_hold_across_read_blocks(workload: WriteWorkload) -> None:
    # Enough lines for several read blocks, with a comment near the end only.
    lines = [f"echo {n}" for n in range(1, 30_001)]
    lines[29_000] = "# a comment"
    path = workload(*lines)
    with TaskReader(path) as reader:
        batch = reader.read(40_000)
    assert len(batch.lines) == 29_999
    assert batch.lines[:2] == [1, 2]
    assert (batch.lines[28_999], batch.texts[28_999]) == (29_000, "echo 29000")
    assert (batch.lines[29_000], batch.texts[29_000]) == (29_002, "echo 29002")
    assert batch.lines[-1] == 30_000
