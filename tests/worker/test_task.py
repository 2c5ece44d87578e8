import msgspec
import pytest

from worker.task import (
    MAX_LINE_CHARS,
    MAX_LINE_NUMBER,
    MAX_SLEEP_MS,
    TaskLine,
    check_line,
    decode_task_line,
    encode_task_lines,
    is_task_line,
    new_job_id,
    task_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sleep 0", 0),
        ("sleep 250", 250),
        ("sleep\t7", 7),
        ("sleep   12", 12),
        (f"sleep {MAX_SLEEP_MS}", MAX_SLEEP_MS),
        ("echo hello", None),
        ("sleepy", None),
        ("sleep.sh 3", None),
        ("/bin/sleep 1", None),
    ],
)
def test_check_line_parses_sleeps_and_shell_commands(text: str, expected: int | None) -> None:
    assert check_line(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sleep", "needs a duration"),
        ("sleep -1", "whole number"),
        ("sleep 1.5", "whole number"),
        ("sleep abc", "whole number"),
        ("sleep 1e3", "whole number"),
        ("sleep \u0663", "whole number"),  # an Arabic-Indic digit: isdigit() but not ASCII
        (f"sleep {MAX_SLEEP_MS + 1}", "above the maximum"),
        ("echo a\x00b", "NUL"),
        ("x" * (MAX_LINE_CHARS + 1), "characters long"),
    ],
)
def test_check_line_refuses_bad_lines_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_line(text)


def test_task_lines_round_trip() -> None:
    tasks = [TaskLine("a.txt", 1, "sleep 1"), TaskLine("dir/b c.txt", 9, 'echo "é\\n"')]
    encoded = encode_task_lines(tasks)
    assert encoded.count(b"\n") == 2
    assert [decode_task_line(line) for line in encoded.splitlines()] == tasks


def test_task_id_names_job_file_and_line() -> None:
    assert task_id("ab12", 2, 40) == "ab12:2:40"


@pytest.mark.parametrize("line", [0, -1, MAX_LINE_NUMBER + 1, 2**63])
def test_a_task_line_number_out_of_range_is_refused(line: int) -> None:
    encoded = f'{{"file": "w.txt", "line": {line}, "task": "echo"}}'.encode()
    with pytest.raises(msgspec.ValidationError, match=r"\$\.line"):
        decode_task_line(encoded)


def test_a_line_of_exactly_the_longest_length_is_a_task() -> None:
    assert check_line("x" * MAX_LINE_CHARS) is None  # a command, not refused


@pytest.mark.parametrize(
    ("text", "is_task"),
    [("sleep 1", True), ("echo '#' x", True), ("", False), ("# a comment", False), ("#", False)],
)
def test_blank_lines_and_comments_carry_no_task(text: str, is_task: bool) -> None:
    assert is_task_line(text) is is_task


def test_job_ids_are_short_random_hex() -> None:
    ids = {new_job_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(job_id) == 8 and int(job_id, 16) >= 0 for job_id in ids)
