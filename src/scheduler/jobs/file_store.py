"""The scheduler service's store of its jobs' files (``submit --upload/--output-dir``).

Inputs arrive content-addressed: a client sends a job's list of its inputs
(name, size, sha256 each: ``worker.input_manifest``), the store keeps it and
answers which contents it lacks, the client sends only those, and each is
checked against its sha256 as it arrives. So a file an earlier job sent is
not sent again. A job is given its inputs as ``run --upload`` gives them: a
read-only copy of its own (``worker.inputs.stage``), which its tasks' folders
link to; a task that makes its input writable spoils no other job's.

On disk, in a folder beside the journal (0700, every file 0600)::

    blobs/<sha256>          each content once; unused for the retention, removed
    incoming/               contents and tars on their way
    manifests/<sha256>.json a job's list of inputs, named by its own sha256
    jobs/<job>/inputs.json  the list a job was given (a retry is given it again)
    jobs/<job>/inputs/      the job's read-only copy, while it runs
    jobs/<job>/outputs/     its tasks' files, <file>-<line>/... (``--output-dir``)
    jobs/<job>/tasks/       its tasks' working folders, while they run

What a job's tasks leave here is bounded per task by the worker and per job
here (``scheduler.output_budget``, counted from the service's start). A job's
folder goes when the journal forgets the job (its retention), or when its
upload fails; the store removes only folders of its own making.
"""

import contextlib
import errno
import hashlib
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import msgspec

from scheduler.errors import SchedulerError
from scheduler.output_budget import MAX_BYTES_PER_JOB, MAX_FILES_PER_JOB, OutputBudget
from scheduler.state import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from worker.input_manifest import ManifestEntry, decode_manifest, encode_manifest
from worker.inputs import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, InputFile, stage
from worker.output_pack import plain_name
from worker.outputs import entries
from worker.result import decode, encode_lines
from worker.workdir import TaskFiles, remove_tree

#: Bytes all stored contents may take together; an upload past it is refused.
MAX_STORE_BYTES = 4 * DEFAULT_MAX_BYTES

#: Shortest time a content is kept after its last use, whatever the journal's
#: retention: a client told "you need not send this" must find it at submit.
MIN_KEEP_SECONDS = 3600.0

#: Largest list of inputs accepted: the most files, each of the longest name.
MAX_MANIFEST_BYTES = DEFAULT_MAX_FILES * 4300

#: Longest part of an input's name, in bytes (a file system's limit).
MAX_NAME_BYTES = 255

#: What marks a job's folder as the store's: its name is a job id as the service
#: makes them (``worker.task.new_job_id``: 8 hex digits).
_JOB_FOLDER = re.compile("[0-9a-f]{8}")

_SHA256 = re.compile("[0-9a-f]{64}")


def _is_job_folder(entry: os.DirEntry[str]) -> bool:
    """Whether an entry of the jobs' folder may be of the store's making: a folder
    (not a link, not a file) named as a job. Anything else there is left alone."""
    return bool(_JOB_FOLDER.fullmatch(entry.name)) and entry.is_dir(follow_symlinks=False)


class FilesError(SchedulerError):
    """A job's files refused (``status``: the HTTP status the service answers)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Inputs(NamedTuple):
    """A list of inputs kept by the store: its id, and the contents it lacks."""

    id: str
    missing: list[str]


def store_of(journal_path: Path) -> Path:
    """Where the store of a journal's jobs lies: beside it, named after it."""
    return journal_path.with_name(f"{journal_path.stem}-files")


def _size_of(entry: os.DirEntry[str]) -> int:
    """An entry's size; 0 if it went meanwhile (an upload kept or discarded)."""
    try:
        return entry.stat().st_size
    except FileNotFoundError:
        return 0


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


