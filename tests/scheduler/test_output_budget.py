from pathlib import Path

from scheduler.output_budget import OutputBudget
from worker.result import Outcome, OutputFile, Result, Status, make_result


def record_with(line: int, sizes: list[int]) -> Result:
    files = tuple(OutputFile(f"f{n}", size, "0" * 64) for n, size in enumerate(sizes))
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1000.0, files=files)
    return make_result(f"j:1:{line}", "j", "dir/w.txt", line, "true", "local-1", outcome)


def test_a_task_past_the_jobs_limit_has_its_files_taken_back(tmp_path: Path) -> None:
    for line in (1, 2, 3):
        (tmp_path / f"w.txt-{line}").mkdir()
    budget = OutputBudget(tmp_path, max_files=3, max_bytes=100)
    first, second, third = budget.admit(
        [record_with(1, [10, 10]), record_with(2, [10, 10]), record_with(3, [80])]
    )
    assert [len(r.files or ()) for r in (first, second, third)] == [2, 0, 1]
    assert second.files_error == "2 files not kept: over the job's limit of 3 files or 100 bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.txt-1", "w.txt-3"]
    assert (budget.files, budget.bytes) == (3, 100)
