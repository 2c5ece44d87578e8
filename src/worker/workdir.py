"""Each task's working directory: made fresh, given the inputs, emptied after.

Every shell task starts in an empty directory of its own under its run's
directory (never the user's), so that tasks do not see each other's files and
a workload behaves the same wherever it runs. When it ends, the files it left
come back under the output directory as ``<file>-<line>/...`` if it succeeded
(and nothing of it if it did not), and its directory is removed. A directory a
task left empty (most tasks write nothing) serves the worker's next task
instead: on ext4, removing a directory took 0.7-1.8 ms, more than a quick
command's run; looking into an empty one, microseconds.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from worker.inputs import Staged
from worker.outputs import Collected, collect, entries
from worker.result import Status

#: Where finished tasks' files are gathered inside the output directory before
#: they are moved into place whole: a task cut off half-way leaves nothing else.
PARTIAL = ".taskfleet-partial"


class TaskFiles(NamedTuple):
    """Where a run's tasks get and leave files (plain strings: sent to workers)."""

    run_dir: str  # task directories are made under it
    inputs: str | None = None  # staged inputs (worker.inputs.stage)
    output_dir: str | None = None  # where tasks' files come back


def task_label(file: str, line: int) -> str:
    """A task's name under the output directory: its file's base name and its line."""
    return f"{Path(file).name}-{line}"


class WorkDirs:
    """Makes and ends the working directories of one worker's tasks."""

    def __init__(self, files: TaskFiles) -> None:
        self.files = files
        self.tasks = Path(files.run_dir) / "tasks"
        self.tasks.mkdir(exist_ok=True)
        self.staged = Staged.read(Path(files.inputs)) if files.inputs else None
        self.output = Path(files.output_dir) if files.output_dir else None
        self._spare: Path | None = None  # the last task's, left empty

    def make(self) -> Path:
        """An empty directory for a task (but for its inputs, linked in)."""
        if self._spare is not None:
            task_dir, self._spare = self._spare, None
            return task_dir
        task_dir = Path(tempfile.mkdtemp(prefix="task-", dir=self.tasks))
        if self.staged is not None:
            self.staged.link_into(task_dir)
        return task_dir

    def finish(self, task_dir: Path, label: str, status: Status) -> Collected | None:
        """Bring back the files of a task that succeeded, then remove its directory;
        what came back (None without an output directory)."""
        try:
            if self.output is None:
                return None
            if status != Status.SUCCEEDED:
                inputs = self.staged.inodes if self.staged else frozenset()
                return Collected((), not_kept(task_dir, inputs))
            return self._bring_back(task_dir, label)
        finally:
            self._end(task_dir)

    def _end(self, task_dir: Path) -> None:
        """Keep an empty directory for the next task; remove any other."""
        if self.staged is None:
            with os.scandir(task_dir) as entries:
                if next(entries, None) is None:
                    self._spare = task_dir
                    return
        remove_tree(task_dir)

    def _bring_back(self, task_dir: Path, label: str) -> Collected:
        assert self.output is not None
        partial = self.output / PARTIAL
        partial.mkdir(parents=True, exist_ok=True)
        gathering = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=partial))
        inputs = self.staged.inodes if self.staged else frozenset()
        try:
            collected = collect(task_dir, gathering, inputs)
            if collected.files:
                place(gathering, self.output / label)
        finally:
            remove_tree(gathering)
        return collected


class JobDirs:
    """The WorkDirs a worker's chunks use: the pool's, or their job's own (a
    service's job with files), the last few jobs' kept for their next chunks."""

    #: Jobs whose WorkDirs are kept: chunks of a few jobs take turns.
    KEPT = 8

    def __init__(self, pool: WorkDirs | None) -> None:
        self.pool = pool
        self._jobs: dict[TaskFiles, WorkDirs] = {}

    def of(self, files: TaskFiles | None) -> WorkDirs | None:
        if files is None:
            return self.pool
        dirs = self._jobs.pop(files, None) or WorkDirs(files)
        self._jobs[files] = dirs  # the last used, last
        if len(self._jobs) > self.KEPT:
            del self._jobs[next(iter(self._jobs))]
        return dirs


def not_kept(task_dir: Path, inputs: frozenset[tuple[int, int]]) -> str | None:
    """What a task that did not succeed leaves out: its files (less its inputs)
    are not brought back, and its record says how many (None: it left none)."""
    left = sum(1 for _ in entries(task_dir, inputs))
    return f"{left} files not kept: the task did not succeed" if left else None


def place(gathered: Path, target: Path) -> None:
    """Move a task's gathered files to their place, whole; an earlier run's
    there (``--resume`` runs a task again) is replaced."""
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=gathered.parent))
        target.rename(old / "old")
        remove_tree(old)
    gathered.rename(target)


def remove_tree(path: Path) -> None:
    """Remove a directory and all in it, read-only parts included (a task's inputs
    are; a task may have made its own so). Directories are made writable only
    when the plain removal fails: most trees need no second walk."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except PermissionError:
        os.chmod(path, 0o700)
        for directory, subdirectories, _ in os.walk(path):
            for name in subdirectories:
                child = os.path.join(directory, name)
                if not os.path.islink(child):
                    os.chmod(child, 0o700)
        shutil.rmtree(path)
