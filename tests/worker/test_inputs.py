import os
import stat
from pathlib import Path

import pytest

from worker.errors import InputError
from worker.inputs import READ_ONLY_DIR, Staged, check_uploads, stage


def tree(root: Path) -> Path:
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("a")
    (root / "data" / "deep" / "b.txt").write_text("bb")
    (root / "one.txt").write_text("one")
    return root


def test_files_and_directories_keep_their_own_names(tmp_path: Path) -> None:
    tree(tmp_path)
    files = check_uploads([str(tmp_path / "data"), str(tmp_path / "one.txt")])
    assert [(f.name, f.size) for f in files] == [
        ("data/a.txt", 1),
        ("data/deep/b.txt", 2),
        ("one.txt", 3),
    ]


@pytest.mark.parametrize(
    ("paths", "max_bytes", "max_files", "message"),
    [
        (["missing"], 100, 100, "--upload {root}/missing: no such file or directory"),
        (["data", "data"], 100, 100, "--upload {root}/data: a task would see two uploads named"),
        (["data"], 2, 100, "--upload {root}/data: more than 2 bytes in all (--upload-max-bytes)"),
        (["data"], 100, 1, "--upload {root}/data: more than 1 files (--upload-max-files)"),
    ],
)
def test_what_cannot_go_is_refused_by_name(
    tmp_path: Path, paths: list[str], max_bytes: int, max_files: int, message: str
) -> None:
    tree(tmp_path)
    with pytest.raises(InputError) as refused:
        check_uploads([str(tmp_path / p) for p in paths], max_bytes, max_files)
    assert str(refused.value).startswith(message.format(root=tmp_path))


def test_a_link_to_a_file_counts_as_the_file_and_one_to_a_directory_is_refused(
    tmp_path: Path,
) -> None:
    tree(tmp_path)
    (tmp_path / "data" / "to-one").symlink_to(tmp_path / "one.txt")
    assert ("data/to-one", 3) in [(f.name, f.size) for f in check_uploads([str(tmp_path / "data")])]
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data")
    with pytest.raises(InputError, match="data/loop: not a regular file"):
        check_uploads([str(tmp_path / "data")])


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match="pipe: not a regular file"):
        check_uploads([str(tmp_path / "pipe")])


def test_staged_once_read_only_and_linked_into_each_task(tmp_path: Path) -> None:
    tree(tmp_path / "user")
    files = check_uploads([str(tmp_path / "user" / "data")])
    stage(files, tmp_path / "staged")
    staged = Staged.read(tmp_path / "staged")
    first, second = tmp_path / "t1", tmp_path / "t2"
    for task in (first, second):
        task.mkdir()
        staged.link_into(task)
    b = [task / "data" / "deep" / "b.txt" for task in (first, second)]
    assert b[0].read_text() == "bb"
    assert b[0].stat().st_ino == b[1].stat().st_ino  # one copy, not one per task
    assert (b[0].stat().st_dev, b[0].stat().st_ino) in staged.inodes
    # The user's own file is neither linked nor made read-only.
    user_file = tmp_path / "user" / "data" / "deep" / "b.txt"
    assert user_file.stat().st_ino != b[0].stat().st_ino
    assert user_file.stat().st_mode & stat.S_IWUSR
    assert not b[0].stat().st_mode & 0o222
    assert stat.S_IMODE((first / "data").stat().st_mode) == READ_ONLY_DIR
    if os.geteuid() != 0:  # root writes through any mode
        with pytest.raises(PermissionError):
            b[0].write_text("changed")
