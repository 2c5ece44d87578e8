"""Each fleet task's working directory on an instance: made, given its job's
inputs, its files sent back, removed.

As on the local path (``worker.workdir``), a shell task starts in an empty
directory of its own, under the worker's own directory (never where the
worker was started), with its job's inputs hard-linked in, read-only: fetched
once per instance (``worker.instance_inputs``). When it ends, the files a task
that succeeded left go back through the job-files bucket as one tar
(``worker.output_pack``), which its record names (``files_object``); its
directory is removed however it ended (failed, cancelled, cut off by a stop):
nothing of a task stays on the instance.
"""

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from worker.bundle import BundleFiles
from worker.inputs import Staged
from worker.instance_inputs import InputFetchError, InstanceInputs
from worker.output_pack import object_key, pack
from worker.outputs import collect
from worker.result import Outcome, Status
from worker.workdir import not_kept, remove_tree

log = logging.getLogger("taskfleet.worker")


class TaskPlace(NamedTuple):
    """A task's directory, and the inputs linked into it."""

    path: Path
    staged: Staged | None


class FleetTaskDirs:
    """The working directories of one worker's tasks, under ``root``.

    ``s3`` makes the S3 client (once, when a job first has files); ``owner``
    (uid, gid) owns each task's directory when tasks run as a user of their own.
    """

    def __init__(
        self, root: Path, s3: Callable[[], Any], owner: tuple[int, int] | None = None
    ) -> None:
        self.tasks = root / "tasks"
        self.outbox = root / "outbox"
        for folder in (self.tasks, self.outbox):
            remove_tree(folder)  # a process before this one, on this instance, left it
            folder.mkdir(parents=True)
        # Tasks run as another user must reach their own directory: they may pass
        # through tasks/ and their own outer folder (0711: neither can be listed)
        # into their work folder, the one thing here that is theirs.
        self.tasks.chmod(0o711)
        self.owner = owner
        self._s3_factory = s3
        self._s3: Any = None
        self._s3_lock = threading.Lock()
        self.inputs = InstanceInputs(self.s3, root / "inputs")

    def s3(self) -> Any:
        """The S3 client, made once (boto3 makes clients unsafely from several
        threads at once: two slots may ask together)."""
        with self._s3_lock:
            if self._s3 is None:
                self._s3 = self._s3_factory()
            return self._s3

    def make(self, job: str, files: BundleFiles | None) -> TaskPlace:
        """A fresh directory for a task of ``job``, its inputs linked in;
        ``InputFetchError`` or botocore's errors if they cannot be had."""
        staged = self.inputs.of(job, files.bucket) if files is not None and files.inputs else None
        # The task's directory lies in a folder of its own, which goes with it: a
        # task that writes to ../x leaves nothing on the instance either.
        outer = Path(tempfile.mkdtemp(prefix="task-", dir=self.tasks))
        task_dir = outer / "work"
        try:
            task_dir.mkdir()
            if self.owner is not None:
                outer.chmod(0o711)  # its user may pass, and write only in its own
                os.chown(task_dir, *self.owner)
            if staged is not None:
                staged.link_into(task_dir)
        except BaseException:
            remove_tree(outer)
            raise
        return TaskPlace(task_dir, staged)

    def finish(
        self,
        place: TaskPlace,
        files: BundleFiles | None,
        task: tuple[str, int, int],
        outcome: Outcome,
    ) -> Outcome:
        """The outcome with what came of the task's files (``task``: its job, file
        number and line); its directory is left for ``discard``."""
        if files is None or not files.outputs:
            return outcome
        inputs = place.staged.inodes if place.staged is not None else frozenset()
        if outcome.status != Status.SUCCEEDED:
            return msgspec.structs.replace(
                outcome, files=(), files_error=not_kept(place.path, inputs)
            )
        return self._send_back(place.path, inputs, files.bucket, task, outcome)

    @staticmethod
    def discard(place: TaskPlace) -> None:
        """Remove a task's directory, however the task ended. A failure (a process
        the task left still writing there, say) is logged, not raised: the task's
        outcome stands, and the worker's next start clears what is left."""
        try:
            remove_tree(place.path.parent)
        except OSError as error:
            log.warning("a task's directory %s was not removed: %s", place.path, error)

    def _send_back(
        self,
        task_dir: Path,
        inputs: frozenset[tuple[int, int]],
        bucket: str,
        task: tuple[str, int, int],
        outcome: Outcome,
    ) -> Outcome:
        """Pack a task's files and send them: its record names the tar (the files
        themselves are named where it is unpacked: 10,000 of them would not fit
        a result message)."""
        sending = Path(tempfile.mkdtemp(prefix="send-", dir=self.outbox))
        try:
            collected = collect(task_dir, sending / "files", inputs)
            if not collected.files:
                return msgspec.structs.replace(outcome, files=(), files_error=collected.error)
            tar = sending / "task.tar"
            key = object_key(*task, pack(sending / "files", collected.files, tar))
            try:
                with tar.open("rb") as body:
                    self.s3().put_object(Bucket=bucket, Key=key, Body=body)
            except (BotoCoreError, ClientError) as error:
                # Its files are what the task was for: it failed (and may be retried).
                return msgspec.structs.replace(
                    outcome,
                    status=Status.FAILED,
                    error=f"its files could not be sent back: {error}",
                    files=(),
                    files_error=f"{len(collected.files)} files not sent",
                )
            return msgspec.structs.replace(
                outcome, files=None, files_error=collected.error, files_object=key
            )
        finally:
            remove_tree(sending)


def fetch_failure(outcome_at: float, error: Exception) -> Outcome:
    """The outcome of a task whose inputs could not be had: it did not run."""
    reason = (
        str(error) if isinstance(error, InputFetchError) else f"{type(error).__name__}: {error}"
    )
    return Outcome(
        Status.FAILED,
        None,
        None,
        outcome_at,
        0.0,
        error=f"its job's inputs could not be fetched: {reason}",
        files=(),
    )
