"""The project source an instance installs: what git tracks, zipped.

Only tracked files go in (never a secret or a scratch file lying in the
checkout), with what instances do not need left out. The zip is the same
byte for byte for the same files, so the asset's hash, and so the stack,
changes only when the source does.
"""

import subprocess
import zipfile
from pathlib import Path

#: Tracked folders an instance does not need.
LEFT_OUT = ("tests/", "bench/", "docs/", "examples/", ".ci/")

#: The timestamp every entry carries (the earliest a zip can hold).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class SourceError(Exception):
    """The source asset cannot be built (not a git checkout, git missing)."""


def tracked_files(repository: Path) -> list[str]:
    """Paths git tracks in ``repository`` (with their working-tree content), sorted."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(repository), "ls-files", "-z", "--cached"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SourceError(
            f"the worker's source is built from what git tracks in {repository}: {error}"
        ) from error
    names = [name for name in listed.decode().split("\0") if name]
    return sorted(
        name for name in names if not name.startswith(LEFT_OUT) and (repository / name).is_file()
    )


def write_source_zip(repository: Path, destination: Path) -> Path:
    """Zip the tracked source of ``repository`` into ``destination``; return it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in tracked_files(repository):
            path = repository / name
            entry = zipfile.ZipInfo(name, ZIP_EPOCH)
            entry.external_attr = (0o100755 if path.stat().st_mode & 0o111 else 0o100644) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())
    return destination