class FileStore:
    """The files of a journal's jobs: inputs by content, outputs by task."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        max_store_bytes: int = MAX_STORE_BYTES,
        max_job_outputs: tuple[int, int] = (MAX_FILES_PER_JOB, MAX_BYTES_PER_JOB),
    ) -> None:
        """``max_bytes`` and ``max_files`` bound one job's inputs (as
        ``--upload-max-bytes/--upload-max-files`` bound them at the client);
        ``max_job_outputs`` the files and bytes its tasks leave here."""
        self.root = _private_dir(root)
        self.root.chmod(PRIVATE_DIR_MODE)
        self.blobs = _private_dir(root / "blobs")
        self.incoming = _private_dir(root / "incoming")
        self.manifests = _private_dir(root / "manifests")
        self.jobs = _private_dir(root / "jobs")
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_store_bytes = max_store_bytes
        self.max_job_outputs = max_job_outputs
        self._budgets: dict[str, OutputBudget] = {}  # the running jobs' outputs, by job

    # -- inputs ------------------------------------------------------------

    def add_inputs(self, data: bytes) -> Inputs:
        """Keep a list of inputs (``data``: JSON, checked here) and say which
        contents it names that the store lacks. Those it has are renewed."""
        entries_ = self.check_manifest(data)
        self._check_sizes(entries_)
        encoded = encode_manifest(entries_)
        inputs_id = hashlib.sha256(encoded).hexdigest()
        self._write_private(self.manifests / f"{inputs_id}.json", encoded)
        missing: list[str] = []
        for sha256 in dict.fromkeys(entry.sha256 for entry in entries_):
            blob = self.blobs / sha256
            try:
                os.utime(blob)  # used now: kept for another retention
            except FileNotFoundError:
                missing.append(sha256)
        return Inputs(inputs_id, missing)

    def check_manifest(self, data: bytes) -> list[ManifestEntry]:
        """A list of inputs as the store takes it, or ``FilesError`` (400, 413)
        naming what is wrong: not a list, a name that leads out of its folder or
        is there twice (or is a file and a folder), past the bounds."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise FilesError(413, f"the list of inputs is above {MAX_MANIFEST_BYTES} bytes")
        try:
            listed = decode_manifest(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise FilesError(400, f"not a list of inputs: {error}") from error
        if not listed:
            raise FilesError(400, "the list of inputs is empty")
        if len(listed) > self.max_files:
            raise FilesError(413, f"more than {self.max_files} inputs")
        if (total := sum(entry.size for entry in listed)) > self.max_bytes:
            raise FilesError(413, f"inputs of {total} bytes, above the limit of {self.max_bytes}")
        files = {entry.name for entry in listed}
        if len(files) < len(listed):
            raise FilesError(400, "an input is named twice")
        for name in files:
            if not plain_name(name):
                raise FilesError(400, f"input {name!r}: not a plain relative name")
            parts = name.split("/")
            if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
                raise FilesError(400, f"input {name!r}: a part is over {MAX_NAME_BYTES} bytes")
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in files:
                    raise FilesError(400, f"input {name!r}: a file of that name's folder is sent")
        return listed

    def _check_sizes(self, listed: list[ManifestEntry]) -> None:
        """``FilesError`` (400) if a content here is not the size its list says:
        the bounds on a job's inputs count the listed sizes."""
        for entry in listed:
            try:
                size = (self.blobs / entry.sha256).stat().st_size
            except FileNotFoundError:
                continue  # to be sent, and checked against its sha256 then
            if size != entry.size:
                raise FilesError(
                    400,
                    f"input {entry.name!r}: listed as {entry.size} bytes, its content has {size}",
                )

    def blob_writer(self, sha256: str, size: int | None) -> "BlobWriter":
        """Where a content on its way is written (``size``: its announced length)."""
        if not _SHA256.fullmatch(sha256):
            raise FilesError(400, "a content is named by its sha256: 64 lower-case hex digits")
        if size is None:
            raise FilesError(411, "a content is sent with its length (Content-Length)")
        if size > self.max_bytes:
            raise FilesError(413, f"a content of {size} bytes, above the limit of {self.max_bytes}")
        on_the_way = (self.incoming, self.blobs)
        stored = sum(_size_of(entry) for folder in on_the_way for entry in os.scandir(folder))
        if stored + size > self.max_store_bytes:
            raise FilesError(
                507, f"the scheduler's store of inputs is full ({self.max_store_bytes} bytes)"
            )
        return BlobWriter(self, sha256)

    def has_blob(self, sha256: str) -> bool:
        return (self.blobs / sha256).is_file()

    def prune_blobs(self, unused_for: float) -> int:
        """Remove the contents and lists not used for ``unused_for`` seconds (at
        least ``MIN_KEEP_SECONDS``), and what is left of uploads as old; how many.
        A content a kept job names stays: its retry is given it again."""
        before = time.time() - max(unused_for, MIN_KEEP_SECONDS)
        named = self._named_by_jobs()
        removed = 0
        for folder in (self.blobs, self.manifests, self.incoming):
            for entry in os.scandir(folder):
                if folder == self.blobs and entry.name in named:
                    continue
                try:
                    if entry.stat().st_mtime >= before:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue  # gone meanwhile: an upload discarded, `taskfleet prune`
                removed += 1
        return removed

    def _named_by_jobs(self) -> set[str]:
        """The contents the jobs kept here name."""
        named: set[str] = set()
        for entry in os.scandir(self.jobs):
            if not _is_job_folder(entry):
                continue
            with contextlib.suppress(FileNotFoundError, msgspec.DecodeError):
                listed = decode_manifest((Path(entry.path) / "inputs.json").read_bytes())
                named.update(e.sha256 for e in listed)
        return named

    # -- jobs --------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_FOLDER.fullmatch(job_id):
            raise FilesError(400, f"not a job id: {job_id!r}")
        return self.jobs / job_id

    def give_job(
        self, job_id: str, inputs_id: str | None, outputs: bool, *, stage: bool = True
    ) -> None:
        """Give a new job its inputs (the list ``inputs_id`` names, staged for the
        local workers unless not ``stage``) and a folder for its tasks' files
        (``outputs``); ``FilesError`` (404, 409) if the list, or a content it
        names, is not here."""
        if inputs_id is None and not outputs:
            return
        listed: list[ManifestEntry] = []
        if inputs_id is not None:
            if not _SHA256.fullmatch(inputs_id):
                raise FilesError(400, "inputs are named by their list's sha256")
            try:
                listed = decode_manifest((self.manifests / f"{inputs_id}.json").read_bytes())
            except FileNotFoundError:
                raise FilesError(404, f"no list of inputs {inputs_id}: send it first") from None
        self._give(job_id, listed, outputs, stage)

    def give_again(self, job_id: str, new_id: str, *, stage: bool = True) -> bool:
        """Give a retry of ``job_id`` (as ``new_id``) the job's inputs and outputs
        folder, if it had any (as ``give_job``); whether it had."""
        if not self.has_job(job_id):
            return False
        old = self.jobs / job_id
        listed: list[ManifestEntry] = []
        with contextlib.suppress(FileNotFoundError):
            listed = decode_manifest((old / "inputs.json").read_bytes())
        self._give(new_id, listed, (old / "outputs").is_dir(), stage)
        return True

    def inputs_of(self, job_id: str) -> list[InputFile]:
        """A job's inputs, as the store holds their contents."""
        try:
            listed = decode_manifest((self.job_dir(job_id) / "inputs.json").read_bytes())
        except FileNotFoundError:
            return []
        return [InputFile(self.blobs / e.sha256, e.name, e.size) for e in listed]

    def _give(self, job_id: str, listed: list[ManifestEntry], outputs: bool, staged: bool) -> None:
        folder = self.job_dir(job_id)
        absent = sorted({e.sha256 for e in listed if not self.has_blob(e.sha256)})
        if absent:
            raise FilesError(409, f"{len(absent)} of the inputs' contents are not here: send them")
        self._check_sizes(listed)
        _private_dir(folder)
        try:
            if listed:
                self._write_private(folder / "inputs.json", encode_manifest(listed))
                if staged:
                    stage(self.inputs_of(job_id), folder / "inputs")
                for entry in listed:
                    with contextlib.suppress(FileNotFoundError):
                        os.utime(self.blobs / entry.sha256)
            if outputs:
                _private_dir(folder / "outputs")
        except FileNotFoundError as error:  # a content pruned meanwhile
            self.remove_jobs([job_id])
            message = f"an input's content went meanwhile: send it again ({error})"
            raise FilesError(409, message) from error
        except OSError as error:
            self.remove_jobs([job_id])
            raise _storage_error(error) from error
        except BaseException:
            self.remove_jobs([job_id])
            raise

    def task_files(self, job_id: str) -> TaskFiles | None:
        """Where a job's tasks get and leave files (None: it has none here, and
        its tasks' folders are the pool's)."""
        folder = self.jobs / job_id
        inputs, outputs = folder / "inputs", folder / "outputs"
        # A job's list says it has inputs; they are staged only if it runs here.
        has_inputs, has_outputs = (folder / "inputs.json").is_file(), outputs.is_dir()
        if not (has_inputs or has_outputs):
            return None
        return TaskFiles(
            str(folder),
            str(inputs) if has_inputs else None,
            str(outputs) if has_outputs else None,
        )

    def has_job(self, job_id: str) -> bool:
        """Whether a job has files of its own here."""
        return (self.jobs / job_id).is_dir()

    def keeps_outputs(self, job_id: str) -> bool:
        return (self.jobs / job_id / "outputs").is_dir()

    def admit(self, job_id: str, records: list[bytes]) -> list[bytes]:
        """A job's tasks' records (JSON lines), the files of any task that would
        take the job past its limit taken back, and its record saying so."""
        outputs = self.jobs / job_id / "outputs"
        if not outputs.is_dir():
            return records
        budget = self._budgets.get(job_id)
        if budget is None:
            budget = self._budgets[job_id] = OutputBudget(outputs, *self.max_job_outputs)
        return [encode_lines([record]) for record in budget.admit(map(decode, records))]

    def job_ended(self, job_id: str) -> None:
        """A job ended: its copy of its inputs goes (a retry is given them anew)."""
        self._budgets.pop(job_id, None)
        remove_tree(self.jobs / job_id / "inputs")

    def remove_jobs(self, job_ids: Iterable[str]) -> None:
        """Remove the folders of jobs the journal forgot (or never kept)."""
        for job_id in job_ids:
            folder = self.jobs / job_id
            # Not a file or a link that happens to have a job's name: not ours.
            if _JOB_FOLDER.fullmatch(job_id) and folder.is_dir() and not folder.is_symlink():
                remove_tree(folder)

    def sweep(self, state_of: Callable[[str], str | None], final: tuple[str, ...]) -> None:
        """At start, before any request: remove the folders of jobs the journal
        does not know (an upload cut off by a crash), and the inputs of ended ones."""
        for entry in os.scandir(self.jobs):
            if not _is_job_folder(entry):
                continue
            state = state_of(entry.name)
            if state is None:
                self.remove_jobs([entry.name])
            elif state in final:
                self.job_ended(entry.name)
        for entry in os.scandir(self.incoming):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)

    # -- outputs -----------------------------------------------------------

    def pack_outputs(self, job_id: str, label: str) -> Path | None:
        """A tar (a new file in ``incoming``, the caller's to remove) of a task's
        files, named by its label ``<file>-<line>``; None if it left none."""
        if not plain_name(label) or "/" in label:
            raise FilesError(400, f"not a task's label: {label!r}")
        folder = self.job_dir(job_id) / "outputs" / label
        if not folder.is_dir():
            return None
        descriptor, name = tempfile.mkstemp(prefix="outputs-", suffix=".tar", dir=self.incoming)
        os.close(descriptor)
        tar_path = Path(name)
        try:
            with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
                for relative, status in entries(folder, frozenset()):
                    if not stat.S_ISREG(status.st_mode):
                        continue  # the worker wrote regular files only
                    info = tarfile.TarInfo(relative)
                    info.size = status.st_size
                    info.mode = 0o644
                    with (folder / relative).open("rb") as reading:
                        tar.addfile(info, reading)
        except OSError as error:  # removed over the limit, or redone by a retry, meanwhile
            tar_path.unlink(missing_ok=True)
            raise FilesError(409, f"task {label}'s files changed while read: try again") from error
        except BaseException:
            tar_path.unlink(missing_ok=True)
            raise
        return tar_path

    @staticmethod
    def _write_private(path: Path, data: bytes) -> None:
        descriptor, name = tempfile.mkstemp(dir=path.parent)
        with os.fdopen(descriptor, "wb") as writing:
            writing.write(data)
        os.chmod(name, PRIVATE_FILE_MODE)
        os.replace(name, path)


