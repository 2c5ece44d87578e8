"""A task's output files as they travel from an instance: one tar a task.

Many small files travel as one object, not one request each. The worker packs
what ``worker.outputs.collect`` gathered (regular files only, links refused
already); the client unpacks it refusing anything else a tar may hold —
absolute names, ``..``, links, devices — and checks every file against the
record's size and sha256, so a tar altered on the way cannot write outside
the output directory nor pass for the task's files.
"""

import hashlib
import tarfile
from collections.abc import Sequence
from pathlib import Path

from worker.result import OutputFile


class PackError(ValueError):
    """A tar that is not what its task's record says it is."""


def pack(gathered: Path, files: Sequence[OutputFile], tar_path: Path) -> None:
    """Pack the gathered files (named in ``files``) into an uncompressed tar."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            tar.add(gathered / file.path, arcname=file.path, recursive=False)


def unpack(tar_path: Path, files: Sequence[OutputFile], into: Path) -> None:
    """Unpack a task's tar into ``into`` (made here); ``PackError`` if it holds
    anything but the regular files ``files`` names, with their sizes and hashes."""
    expected = {file.path: file for file in files}
    with tarfile.open(tar_path, "r:") as tar:
        members = tar.getmembers()
        for member in members:
            if not plain_name(member.name):
                raise PackError(f"{tar_path.name}: {member.name!r} leads out of its folder")
            if not member.isreg() or member.name not in expected:
                raise PackError(f"{tar_path.name}: {member.name!r} is not a file the record names")
            if member.size != expected[member.name].size:
                raise PackError(f"{tar_path.name}: {member.name!r} has the wrong size")
        if {member.name for member in members} != expected.keys():
            raise PackError(f"{tar_path.name}: files the record names are missing")
        into.mkdir(parents=True, exist_ok=True)
        # The data filter, besides: no path out of ``into``, no odd permissions.
        try:
            tar.extractall(into, members=members, filter="data")
        except tarfile.FilterError as error:
            raise PackError(f"{tar_path.name}: {error}") from error
    for file in files:  # (the caller removes ``into`` on an error)
        digest = hashlib.sha256((into / file.path).read_bytes()).hexdigest()
        if digest != file.sha256:
            raise PackError(f"{tar_path.name}: {file.path!r} does not match its sha256")


def plain_name(name: str) -> bool:
    """A relative name without '.', '..' or empty parts: one that stays where it is put."""
    parts = name.split("/")
    return not name.startswith("/") and all(part not in ("", ".", "..") for part in parts)
