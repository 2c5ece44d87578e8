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
