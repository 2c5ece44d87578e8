"""A task's output files: what it left in its working directory, brought out.

Only what lies inside the directory is seen (the walk starts there, so no
name has ``..`` or a leading ``/``); symbolic links a task made are named and
refused, never followed, so a link to ``/etc/passwd`` brings nothing back.
Files are read with ``O_NOFOLLOW`` (a task still running could swap a file for
a link) and hashed as they are copied: one read each.
"""

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

from worker.result import MAX_FILES_PER_TASK, OutputFile

#: Bytes of output one task may bring back; files past it are refused.
MAX_BYTES_PER_TASK = 1024**3

#: Refused names a record lists one by one; past these, only their count.
NAMED_REFUSALS = 10

COPY_BUFFER_BYTES = 1024 * 1024


class Collected(NamedTuple):
    """What came back of a task's files, and what did not (None: all did)."""

    files: tuple[OutputFile, ...]
    error: str | None


def entries(root: Path, skip: frozenset[tuple[int, int]]) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` but directories and the inodes in ``skip``
    (its inputs), with its relative name and its own status (links not followed)."""
    stack = [""]
    while stack:
        inside = stack.pop()
        with os.scandir(root / inside) if inside else os.scandir(root) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            name = f"{inside}/{entry.name}" if inside else entry.name
            status = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(status.st_mode):
                stack.append(name)
            elif (status.st_dev, status.st_ino) not in skip:
                yield name, status


def collect(
    task_dir: Path,
    into: Path,
    inputs: frozenset[tuple[int, int]] = frozenset(),
    max_files: int = MAX_FILES_PER_TASK,
    max_bytes: int = MAX_BYTES_PER_TASK,
) -> Collected:
    """Copy the files a task left in ``task_dir`` (less its ``inputs``) to ``into``
    (made here if any file comes back), with their sizes and sha256."""
    files: list[OutputFile] = []
    refused: list[str] = []
    over = 0  # files past a limit
    total = 0
    for name, status in entries(task_dir, inputs):
        if stat.S_ISLNK(status.st_mode):
            refused.append(f"{name} (a symbolic link)")
        elif not stat.S_ISREG(status.st_mode):
            refused.append(f"{name} (not a regular file)")
        elif len(files) >= max_files or total + status.st_size > max_bytes:
            over += 1
        else:
            copied = _copy(task_dir / name, into / name)
            if copied is None:
                refused.append(f"{name} (changed to a link while read)")
                continue
            files.append(OutputFile(name, *copied))
            total += copied[0]
    return Collected(tuple(files), _say(refused, over, max_files, max_bytes))


def _copy(source: Path, target: Path) -> tuple[int, str] | None:
    """Copy one file, hashing it; its size and sha256 (None if it is no longer a file)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as reading:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return write_new(reading, target)


def write_new(reading: IO[bytes], target: Path) -> tuple[int, str]:
    """Write what ``reading`` holds to a new file ``target`` (its folders made),
    hashing it; its size and sha256. ``FileExistsError`` if anything is there:
    the target tree is fresh and the caller's own, so nothing may be (a link
    there is not followed)."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(
        target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
    )
    with os.fdopen(out, "wb") as writing:
        while block := reading.read(COPY_BUFFER_BYTES):
            digest.update(block)
            writing.write(block)
            size += len(block)
    return size, digest.hexdigest()


def _say(refused: list[str], over: int, max_files: int, max_bytes: int) -> str | None:
    parts: list[str] = []
    if refused:
        named = ", ".join(refused[:NAMED_REFUSALS])
        more = len(refused) - NAMED_REFUSALS
        parts.append(f"refused: {named}" + (f" and {more} more" if more > 0 else ""))
    if over:
        parts.append(
            f"{over} files not kept: over the limit of {max_files} files"
            f" or {max_bytes} bytes a task"
        )
    return "; ".join(parts) or None