def _storage_error(error: OSError) -> FilesError:
    """The store could not write: 507 for a full disk, as for a full store."""
    status = 507 if error.errno in (errno.ENOSPC, errno.EDQUOT) else 500
    return FilesError(status, f"the scheduler could not store the files: {error.strerror}")


class BlobWriter:
    """A content on its way into the store: written to ``incoming``, hashed as
    it comes, kept under its sha256 only if it is that content's."""

    def __init__(self, store: FileStore, sha256: str) -> None:
        self.store = store
        self.sha256 = sha256
        self.size = 0
        self._digest = hashlib.sha256()
        descriptor, name = tempfile.mkstemp(prefix="blob-", dir=store.incoming)  # 0600
        self._path = Path(name)
        self._file = os.fdopen(descriptor, "wb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.store.max_bytes:
            raise FilesError(413, f"a content above the limit of {self.store.max_bytes} bytes")
        self._digest.update(data)
        try:
            self._file.write(data)
        except OSError as error:
            raise _storage_error(error) from error

    def finish(self) -> None:
        """Keep the content, or ``FilesError`` (400) if it is not the one its name says."""
        self._file.close()
        if self._digest.hexdigest() != self.sha256:
            raise FilesError(
                400, f"the content sent ({self.size} bytes) does not have sha256 {self.sha256}"
            )
        os.replace(self._path, self.store.blobs / self.sha256)

    def discard(self) -> None:
        """Drop what was written (refused, or broken off); kept content is not touched."""
        self._file.close()
        self._path.unlink(missing_ok=True)
