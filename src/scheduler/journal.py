"""The scheduler service's journal: jobs, their tasks and results, in SQLite.

Everything the service knows lives here, so a scheduler killed and started
again answers for every finished task, runs the tasks that never started,
and reports as ``lost`` those that were running when it died (they may or may
not have run; running them again silently could run a command twice).

One ``Journal`` is one connection: one thread at a time may use it.
"""

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from scheduler.errors import JobNotFoundError
from worker.result import Status, encode_lines, make_result, unfinished
from worker.task import task_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,               -- see JobState
    placement TEXT NOT NULL DEFAULT 'local',  -- see Placement
    files TEXT NOT NULL DEFAULT '[]',  -- JSON list of file names; file number n is [n - 1]
    total INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    job TEXT NOT NULL,
    file_number INTEGER NOT NULL,
    line INTEGER NOT NULL,
    text TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,  -- 0 pending, 1 dispatched, 2 finished, 3 sent
    seq INTEGER,                       -- the order results arrived in, across all jobs
    record BLOB,                       -- the result record, one JSON line
    PRIMARY KEY (job, file_number, line)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_seq ON tasks (job, seq) WHERE seq IS NOT NULL;
"""

#: Task states: dispatched is to a local worker, sent is to the fleet.
PENDING, DISPATCHED, FINISHED, SENT = 0, 1, 2, 3

#: The columns of jobs a JobInfo is made of, in its order.
JOB_COLUMNS = "id, state, placement, files, total, finished, succeeded, created_at, finished_at"


class Placement:
    """Where a job's tasks run."""

    LOCAL = "local"  # the service's local worker processes
    REMOTE = "remote"  # the fleet of the service's stack
    HYBRID = "hybrid"  # both, sharing the job

    ALL = (LOCAL, REMOTE, HYBRID)


class JobState:
    """The states a job moves through."""

    UPLOADING = "uploading"  # its tasks are arriving; it runs only once they all have
    QUEUED = "queued"  # every task is in; none finished yet
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"

    ACTIVE = (QUEUED, RUNNING)
    FINAL = (DONE, CANCELLED)


class JobInfo(NamedTuple):
    """What the journal knows of a job."""

    id: str
    state: str
    placement: str
    files: list[str]
    total: int
    finished: int
    succeeded: int
    created_at: float
    finished_at: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "job": self.id,
            "state": self.state,
            "placement": self.placement,
            "files": self.files,
            "tasks": self.total,
            "finished": self.finished,
            "succeeded": self.succeeded,
            "failed": self.finished - self.succeeded,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


class PendingTasks(NamedTuple):
    """Consecutive pending tasks of one file of a job."""

    file_number: int
    lines: list[int]
    texts: list[str]


