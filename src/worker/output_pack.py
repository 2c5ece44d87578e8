"""A task's output files as they travel from an instance: one tar a task.

Many small files travel as one object, not one request each. The worker packs
what ``worker.outputs.collect`` gathered (regular files only: links a task made
were refused there, and named in its record) into an uncompressed tar, stored
under the job's output prefix by its sha256. The client checks the tar against
that name, then unpacks it refusing anything else a tar may hold — absolute
names, ``..``, links, devices, a name twice — and anything past a task's
limits, writing each file fresh (never through a link) and hashing it as it
goes: the record's ``files`` are what was written. So a tar altered on the way
can neither write outside the output directory nor pass for the task's files.
"""

import hashlib
import re
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from worker.contracts import JobFiles
from worker.outputs import COPY_BUFFER_BYTES, MAX_BYTES_PER_TASK, write_new
from worker.result import MAX_FILES_PER_TASK, OutputFile, Result
from worker.workdir import PARTIAL, place, remove_tree, task_label

#: Largest tar a task's files may travel in: its limit, and a tar's headers
#: (512 bytes each, a long name's in a second: 2 KiB a file is ample).
MAX_TAR_BYTES = MAX_BYTES_PER_TASK + (MAX_FILES_PER_TASK + 2) * 2048

#: The last part of a task's tar's key: its sha256.
_TAR_NAME = re.compile(r"/([0-9a-f]{64})\.tar$")


class PackError(ValueError):
    """A tar that is not what a task's tar may be."""


def object_key(job: str, file_number: int, line: int, sha256: str) -> str:
    """Where a task's tar lies: under its job and task, named by its content (a
    task run twice, by a worker that took its bundle over, overwrites nothing
    the other run's record names)."""
    return f"{JobFiles.OUTPUTS}{job}/{file_number}-{line}/{sha256}.tar"


def key_sha256(key: str) -> str | None:
    """The sha256 a tar's key names (None: not a key ``object_key`` makes)."""
    found = _TAR_NAME.search(key)
    return None if found is None else found.group(1)


def pack(gathered: Path, files: Sequence[OutputFile], tar_path: Path) -> str:
    """Pack the gathered files (named in ``files``) into an uncompressed tar; its sha256.

    Only names and contents go in: no times, owners or modes (the client writes
    files afresh, as the local path does), so the same files make the same tar
    and a task run twice (a bundle taken over) leaves one object, not two."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            info = tarfile.TarInfo(file.path)
            info.size = file.size
            info.mode = 0o644
            with (gathered / file.path).open("rb") as reading:
                tar.addfile(info, reading)
    return sha256_of(tar_path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reading:
        while block := reading.read(COPY_BUFFER_BYTES):
            digest.update(block)
    return digest.hexdigest()


def unpack(
    tar_path: Path,
    into: Path,
    max_files: int = MAX_FILES_PER_TASK,
    max_bytes: int = MAX_BYTES_PER_TASK,
) -> tuple[OutputFile, ...]:
    """Unpack a task's tar into ``into`` (made if a file comes out); the files, with
    their sizes and sha256. ``PackError`` at the first member that is not a
    regular file of a plain name, or past the limits (what was written before
    it stays: the caller removes ``into``)."""
    files: list[OutputFile] = []
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                name = member.name
                if not plain_name(name):
                    raise PackError(f"{name!r} leads out of its folder")
                if not member.isreg():
                    raise PackError(f"{name!r} is not a regular file")
                if name in seen:
                    raise PackError(f"{name!r} is in it twice")
                if len(files) >= max_files or total + member.size > max_bytes:
                    raise PackError(f"more than {max_files} files or {max_bytes} bytes")
                reading = tar.extractfile(member)
                assert reading is not None  # a regular file's
                try:
                    size, sha256 = write_new(reading, into / name)
                except OSError as error:
                    raise PackError(f"{name!r}: {error.strerror}") from error
                seen.add(name)
                files.append(OutputFile(name, size, sha256))
                total += size
    except tarfile.TarError as error:
        raise PackError(f"not a tar: {error}") from error
    return tuple(files)


#: Fetches a task's tar into the path given (it may raise ``PackError``).
FetchTar = Callable[[Path], None]


def bring_back(
    record: Result,
    output_dir: Path,
    fetch: FetchTar,
    errors: tuple[type[Exception], ...] = (),
    expected: tuple[OutputFile, ...] | None = None,
) -> Result:
    """The record, its task's tar fetched, unpacked beside ``output_dir`` and moved
    into ``output_dir/<file>-<line>/`` whole, its ``files`` naming what was
    written. With ``expected``, what was written must be those files. A tar
    that cannot be had (``PackError``, ``OSError`` or ``errors``) or is not what
    it should be leaves nothing in ``output_dir``; the record says why."""
    label = task_label(record.file, record.line)
    caught: tuple[type[Exception], ...] = (PackError, OSError, *errors)
    partial = output_dir / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=partial))
    try:
        fetch(work / "task.tar")
        files = unpack(work / "task.tar", work / "files")
        if expected is not None and set(map(_facts, files)) != set(map(_facts, expected)):
            raise PackError("the files that came are not the ones its record names")
        if files:
            place(work / "files", output_dir / label)
    except caught as error:
        said = f"not brought back: {error}"
        error_text = f"{record.files_error}; {said}" if record.files_error else said
        return msgspec.structs.replace(record, files=(), files_error=error_text)
    finally:
        remove_tree(work)
    return msgspec.structs.replace(record, files=files)


def _facts(file: OutputFile) -> tuple[str, int, str]:
    return file.path, file.size, file.sha256


def plain_name(name: str) -> bool:
    """A relative name without '.', '..' or empty parts, and no NUL (which no file
    name holds): one that stays where it is put."""
    parts = name.split("/")
    return (
        not name.startswith("/")
        and "\0" not in name
        and all(part not in ("", ".", "..") for part in parts)
    )
