import hashlib
import os
from pathlib import Path

from worker.outputs import collect


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_come_back_with_their_size_and_sha256(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "sub").mkdir(parents=True)
    (task / "a.csv").write_bytes(b"1,2\n")
    (task / "sub" / "b.bin").write_bytes(b"\0" * 3000)
    collected = collect(task, tmp_path / "out")
    assert [(f.path, f.size, f.sha256) for f in collected.files] == [
        ("a.csv", 4, sha(b"1,2\n")),
        ("sub/b.bin", 3000, sha(b"\0" * 3000)),
    ]
    assert collected.error is None
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == b"\0" * 3000


def test_links_and_special_files_are_named_and_never_followed(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    (task / "passwd").symlink_to("/etc/passwd")
    (task / "up").symlink_to("..")
    os.mkfifo(task / "pipe")
    collected = collect(task, tmp_path / "out")
    assert collected.files == ()
    assert collected.error == (
        "refused: passwd (a symbolic link), pipe (not a regular file), up (a symbolic link)"
    )
    assert not (tmp_path / "out").exists()


def test_inputs_are_not_outputs(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    (task / "in.txt").write_text("input")
    (task / "out.txt").write_text("output")
    status = (task / "in.txt").stat()
    collected = collect(task, tmp_path / "out", frozenset({(status.st_dev, status.st_ino)}))
    assert [f.path for f in collected.files] == ["out.txt"]


def test_files_past_a_task_limit_are_counted_not_kept(tmp_path: Path) -> None:
    task = tmp_path / "task"
    task.mkdir()
    for number in range(5):
        (task / f"f{number}").write_bytes(b"x" * 10)
    by_count = collect(task, tmp_path / "by-count", max_files=3)
    assert [f.path for f in by_count.files] == ["f0", "f1", "f2"]
    assert (
        by_count.error == "2 files not kept: over the limit of 3 files or 1073741824 bytes a task"
    )
    by_size = collect(task, tmp_path / "by-size", max_bytes=25)
    assert len(by_size.files) == 2
    assert sorted(p.name for p in (tmp_path / "by-size").iterdir()) == ["f0", "f1"]
