from pathlib import Path

from worker.inputs import check_uploads, stage
from worker.result import Status
from worker.workdir import (
    PARTIAL,
    JobDirs,
    TaskFiles,
    WorkDirs,
    place,
    remove_tree,
    task_label,
)


def dirs_with_input(tmp_path: Path) -> WorkDirs:
    (tmp_path / "in.txt").write_text("shared")
    run = tmp_path / "run"
    run.mkdir()
    stage(check_uploads([str(tmp_path / "in.txt")]), run / "inputs")
    return WorkDirs(TaskFiles(str(run), str(run / "inputs"), str(tmp_path / "out")))


def test_a_task_that_succeeds_brings_its_files_back_and_leaves_no_directory(
    tmp_path: Path,
) -> None:
    dirs = dirs_with_input(tmp_path)
    task_dir = dirs.make()
    assert (task_dir / "in.txt").read_text() == "shared"
    (task_dir / "result").write_text("r")
    collected = dirs.finish(task_dir, "w.txt-3", Status.SUCCEEDED)
    assert collected is not None
    assert [f.path for f in collected.files] == ["result"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [PARTIAL, "w.txt-3"]
    assert [p.name for p in (tmp_path / "out" / "w.txt-3").iterdir()] == ["result"]
    assert not task_dir.exists()


def test_a_task_that_fails_leaves_nothing_and_says_so(tmp_path: Path) -> None:
    dirs = dirs_with_input(tmp_path)
    task_dir = dirs.make()
    (task_dir / "half.csv").write_text("1,")
    collected = dirs.finish(task_dir, "w.txt-4", Status.FAILED)
    assert collected is not None
    assert (collected.files, collected.error) == ((), "1 files not kept: the task did not succeed")
    assert not (tmp_path / "out" / "w.txt-4").exists()
    assert not task_dir.exists()


def test_without_an_output_dir_a_task_still_has_a_directory_of_its_own(tmp_path: Path) -> None:
    dirs = WorkDirs(TaskFiles(str(tmp_path)))
    first = dirs.make()
    (first / "x").write_text("x")
    assert dirs.finish(first, "w.txt-1", Status.SUCCEEDED) is None
    assert not first.exists()
    second = dirs.make()
    assert second != first
    assert list(second.iterdir()) == []


def test_a_directory_left_empty_serves_the_next_task_and_no_other(tmp_path: Path) -> None:
    dirs = WorkDirs(TaskFiles(str(tmp_path)))
    first = dirs.make()
    dirs.finish(first, "w.txt-1", Status.SUCCEEDED)
    assert dirs.make() == first
    assert dirs.make() != first  # taken: the next one is made


def test_a_tree_made_read_only_is_removed(tmp_path: Path) -> None:
    locked = tmp_path / "t" / "locked"
    locked.mkdir(parents=True)
    (locked / "f").write_text("f")
    locked.chmod(0o000)
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_placing_replaces_what_an_earlier_run_left(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stale").write_text("stale")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "fresh").write_text("fresh")
    place(tmp_path / "new", tmp_path / "old")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["fresh"]


def test_a_task_is_named_by_its_file_s_base_name_and_line() -> None:
    assert task_label("work/dir/w.txt", 17) == "w.txt-17"


def test_each_jobs_chunks_use_its_own_dirs_and_the_pools_otherwise(tmp_path: Path) -> None:
    pool = WorkDirs(TaskFiles(str(tmp_path)))
    dirs = JobDirs(pool)
    assert dirs.of(None) is pool
    first = TaskFiles(str(tmp_path / "job-a"), None, str(tmp_path / "out-a"))
    (tmp_path / "job-a").mkdir()
    mine = dirs.of(first)
    assert mine is not None
    assert mine is not pool
    assert mine.output == tmp_path / "out-a"
    assert dirs.of(first) is mine  # kept for the job's next chunk
    for n in range(JobDirs.KEPT):
        (tmp_path / f"job-{n}").mkdir()
        dirs.of(TaskFiles(str(tmp_path / f"job-{n}")))
    assert dirs.of(first) is not mine  # the oldest was let go: a bound, not a leak
