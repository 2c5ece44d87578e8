"""A job's input files (``--upload``): checked, staged once, seen by every task.

Each upload appears in a task's working directory under its own name (a file
as ``a.mov``, a directory as ``data/...``), as ``scp`` would place it. The
files are copied once per run into a read-only staging tree and hard-linked
from there into each task's directory: one copy, whatever the task count, and
not the user's own files (a hard link shares its inode's permissions, so
making a link to the user's file read-only would make theirs read-only too).
"""

import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from worker.errors import InputError

#: Default bounds of one job's inputs: the user's disk, and the fleet's
#: transfer, should not be filled by a mistyped path.
DEFAULT_MAX_BYTES = 10 * 1024**3
DEFAULT_MAX_FILES = 10_000

#: Permissions of staged inputs: readable by all, writable by none.
READ_ONLY_FILE = 0o444
READ_ONLY_DIR = 0o555


class InputFile(NamedTuple):
    """One file to upload: where it is, and its name in a task's directory."""

    source: Path
    name: str  # relative, '/' between parts
    size: int


def check_uploads(
    paths: Sequence[str], max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES
) -> list[InputFile]:
    """Every file the uploads hold, checked against the bounds; ``InputError``
    names the first path that is missing, not a plain file or directory, of a
    name taken already, or over a bound."""
    files: list[InputFile] = []
    names: set[str] = set()
    total = 0
    for given in paths:
        top = Path(given)
        name = top.resolve().name if given.rstrip("/") in ("", ".", "..") else top.name
        if not top.exists():
            raise InputError(f"--upload {given}: no such file or directory")
        if name in names:
            raise InputError(f"--upload {given}: a task would see two uploads named {name!r}")
        names.add(name)
        for source, relative in _walk(top, name):
            size = source.stat().st_size
            total += size
            files.append(InputFile(source, relative, size))
            if len(files) > max_files:
                raise InputError(
                    f"--upload {given}: more than {max_files} files (--upload-max-files)"
                )
            if total > max_bytes:
                raise InputError(
                    f"--upload {given}: more than {max_bytes} bytes in all (--upload-max-bytes)"
                )
    return files


def _walk(top: Path, name: str) -> Iterator[tuple[Path, str]]:
    """The regular files under ``top`` (itself, if a file) and their names.
    A symbolic link to a file counts as that file; to a directory it is not
    followed (it may loop), and is refused with anything that is not a file."""
    if not top.is_dir() or top.is_symlink():
        yield _regular(top), name
        return
    for directory, subdirectories, filenames in os.walk(top):
        here = Path(directory)
        inside = here.relative_to(top).as_posix()
        prefix = name if inside == "." else f"{name}/{inside}"
        for entry in sorted([*filenames, *(d for d in subdirectories if (here / d).is_symlink())]):
            yield _regular(here / entry), f"{prefix}/{entry}"
        subdirectories.sort()


def _regular(path: Path) -> Path:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise InputError(f"--upload {path}: {error.strerror}") from error
    if not stat.S_ISREG(mode):
        raise InputError(f"--upload {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"--upload {path}: not readable")
    return path


def stage(files: Sequence[InputFile], into: Path) -> None:
    """Copy the inputs once into ``into`` (made here), read-only."""
    into.mkdir(mode=0o755)
    for file in files:
        target = into / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.source, target)
        target.chmod(READ_ONLY_FILE)
    for directory, _, _ in os.walk(into, topdown=False):
        Path(directory).chmod(READ_ONLY_DIR)


class Staged(NamedTuple):
    """Staged inputs as tasks get them: the tree's directories and files (relative),
    and the files' inodes, by which a task's outputs are told from its inputs."""

    root: Path
    directories: tuple[str, ...]  # parents first
    files: tuple[str, ...]
    inodes: frozenset[tuple[int, int]]  # (device, inode)

    @classmethod
    def read(cls, root: Path) -> "Staged":
        directories: list[str] = []
        files: list[str] = []
        inodes: set[tuple[int, int]] = set()
        for directory, subdirectories, filenames in os.walk(root):
            here = Path(directory)
            inside = here.relative_to(root)
            directories.extend((inside / d).as_posix() for d in sorted(subdirectories))
            for filename in filenames:
                status = (here / filename).stat()
                files.append((inside / filename).as_posix())
                inodes.add((status.st_dev, status.st_ino))
        return cls(root, tuple(directories), tuple(files), frozenset(inodes))

    def link_into(self, task_dir: Path) -> None:
        """Hard-link every input into a task's directory; their directories read-only."""
        for directory in self.directories:
            (task_dir / directory).mkdir()
        for file in self.files:
            os.link(self.root / file, task_dir / file)
        for directory in reversed(self.directories):
            (task_dir / directory).chmod(READ_ONLY_DIR)
