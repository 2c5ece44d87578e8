import hashlib
import os
from pathlib import Path
from typing import IO

import pytest

from worker import outputs
from worker.outputs import collect, entries, write_new


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


def swap_for_link_while_copying(
    monkeypatch: pytest.MonkeyPatch, directory: Path, outside: Path
) -> None:
    """Once the first file is copied, move ``directory`` away and put a link to
    ``outside`` in its place: what a task's process left running could do
    while the worker walks the task's directory."""

    def swapping(reading: IO[bytes], target: Path) -> tuple[int, str]:
        if not directory.is_symlink():
            directory.rename(directory.with_name("moved"))
            directory.symlink_to(outside)
        return write_new(reading, target)

    monkeypatch.setattr(outputs, "write_new", swapping)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "b").write_text("secret")
    return secret


def test_a_directory_swapped_for_a_link_before_it_is_walked_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outside: Path
) -> None:
    task = tmp_path / "task"
    (task / "d").mkdir(parents=True)
    (task / "z").write_text("first")  # listed after d, copied before d is walked
    (task / "d" / "b").write_text("mine")
    swap_for_link_while_copying(monkeypatch, task / "d", outside)
    collected = collect(task, tmp_path / "out")
    assert [f.path for f in collected.files] == ["z"]
    assert collected.error == "refused: d (changed while read)"
    assert not (tmp_path / "out" / "d").exists()


def test_a_directory_swapped_for_a_link_while_walked_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outside: Path
) -> None:
    task = tmp_path / "task"
    (task / "d").mkdir(parents=True)
    (task / "d" / "a").write_text("first")  # copied after d is listed, before d/b
    (task / "d" / "b").write_text("mine")
    swap_for_link_while_copying(monkeypatch, task / "d", outside)
    collected = collect(task, tmp_path / "out")
    # d/b is read from the directory the walk opened (moved now), not through the link.
    assert [f.path for f in collected.files] == ["d/a", "d/b"]
    assert (tmp_path / "out" / "d" / "b").read_text() == "mine"
    assert collected.error is None


def test_no_descriptor_is_left_open(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "x" / "y").mkdir(parents=True)
    (task / "x" / "y" / "f").write_text("f")
    (task / "z").mkdir()
    before = set(os.listdir("/proc/self/fd"))
    assert len(collect(task, tmp_path / "out").files) == 1
    for _ in entries(task, frozenset()):
        break  # left part way: the walk, dropped, closes what it opened
    assert set(os.listdir("/proc/self/fd")) == before


def test_folders_past_the_depth_limit_are_refused_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The walk holds a descriptor a level: a task nesting folders without end
    # must not use up the worker's.
    monkeypatch.setattr(outputs, "MAX_DEPTH", 2)
    task = tmp_path / "task"
    (task / "a" / "b" / "c").mkdir(parents=True)
    (task / "a" / "b" / "kept.txt").write_text("kept")
    (task / "a" / "b" / "c" / "deep.txt").write_text("deep")
    collected = collect(task, tmp_path / "out")
    assert [f.path for f in collected.files] == ["a/b/kept.txt"]
    assert collected.error == "refused: a/b/c (deeper than 2 folders)"