class Journal:
    """One connection to the journal database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only power loss may
        # drop the last transactions.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a journal written by an earlier version to this schema."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "placement" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN placement TEXT NOT NULL DEFAULT 'local'")

    def close(self) -> None:
        self.db.close()

    # -- jobs --------------------------------------------------------------

    def create_job(self, job_id: str, placement: str = Placement.LOCAL) -> None:
        self.db.execute(
            "INSERT INTO jobs (id, state, placement, created_at) VALUES (?, ?, ?, ?)",
            (job_id, JobState.UPLOADING, placement, time.time()),
        )

    def add_tasks(self, job_id: str, rows: Iterable[tuple[int, int, str]]) -> None:
        """Store (file number, line, text) rows of a job still uploading.

        Raises ``sqlite3.IntegrityError`` when a (file, line) repeats.
        """
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO tasks (job, file_number, line, text) VALUES (?, ?, ?, ?)",
                ((job_id, number, line, text) for number, line, text in rows),
            )

    def seal_job(self, job_id: str, files: list[str], total: int) -> None:
        """Every task of the job is in: it may run."""
        self.db.execute(
            "UPDATE jobs SET state = ?, files = ?, total = ? WHERE id = ?",
            (JobState.QUEUED, json.dumps(files), total, job_id),
        )

    def discard_job(self, job_id: str) -> None:
        """Forget a job whose upload failed: none of it ever ran."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM tasks WHERE job = ?", (job_id,))
            self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def job(self, job_id: str) -> JobInfo:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return _job_info(row)

    def jobs(self, limit: int = 100) -> list[JobInfo]:
        """The most recent jobs, newest first."""
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state != ? ORDER BY created_at DESC LIMIT ?",
            (JobState.UPLOADING, limit),
        ).fetchall()
        return [_job_info(row) for row in rows]

    def active_jobs(self) -> list[JobInfo]:
        """Jobs that may have tasks to run, oldest first."""
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created_at",
            JobState.ACTIVE,
        ).fetchall()
        return [_job_info(row) for row in rows]

    # -- dispatch ----------------------------------------------------------

    def pending(self, job_id: str, after: tuple[int, int], limit: int) -> PendingTasks | None:
        """Up to ``limit`` pending tasks of one file, the first after (file number, line)."""
        rows = self.db.execute(
            "SELECT file_number, line, text FROM tasks"
            " WHERE job = ? AND state = 0 AND (file_number, line) > (?, ?)"
            " ORDER BY file_number, line LIMIT ?",
            (job_id, after[0], after[1], limit),
        ).fetchall()
        if not rows:
            return None
        file_number = rows[0][0]
        lines = [line for number, line, _ in rows if number == file_number]
        texts = [text for number, _, text in rows if number == file_number]
        return PendingTasks(file_number, lines, texts)

    def mark_dispatched(
        self, job_id: str, file_number: int, lines: list[int], state: int = DISPATCHED
    ) -> None:
        """Pending tasks from ``lines[0]`` to ``lines[-1]`` left: DISPATCHED or SENT."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "UPDATE tasks SET state = ? WHERE job = ? AND file_number = ?"
                " AND line BETWEEN ? AND ? AND state = 0",
                (state, job_id, file_number, lines[0], lines[-1]),
            )
            self.db.execute(
                "UPDATE jobs SET state = ? WHERE id = ? AND state = ?",
                (JobState.RUNNING, job_id, JobState.QUEUED),
            )

    def next_seq(self) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM tasks").fetchone()
        return (row[0] or 0) + 1

    def finish(
        self, job_id: str, file_number: int, results: list[tuple[int, Status, bytes]], seq: int
    ) -> int:
        """Store (line, status, record) results of one file of a job; return the next seq.

        A task already finished keeps its first result (a duplicate is ignored).
        """
        if not results:
            return seq
        with self.db:
            self.db.execute("BEGIN")
            finished = succeeded = 0
            for line, status, record in results:
                changed = self.db.execute(
                    "UPDATE tasks SET state = 2, seq = ?, record = ?"
                    " WHERE job = ? AND file_number = ? AND line = ? AND state != 2",
                    (seq, record, job_id, file_number, line),
                ).rowcount
                if changed:
                    seq += 1
                    finished += 1
                    succeeded += status == Status.SUCCEEDED
            self.db.execute(
                "UPDATE jobs SET finished = finished + ?, succeeded = succeeded + ? WHERE id = ?",
                (finished, succeeded, job_id),
            )
            self.db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?"
                " WHERE id = ? AND finished >= total AND state IN (?, ?)",
                (JobState.DONE, time.time(), job_id, *JobState.ACTIVE),
            )
        return seq

    def close_unfinished(
        self, job_id: str, status: Status, reason: str, states: tuple[int, ...], seq: int
    ) -> int:
        """Give every task of a job in one of ``states`` a final ``status``; return next seq."""
        info = self.job(job_id)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT file_number, line, text FROM tasks WHERE job = ? AND state IN ({marks})"
            " ORDER BY file_number, line",
            (job_id, *states),
        ).fetchall()
        outcome = unfinished(status, reason, time.time())
        by_file: dict[int, list[tuple[int, Status, bytes]]] = {}
        for file_number, line, text in rows:
            file = info.files[file_number - 1]
            result = make_result(
                task_id(job_id, file_number, line), job_id, file, line, text, "", outcome
            )
            by_file.setdefault(file_number, []).append((line, status, encode_lines([result])))
        for file_number, results in by_file.items():
            seq = self.finish(job_id, file_number, results, seq)
        return seq

    def cancel(self, job_id: str, seq: int) -> int:
        """Cancel a job's pending tasks; running ones finish. Returns the next seq."""
        info = self.job(job_id)
        if info.state in JobState.FINAL:
            return seq
        self.db.execute("UPDATE jobs SET state = ? WHERE id = ?", (JobState.CANCELLED, job_id))
        seq = self.close_unfinished(
            job_id, Status.CANCELLED, "job cancelled before the task ran", (PENDING,), seq
        )
        self.db.execute(
            "UPDATE jobs SET finished_at = ? WHERE id = ? AND finished >= total",
            (time.time(), job_id),
        )
        return seq

    def recover(self, *, fleet: bool) -> int:
        """After a restart: drop half-uploaded jobs, report what was running as lost.

        With the ``fleet`` back, tasks sent to it keep waiting for their
        results; without it, they are reported lost too.
        """
        seq = self.next_seq()
        for (job_id,) in self.db.execute(
            "SELECT id FROM jobs WHERE state = ?", (JobState.UPLOADING,)
        ).fetchall():
            self.discard_job(job_id)
        reason = "the scheduler stopped while the task was running; it may or may not have run"
        unfinished_states = (DISPATCHED,) if fleet else (DISPATCHED, SENT)
        for info in self.active_jobs() + self._cancelled_unfinished():
            seq = self.close_unfinished(info.id, Status.LOST, reason, unfinished_states, seq)
        return seq

    def _cancelled_unfinished(self) -> list[JobInfo]:
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = ? AND finished < total",
            (JobState.CANCELLED,),
        ).fetchall()
        return [_job_info(row) for row in rows]

    # -- results -----------------------------------------------------------

    def results_page(self, job_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (seq, record) of a job's results that arrived after ``after``."""
        return self.db.execute(
            "SELECT seq, record FROM tasks WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        ).fetchall()


def _job_info(row: tuple[object, ...]) -> JobInfo:
    job_id, state, placement, files, total, finished, succeeded, created_at, finished_at = row
    return JobInfo(
        str(job_id),
        str(state),
        str(placement),
        json.loads(str(files)),
        int(total),  # type: ignore[call-overload]
        int(finished),  # type: ignore[call-overload]
        int(succeeded),  # type: ignore[call-overload]
        float(created_at),  # type: ignore[arg-type]
        None if finished_at is None else float(finished_at),  # type: ignore[arg-type]
    )
