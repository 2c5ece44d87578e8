from scheduler.resume import not_done
from worker.workload import TaskBatch


def test_a_task_done_is_left_out_by_file_line_and_text() -> None:
    batch = TaskBatch([1, 2, 3], ["echo a", "echo b", "echo c"])
    done = frozenset({("w.txt", 1, "echo a"), ("w.txt", 2, "echo changed"), ("x.txt", 3, "echo c")})
    kept = not_done("w.txt", batch, done)
    # Line 2's text changed since, and line 3 was done in another file: both run.
    assert (kept.lines, kept.texts) == ([2, 3], ["echo b", "echo c"])
    assert not_done("w.txt", batch, frozenset()) is batch
