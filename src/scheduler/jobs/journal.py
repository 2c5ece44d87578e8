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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from scheduler.errors import JobNotFoundError, JobStateError
from scheduler.retries import attempted, check_retries, retry_delay, should_retry
from scheduler.state import private_file
from worker.bundle import UsageReport
from worker.result import Status, decode, encode_lines, unfinished_results
from worker.usage import Usage

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,               -- see JobState
    placement TEXT NOT NULL DEFAULT 'local',  -- see Placement
    files TEXT NOT NULL DEFAULT '[]',  -- JSON: the first FILES_SHOWN names (all: job_files)
    file_count INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,     -- finished tasks by status, beside succeeded
    timed_out INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL,
    retries INTEGER NOT NULL DEFAULT 0, -- how often a task that did not succeed runs again
    -- What it used (see worker.usage): on the fleet, and the CPU of local work.
    instance_seconds REAL NOT NULL DEFAULT 0,
    sqs_requests INTEGER NOT NULL DEFAULT 0,
    dynamodb_writes INTEGER NOT NULL DEFAULT 0,
    dynamodb_reads INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    s3_writes INTEGER NOT NULL DEFAULT 0,
    s3_reads INTEGER NOT NULL DEFAULT 0,
    s3_bytes INTEGER NOT NULL DEFAULT 0,
    cpu_seconds REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    job TEXT NOT NULL,
    file_number INTEGER NOT NULL,
    line INTEGER NOT NULL,
    text TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,  -- 0 pending, 1 dispatched, 2 finished, 3 sent
    seq INTEGER,                       -- the order results arrived in, across all jobs
    record BLOB,                       -- the result record, one JSON line
    earlier TEXT,                      -- JSON: exit codes of earlier attempts (--retries)
    due REAL,                          -- set while it waits for a retry: its earliest start
    PRIMARY KEY (job, file_number, line)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_files (
    job TEXT NOT NULL,
    number INTEGER NOT NULL,           -- the file's position in the upload, from 1
    name TEXT NOT NULL,
    PRIMARY KEY (job, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_seq ON tasks (job, seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_end ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage_reports (
    id TEXT PRIMARY KEY,               -- a worker's report: counted once, however delivered
    job TEXT                           -- NULL: the fleet's overhead
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_reports_by_job ON usage_reports (job);
CREATE TABLE IF NOT EXISTS usage_senders (
    job TEXT NOT NULL,
    sender TEXT NOT NULL,              -- a worker process
    sequence INTEGER NOT NULL,         -- of its latest report
    final INTEGER NOT NULL,            -- that report said it holds none of the job's bundles
    PRIMARY KEY (job, sender)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS overhead (
    -- The fleet's use charged to no job (long polls that found nothing): one row.
    id INTEGER PRIMARY KEY CHECK (id = 1),
    instance_seconds REAL NOT NULL DEFAULT 0,
    sqs_requests INTEGER NOT NULL DEFAULT 0,
    dynamodb_writes INTEGER NOT NULL DEFAULT 0,
    dynamodb_reads INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    s3_writes INTEGER NOT NULL DEFAULT 0,
    s3_reads INTEGER NOT NULL DEFAULT 0,
    s3_bytes INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO overhead (id) VALUES (1);
"""

#: The usage columns of jobs and overhead, in the order of Usage's fields.
USAGE_COLUMNS = (
    "instance_seconds",
    "sqs_requests",
    "dynamodb_writes",
    "dynamodb_reads",
    "bytes_sent",
    "s3_writes",
    "s3_reads",
    "s3_bytes",
)

#: Usage columns a journal of an earlier version lacks (in jobs and overhead).
S3_COLUMNS = ("s3_writes", "s3_reads", "s3_bytes")

#: The task filters (records_with_status, slowest): a finished task's status and
#: duration, read from its record, so that a filter reads the tasks it returns
#: rather than every record of the job. Their expressions are the queries'.
#: A journal no one filters (a `run`'s own) goes without: they cost about a
#: third of storing a result (bench/journal_store.py).
FILTER_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_status
    ON tasks (job, json_extract(CAST(record AS TEXT), '$.status'), seq)
    WHERE state = 2 AND seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_duration
    ON tasks (job, json_extract(CAST(record AS TEXT), '$.duration_ms'))
    WHERE state = 2;
"""

#: Made once the columns are there (a journal of an earlier version gains them first).
RETRY_INDEX = "CREATE INDEX IF NOT EXISTS tasks_due ON tasks (job, due) WHERE due IS NOT NULL"

#: What ``PRAGMA auto_vacuum`` reads on a journal that can shrink.
INCREMENTAL_VACUUM = 2

#: Where a pruned job's rows are, beside its tasks: (table, its job column).
PRUNED_ROWS = (
    ("job_files", "job"),
    ("usage_reports", "job"),
    ("usage_senders", "job"),
    ("jobs", "id"),
)

#: Task states: dispatched is to a local worker, sent is to the fleet.
PENDING, DISPATCHED, FINISHED, SENT = 0, 1, 2, 3

#: The columns of jobs a JobInfo is made of, in its order.
JOB_COLUMNS = (
    "id, state, placement, file_count, total, finished, succeeded, created_at, finished_at,"
    " files, retries, failed, timed_out, lost, cancelled, "
    + ", ".join(USAGE_COLUMNS)
    + ", cpu_seconds"
)

#: The jobs columns that count finished tasks by status: each named as its status.
STATUS_COLUMNS = tuple(status.value for status in Status)

#: File names a JobInfo carries: a job may have many, and jobs are listed often.
FILES_SHOWN = 10

#: Bytes of result records one page holds at most (one record may pass it).
RESULTS_PAGE_BYTES = 4 * 1024 * 1024

#: Ended jobs one pruning step looks at, and task rows it deletes at most: each
#: step is one short transaction, so the dispatch thread's writes never wait long.
PRUNE_JOBS = 200
PRUNE_TASK_ROWS = 10_000

#: Bytes the write-ahead log is cut back to once folded into the database: what
#: SQLite's automatic checkpoint lets it reach (1,000 pages of 4 KiB) when readers
#: do not hold it back. Without a limit, it would stay at its largest for ever.
WAL_LIMIT_BYTES = 4000 * 1024

#: Free pages one step of shrinking gives back to the file system (4 MiB of 4 KiB pages).
SHRINK_PAGES = 1024


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
    file_count: int
    total: int
    finished: int
    succeeded: int
    created_at: float
    finished_at: float | None
    files: list[str]  # the first FILES_SHOWN file names
    retries: int
    failed: int
    timed_out: int
    lost: int
    cancelled: int
    usage: Usage = Usage()  # on the fleet
    cpu_seconds: float = 0.0  # of local workers and their commands

    def by_status(self) -> dict[str, int]:
        """Finished tasks by how they ended."""
        return {column: getattr(self, column) for column in STATUS_COLUMNS}

    def as_dict(self) -> dict[str, object]:
        return {
            "job": self.id,
            "state": self.state,
            "placement": self.placement,
            "files": self.files,
            "file_count": self.file_count,
            "tasks": self.total,
            "finished": self.finished,
            "succeeded": self.succeeded,
            # Ran (or may have) and did not succeed; cancelled ones never ran.
            "failed": self.failed + self.timed_out + self.lost,
            "cancelled": self.cancelled,
            "by_status": self.by_status(),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "retries": self.retries,
            **self.usage.figures(),
            "cpu_seconds": round(self.cpu_seconds, 6),
        }


class Stored(NamedTuple):
    """What storing results did: the next seq, and how many results were taken
    (stored, or sent back for another attempt; not duplicates, not strangers)."""

    seq: int
    taken: int


class Pruned(NamedTuple):
    """What a pruning step deleted: jobs (with all of their rows), and task rows."""

    jobs: int
    tasks: int
    ids: tuple[str, ...] = ()  # the jobs'

    def __bool__(self) -> bool:
        return bool(self.jobs or self.tasks)


class PendingTasks(NamedTuple):
    """Consecutive pending tasks of one file of a job."""

    file_number: int
    lines: list[int]
    texts: list[str]


class Journal:
    """One connection to the journal database."""

    def __init__(self, path: Path, *, task_filters: bool = True) -> None:
        """``task_filters``: with the indexes the API's task filters read (a
        service's journal); without, a journal no one filters stores faster."""
        # It holds every task's output: its owner's alone. SQLite gives the
        # -wal and -shm files the database file's mode.
        private_file(path)
        self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        # Pages freed by pruning can go back to the file system (``shrink``). It
        # takes on a new journal only, and before WAL mode writes the file's
        # header; an older journal is converted by ``compact``.
        self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only power loss may
        # drop the last transactions.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # A write-ahead log grown while readers held it back is cut back once it
        # is folded in.
        self.db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self.db.executescript(SCHEMA)
        self._upgrade()
        if task_filters:
            self.db.executescript(FILTER_INDEXES)

    def _upgrade(self) -> None:
        """Bring a journal written by an earlier version to this schema."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "placement" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN placement TEXT NOT NULL DEFAULT 'local'")
        if "file_count" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN file_count INTEGER NOT NULL DEFAULT 0")
        if "retries" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0")
        if "cancelled" not in columns:
            self._add_status_counts()
        if "cpu_seconds" not in columns:
            for column in (*USAGE_COLUMNS, "cpu_seconds"):
                kind = "REAL" if column.endswith("seconds") else "INTEGER"
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind} NOT NULL DEFAULT 0")
        for table in ("jobs", "overhead"):
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in S3_COLUMNS:
                if column not in have:
                    self.db.execute(
                        f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                    )
        if "due" not in {row[1] for row in self.db.execute("PRAGMA table_info(tasks)")}:
            self.db.execute("ALTER TABLE tasks ADD COLUMN earlier TEXT")
            self.db.execute("ALTER TABLE tasks ADD COLUMN due REAL")
        self.db.execute(RETRY_INDEX)
        with self.db:
            self.db.execute("BEGIN")
            # Journals from before job_files held every name in jobs.files.
            for job_id, files in self.db.execute(
                "SELECT id, files FROM jobs WHERE file_count = 0 AND files != '[]'"
            ).fetchall():
                self._store_files(job_id, json.loads(files))

    def _add_status_counts(self) -> None:
        """Count an earlier version's finished tasks by status, from their records."""
        with self.db:
            self.db.execute("BEGIN")
            for column in STATUS_COLUMNS[1:]:  # succeeded was counted already
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
                self.db.execute(
                    f"UPDATE jobs SET {column} = (SELECT COUNT(*) FROM tasks"
                    f" WHERE job = jobs.id AND state = {FINISHED}"
                    " AND json_extract(CAST(record AS TEXT), '$.status') = ?)"
                    " WHERE finished > succeeded",
                    (column,),
                )

    def _store_files(self, job_id: str, files: list[str]) -> None:
        self.db.executemany(
            "INSERT INTO job_files (job, number, name) VALUES (?, ?, ?)",
            ((job_id, number, name) for number, name in enumerate(files, start=1)),
        )
        self.db.execute(
            "UPDATE jobs SET file_count = ?, files = ? WHERE id = ?",
            (len(files), json.dumps(files[:FILES_SHOWN]), job_id),
        )

    def close(self) -> None:
        self.db.close()

    # -- jobs --------------------------------------------------------------

    def create_job(self, job_id: str, placement: str = Placement.LOCAL, retries: int = 0) -> None:
        """A job whose tasks are about to be uploaded; ``retries``: how often a task
        that fails, times out or is lost runs again."""
        check_retries(retries)
        self.db.execute(
            "INSERT INTO jobs (id, state, placement, retries, created_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, JobState.UPLOADING, placement, retries, time.time()),
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
        with self.db:
            self.db.execute("BEGIN")
            self._store_files(job_id, files)
            self.db.execute(
                "UPDATE jobs SET state = ?, total = ? WHERE id = ?",
                (JobState.QUEUED, total, job_id),
            )

    def retry_job(self, job_id: str, new_id: str, placement: str, retries: int) -> int:
        """Make ``new_id`` a job of the tasks of ``job_id`` that did not succeed
        (failed, timed out, lost or cancelled), ready to run; how many it has.

        Raises ``JobStateError`` while the job has tasks that may still run, or
        when every task of it succeeded.
        """
        info = self.job(job_id)
        if info.state not in JobState.FINAL or info.finished < info.total:
            raise JobStateError(
                f"job {job_id} still has tasks to run ({info.finished} of {info.total} finished):"
                " wait for it to end, or cancel it, before retrying it"
            )
        check_retries(retries)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO jobs (id, state, placement, retries, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (new_id, JobState.UPLOADING, placement, retries, time.time()),
            )
            total = self.db.execute(
                "INSERT INTO tasks (job, file_number, line, text)"
                " SELECT ?, file_number, line, text FROM tasks WHERE job = ?"
                " AND json_extract(CAST(record AS TEXT), '$.status') != ?",
                (new_id, job_id, Status.SUCCEEDED.value),
            ).rowcount
            if total == 0:
                raise JobStateError(f"every task of job {job_id} succeeded: nothing to retry")
            self._store_files(new_id, self.job_files(job_id))
            self.db.execute(
                "UPDATE jobs SET state = ?, total = ? WHERE id = ?",
                (JobState.QUEUED, total, new_id),
            )
        return total

    def discard_job(self, job_id: str) -> None:
        """Forget a job whose upload failed: none of it ever ran."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM tasks WHERE job = ?", (job_id,))
            self.db.execute("DELETE FROM job_files WHERE job = ?", (job_id,))
            self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def job(self, job_id: str) -> JobInfo:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return _job_info(row)

    def add_usage(
        self, job_id: str | None, usage: Usage, report: UsageReport | None = None
    ) -> bool:
        """Count what a job (None: no job, the fleet's overhead) used; a worker's
        ``report`` of it counts once however often it comes (returns False for
        one counted before)."""
        values = [getattr(usage, column) for column in USAGE_COLUMNS]
        adding = ", ".join(f"{column} = {column} + ?" for column in USAGE_COLUMNS)
        with self.db:
            self.db.execute("BEGIN")
            if report is not None:
                new = self.db.execute(
                    "INSERT OR IGNORE INTO usage_reports (id, job) VALUES (?, ?)",
                    (report.report_id, job_id),
                ).rowcount
                if not new:
                    return False
                if job_id is not None:
                    # The sender's latest report says whether more is to come.
                    self.db.execute(
                        "INSERT INTO usage_senders"
                        " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?)"
                        " ON CONFLICT (job, sender) DO UPDATE"
                        " SET sequence = excluded.sequence, final = excluded.final"
                        " WHERE excluded.sequence > usage_senders.sequence",
                        (job_id, report.sender, report.sequence, report.final, job_id),
                    )
            if job_id is None:
                self.db.execute(f"UPDATE overhead SET {adding}", values)
            else:
                self.db.execute(f"UPDATE jobs SET {adding} WHERE id = ?", (*values, job_id))
        return True

    def add_cpu_seconds(self, job_id: str, seconds: float) -> None:
        self.db.execute(
            "UPDATE jobs SET cpu_seconds = cpu_seconds + ? WHERE id = ?", (seconds, job_id)
        )

    def overhead(self) -> Usage:
        """What the fleet used for no job."""
        row = self.db.execute(f"SELECT {', '.join(USAGE_COLUMNS)} FROM overhead").fetchone()
        return Usage(*row)

    def usage_to_come(self, job_id: str) -> int:
        """Workers that ran a job's bundles and have not sent their last report of it."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM usage_senders WHERE job = ? AND NOT final", (job_id,)
        ).fetchone()
        return int(row[0])

    def progress(self, job_id: str) -> tuple[str, int, int]:
        """A job's (state, finished, total): what a results stream looks at, cheaply."""
        row = self.db.execute(
            "SELECT state, finished, total FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return str(row[0]), int(row[1]), int(row[2])

    def job_files(self, job_id: str) -> list[str]:
        """Every file name of a job, by file number - 1."""
        rows = self.db.execute(
            "SELECT name FROM job_files WHERE job = ? ORDER BY number", (job_id,)
        ).fetchall()
        return [name for (name,) in rows]

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
            f" WHERE job = ? AND state = {PENDING} AND due IS NULL AND (file_number, line) > (?, ?)"
            " ORDER BY file_number, line LIMIT ?",
            (job_id, after[0], after[1], limit),
        ).fetchall()
        return _of_first_file(rows)

    def retries_due(self, job_id: str, limit: int) -> PendingTasks | None:
        """Up to ``limit`` tasks of one file of a job whose wait for a retry is over."""
        rows = self.db.execute(
            "SELECT file_number, line, text FROM tasks WHERE job = ? AND due <= ?"
            " ORDER BY file_number, line LIMIT ?",
            (job_id, time.time(), limit),
        ).fetchall()
        return _of_first_file(rows)

    def next_retry(self, job_id: str) -> float | None:
        """When the first of a job's tasks waiting for a retry is due (epoch seconds)."""
        row = self.db.execute(
            "SELECT MIN(due) FROM tasks WHERE job = ? AND due IS NOT NULL", (job_id,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def mark_retries_dispatched(
        self, job_id: str, file_number: int, lines: list[int], state: int
    ) -> None:
        """Tasks ``retries_due`` gave left: DISPATCHED or SENT."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "UPDATE tasks SET state = ?, due = NULL"
                f" WHERE job = ? AND file_number = ? AND line = ? AND state = {PENDING}",
                ((state, job_id, file_number, line) for line in lines),
            )

    def mark_dispatched(
        self, job_id: str, file_number: int, lines: list[int], state: int = DISPATCHED
    ) -> None:
        """Pending tasks from ``lines[0]`` to ``lines[-1]`` left: DISPATCHED or SENT.
        (Those between waiting for a retry stay.)"""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "UPDATE tasks SET state = ? WHERE job = ? AND file_number = ?"
                f" AND line BETWEEN ? AND ? AND state = {PENDING} AND due IS NULL",
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
        rows = [(line, status, record, ()) for line, status, record in results]
        return self._finish(job_id, file_number, f"state != {FINISHED}", rows, seq).seq

    def finish_sent(
        self,
        job_id: str,
        file_number: int,
        results: list[tuple[int, str, Status, bytes]],
        seq: int,
    ) -> "Stored":
        """Store (line, task text, status, record) results that came from the fleet.

        Only a task sent to the fleet, whose text is the one stored, takes a
        result: a message about any other task (forged, or for a local job)
        changes nothing.
        """
        rows = [(line, status, record, (text,)) for line, text, status, record in results]
        return self._finish(job_id, file_number, f"state = {SENT} AND text = ?", rows, seq)

    def _finish(
        self,
        job_id: str,
        file_number: int,
        condition: str,
        results: Sequence[tuple[int, Status, bytes, tuple[str, ...]]],
        seq: int,
    ) -> "Stored":
        """Store results of tasks in ``condition``; with retries, send some back."""
        if not results:
            return Stored(seq, 0)
        retries = self._retries(job_id)
        with self.db:
            self.db.execute("BEGIN")
            counts: Counter[str] = Counter()
            retried = 0
            for line, status, record, extra in results:
                key = (job_id, file_number, line, *extra)
                if retries:
                    final = self._final_record(key, condition, status, record, retries)
                    if final is None:
                        retried += 1
                        continue
                    record = final
                changed = self.db.execute(
                    f"UPDATE tasks SET state = {FINISHED}, seq = ?, record = ?, due = NULL"
                    f" WHERE job = ? AND file_number = ? AND line = ? AND {condition}",
                    (seq, record, *key),
                ).rowcount
                if changed:
                    seq += 1
                    counts[status.value] += 1
            finished = sum(counts.values())
            added = ", ".join(f"{column} = {column} + ?" for column in STATUS_COLUMNS)
            self.db.execute(
                f"UPDATE jobs SET finished = finished + ?, {added} WHERE id = ?",
                (finished, *(counts[column] for column in STATUS_COLUMNS), job_id),
            )
            self.db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?"
                " WHERE id = ? AND finished >= total AND state IN (?, ?)",
                (JobState.DONE, time.time(), job_id, *JobState.ACTIVE),
            )
        return Stored(seq, finished + retried)

    def _retries(self, job_id: str) -> int:
        row = self.db.execute("SELECT retries FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def _final_record(
        self, key: tuple[object, ...], condition: str, status: Status, record: bytes, retries: int
    ) -> bytes | None:
        """A result's record as stored for good (naming the attempts before it), or
        None when the task waits for another attempt instead (or the result is a
        duplicate: the caller's update then changes nothing)."""
        where = f"job = ? AND file_number = ? AND line = ? AND {condition}"
        row = self.db.execute(f"SELECT earlier FROM tasks WHERE {where}", key).fetchone()
        if row is None:
            return record  # a duplicate, or a stranger
        earlier: list[int | None] = json.loads(row[0]) if row[0] else []
        if should_retry(status, len(earlier) + 1, retries):
            earlier.append(decode(record).exit_code)
            self.db.execute(
                f"UPDATE tasks SET state = {PENDING}, earlier = ?, due = ? WHERE {where}",
                (json.dumps(earlier), time.time() + retry_delay(len(earlier)), *key),
            )
            return None
        if not earlier:
            return record
        return encode_lines([attempted(decode(record), earlier)])

    def close_unfinished(
        self, job_id: str, status: Status, reason: str, states: tuple[int, ...], seq: int
    ) -> int:
        """Give every task of a job in one of ``states`` a final ``status``; return next seq."""
        files = self.job_files(job_id)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT file_number, line, text FROM tasks WHERE job = ? AND state IN ({marks})"
            " ORDER BY file_number, line",
            (job_id, *states),
        ).fetchall()
        tasks = ((number, files[number - 1], line, text) for number, line, text in rows)
        by_file: dict[int, list[tuple[int, Status, bytes]]] = {}
        for result, (file_number, _, _) in zip(
            unfinished_results(job_id, tasks, status, reason), rows, strict=True
        ):
            by_file.setdefault(file_number, []).append(
                (result.line, status, encode_lines([result]))
            )
        for file_number, results in by_file.items():
            seq = self.finish(job_id, file_number, results, seq)
        return seq

    def cancel(self, job_id: str, seq: int) -> int:
        """Cancel a job's pending tasks (those waiting for a retry too); running ones
        finish. Returns the next seq."""
        info = self.job(job_id)
        if info.state in JobState.FINAL or info.state == JobState.UPLOADING:
            return seq  # an upload is cancelled by ending it: it is then discarded
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

    # -- retention ---------------------------------------------------------

    def prune_step(self, ended_before: float) -> "Pruned":
        """One short step of forgetting the jobs that ended before ``ended_before``
        (epoch seconds): their tasks and records, file names and usage reports.
        What it deleted; nothing once nothing is left to prune.

        A job is pruned only once it can change no more: final, with every task
        finished (a cancelled job whose running tasks have not reported stays).
        """
        ids = [
            job_id
            for (job_id,) in self.db.execute(
                "SELECT id FROM jobs WHERE finished_at < ? AND state IN (?, ?)"
                " AND finished >= total ORDER BY finished_at LIMIT ?",
                (ended_before, *JobState.FINAL, PRUNE_JOBS),
            )
        ]
        if not ids:
            return Pruned(0, 0)
        marks = ",".join("?" * len(ids))
        with self.db:
            self.db.execute("BEGIN")
            deleted = self.db.execute(
                f"DELETE FROM tasks WHERE (job, file_number, line) IN"
                f" (SELECT job, file_number, line FROM tasks WHERE job IN ({marks}) LIMIT ?)",
                (*ids, PRUNE_TASK_ROWS),
            ).rowcount
            if deleted >= PRUNE_TASK_ROWS:
                return Pruned(0, deleted)  # they may have more tasks: the next step goes on
            for table, column in PRUNED_ROWS:
                self.db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
        return Pruned(len(ids), deleted, tuple(ids))

    def prune(
        self, ended_before: float, forgotten: Callable[[tuple[str, ...]], None] | None = None
    ) -> int:
        """Forget every job that ended before ``ended_before`` (see ``prune_step``),
        in short steps; how many were forgotten (``forgotten`` hears their ids)."""
        pruned = 0
        while step := self.prune_step(ended_before):
            pruned += step.jobs
            if forgotten is not None and step.ids:
                forgotten(step.ids)
        return pruned

    def shrink(self, pages: int = 0) -> None:
        """Give up to ``pages`` free pages (0: all) back to the file system; on a
        journal without incremental auto-vacuum (see ``compact``), nothing."""
        # Run as a script: sqlite3's execute steps this pragma once, a page a call.
        self.db.executescript(f"PRAGMA incremental_vacuum({int(pages)})")

    def free_pages(self) -> int:
        """Pages of the file that hold nothing (pruned, not given back yet)."""
        (count,) = self.db.execute("PRAGMA freelist_count").fetchone()
        return int(count)

    def compact(self) -> bool:
        """Make a journal of an earlier version able to shrink (a VACUUM, once: it
        rewrites the file, holding the write lock meanwhile); whether it did."""
        (mode,) = self.db.execute("PRAGMA auto_vacuum").fetchone()
        if mode == INCREMENTAL_VACUUM:
            return False
        self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.execute("VACUUM")
        return True

    # -- results -----------------------------------------------------------

    def records_with_status(self, job_id: str, status: Status, limit: int) -> list[bytes]:
        """The first ``limit`` records of a job's tasks that ended in ``status``, in
        the order they arrived (read through the index tasks_by_status)."""
        rows = self.db.execute(
            f"SELECT record FROM tasks WHERE job = ? AND seq IS NOT NULL AND state = {FINISHED}"
            " AND json_extract(CAST(record AS TEXT), '$.status') = ? ORDER BY seq LIMIT ?",
            (job_id, status.value, limit),
        ).fetchall()
        return [bytes(record) for (record,) in rows]

    def records_of_line(self, job_id: str, line: int, file_name: str) -> list[bytes]:
        """The records of a job's finished tasks of ``line`` in files whose base
        name is ``file_name`` (a task's output folder is named by these)."""
        rows = self.db.execute(
            f"SELECT t.record FROM tasks t JOIN job_files f ON f.job = t.job"
            f" AND f.number = t.file_number WHERE t.job = ? AND t.line = ?"
            f" AND t.state = {FINISHED} AND (f.name = ? OR f.name LIKE ? ESCAPE '!')",
            (job_id, line, file_name, "%/" + like_escaped(file_name)),
        ).fetchall()
        return [bytes(record) for (record,) in rows]

    def slowest(self, job_id: str, limit: int) -> list[bytes]:
        """The records of a job's finished tasks that took longest, longest first
        (read through the index tasks_by_duration)."""
        rows = self.db.execute(
            f"SELECT record FROM tasks WHERE job = ? AND state = {FINISHED}"
            " ORDER BY json_extract(CAST(record AS TEXT), '$.duration_ms') DESC LIMIT ?",
            (job_id, limit),
        ).fetchall()
        return [bytes(record) for (record,) in rows]

    def results_page(
        self, job_id: str, after: int, limit: int, max_bytes: int = RESULTS_PAGE_BYTES
    ) -> list[tuple[int, bytes]]:
        """(seq, record) of a job's results that arrived after ``after``: up to
        ``limit`` records, and no more once they reach ``max_bytes``."""
        page: list[tuple[int, bytes]] = []
        size = 0
        rows = self.db.execute(
            "SELECT seq, record FROM tasks WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        for seq, record in rows:  # read row by row: a page never holds more than it sends
            page.append((seq, record))
            size += len(record)
            if size >= max_bytes:
                break
        rows.close()
        return page


def like_escaped(text: str) -> str:
    """``text`` matched as it is by LIKE ... ESCAPE '!'."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _of_first_file(rows: list[tuple[int, int, str]]) -> PendingTasks | None:
    """The (file number, line, text) rows of the first row's file."""
    if not rows:
        return None
    file_number = rows[0][0]
    lines = [line for number, line, _ in rows if number == file_number]
    texts = [text for number, _, text in rows if number == file_number]
    return PendingTasks(file_number, lines, texts)


def _job_info(row: tuple[object, ...]) -> JobInfo:
    job_id, state, placement, count, total, finished, succeeded, created, ended, files = row[:10]
    retries, failed, timed_out, lost, cancelled = (int(v) for v in row[10:15])  # type: ignore[call-overload]
    return JobInfo(
        str(job_id),
        str(state),
        str(placement),
        int(count),  # type: ignore[call-overload]
        int(total),  # type: ignore[call-overload]
        int(finished),  # type: ignore[call-overload]
        int(succeeded),  # type: ignore[call-overload]
        float(created),  # type: ignore[arg-type]
        None if ended is None else float(ended),  # type: ignore[arg-type]
        json.loads(str(files)),
        retries,
        failed,
        timed_out,
        lost,
        cancelled,
        Usage(*row[15:23]),  # type: ignore[arg-type]
        float(row[23]),  # type: ignore[arg-type]
    )
