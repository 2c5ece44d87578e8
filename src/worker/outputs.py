"""A task's output files: what it left in its working directory, brought out.

Only what lies inside the directory is seen (the walk starts there, so no
name has ``..`` or a leading ``/``); symbolic links a task made are named and
refused, never followed, so a link to ``/etc/passwd`` brings nothing back.

The worker that walks may be root, and a task may leave a process behind that
swaps a directory for a link (``d`` -> ``/root``) while the walk is at it: a
path checked, then opened by name, would be followed through that link. So
nothing below the task's directory is opened by path: each directory is
opened relative to its parent's descriptor and each file relative to its
directory's, all with ``O_NOFOLLOW``, so a link swapped in anywhere is refused,
never followed. Files are hashed as they are copied: one read each.
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

#: Folders deep a walk goes; deeper ones are refused. The walk holds a
#: descriptor per level, and a task could nest folders until the worker (whose
#: slots share its descriptors) has none left.
MAX_DEPTH = 64


class Collected(NamedTuple):
    """What came back of a task's files, and what did not (None: all did)."""

    files: tuple[OutputFile, ...]
    error: str | None


#: Flags to open a directory of the task's: never through a link.
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Found(NamedTuple):
    """An entry of the walk: its relative name, its own status (None: a
    directory not entered, for ``refusal``) and the descriptor of its directory
    (open until the walk goes on)."""

    name: str
    status: os.stat_result | None
    directory: int
    refusal: str = "changed while read"


def entries(root: Path, skip: frozenset[tuple[int, int]]) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` but directories and the inodes in ``skip``
    (its inputs), with its relative name and its own status (links not followed).
    A directory that changes before it is entered (a task still running) is not."""
    for found in _walk(root, skip):
        if found.status is not None:
            yield found.name, found.status


def _walk(root: Path, skip: frozenset[tuple[int, int]]) -> Iterator[_Found]:
    """Depth first, each directory's files before its subdirectories (the last
    name first), each directory opened by its parent's descriptor: what was
    listed as a directory is entered only if it still is one, never a link."""
    # The directories open, deepest last: each one's descriptor, relative name
    # and subdirectories not yet walked. Only one branch is open at a time.
    branch: list[tuple[int, str, list[str]]] = []
    try:
        fd = os.open(root, _DIRECTORY)
        branch.append((fd, "", []))
        yield from _listing(fd, "", branch[-1][2], skip)
        while branch:
            parent, above, left = branch[-1]
            if not left:
                os.close(branch.pop()[0])
                continue
            child = left.pop()
            inside = f"{above}/{child}" if above else child
            if len(branch) > MAX_DEPTH:
                yield _Found(inside, None, parent, f"deeper than {MAX_DEPTH} folders")
                continue
            try:
                fd = os.open(child, _DIRECTORY, dir_fd=parent)
            except OSError:  # a link now (ELOOP, ENOTDIR), or gone: not entered
                yield _Found(inside, None, parent)
                continue
            branch.append((fd, inside, []))
            yield from _listing(fd, inside, branch[-1][2], skip)
    finally:
        for fd, _, _ in branch:
            os.close(fd)


def _listing(
    fd: int, inside: str, subdirectories: list[str], skip: frozenset[tuple[int, int]]
) -> Iterator[_Found]:
    """The entries of the directory open as ``fd``, named ``inside``, but its
    subdirectories (their names added to ``subdirectories``) and ``skip``."""
    with os.scandir(fd) as listing:
        listed = sorted(listing, key=lambda e: e.name)
    for entry in listed:
        name = f"{inside}/{entry.name}" if inside else entry.name
        status = entry.stat(follow_symlinks=False)  # relative to fd: no path followed
        if stat.S_ISDIR(status.st_mode):
            subdirectories.append(entry.name)
        elif (status.st_dev, status.st_ino) not in skip:
            yield _Found(name, status, fd)


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
    for name, status, directory, refusal in _walk(task_dir, inputs):
        if status is None:
            refused.append(f"{name} ({refusal})")
        elif stat.S_ISLNK(status.st_mode):
            refused.append(f"{name} (a symbolic link)")
        elif not stat.S_ISREG(status.st_mode):
            refused.append(f"{name} (not a regular file)")
        elif len(files) >= max_files or total + status.st_size > max_bytes:
            over += 1
        else:
            copied = _copy(directory, name.rpartition("/")[2], into / name)
            if copied is None:
                refused.append(f"{name} (changed to a link while read)")
                continue
            files.append(OutputFile(name, *copied))
            total += copied[0]
    return Collected(tuple(files), _say(refused, over, max_files, max_bytes))


def _copy(directory: int, name: str, target: Path) -> tuple[int, str] | None:
    """Copy the file ``name`` of the directory open as ``directory``, hashing it;
    its size and sha256 (None if it is no longer a regular file)."""
    # O_NONBLOCK: a FIFO swapped in for the file must not hang the open (it is
    # refused below); reads of a regular file do not heed it.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=directory)
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
