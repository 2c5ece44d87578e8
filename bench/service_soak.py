"""A soak of the scheduler service: many small jobs through one real process.

    python bench/service_soak.py                       # 20,000 jobs (most of an hour here)
    python bench/service_soak.py --jobs 4000 --keep-seconds 20
    python bench/service_soak.py --jobs 6000 --keep-seconds 1e9 --keep-journal j.sqlite3

One `taskfleet scheduler` (2 local workers, --keep-days set to a short
retention) is sent ``--jobs`` jobs of one `sleep 0` task each over HTTP, by
``--clients`` threads, each with the real client (`SchedulerClient`): submit,
then follow the job's results to its end. Every job must be answered with its
one record. Printed every ``--every`` jobs and at the end: jobs done, jobs a
second, the scheduler's resident memory (VmRSS from /proc) and its journal's
size on disk (the database and its write-ahead log). The run passes when, at
the end, both are at most 1.2 times what they were after the first
``--baseline`` jobs, and every job was answered; it exits 1 otherwise.
"""

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from client.service_client import SchedulerClient
from scheduler.jobs.retention import SECONDS_PER_DAY, journal_bytes

TASKFLEET = str(Path(sys.executable).parent / "taskfleet")

#: How much the end's memory and journal may be above the baseline's.
MAX_GROWTH = 1.2


class Sample(NamedTuple):
    """The scheduler at one moment of the soak."""

    jobs: int
    seconds: float
    rss_kib: int
    journal_bytes: int  # the database and its write-ahead log
    wal_bytes: int  # of which the write-ahead log

    def line(self) -> str:
        rate = self.jobs / self.seconds if self.seconds else 0.0
        mib = 2**20
        return (
            f"{self.jobs:>7} jobs  {self.seconds:>7.1f} s  {rate:>6.1f} jobs/s"
            f"  RSS {self.rss_kib / 1024:>6.1f} MiB  journal {self.journal_bytes / mib:>6.2f} MiB"
            f" (log {self.wal_bytes / mib:.2f})"
        )


def wal_bytes(journal: Path) -> int:
    wal = journal.with_name(journal.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def rss_kib(pid: int) -> int:
    """A process's resident memory now (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def scheduler(folder: Path, keep_seconds: float, workers: int) -> Iterator[tuple[str, Path, int]]:
    """A real scheduler process; its URL, its token file and its pid."""
    token_file = folder / "token"
    token_file.write_text(secrets.token_urlsafe(32) + "\n")
    token_file.chmod(0o600)
    log = folder / "scheduler.log"
    command = [
        TASKFLEET,
        "scheduler",
        "--port",
        "0",
        "--workers",
        str(workers),
        "--journal",
        str(folder / "journal.sqlite3"),
        "--token-file",
        str(token_file),
        "--keep-days",
        repr(keep_seconds / SECONDS_PER_DAY),
    ]
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "listening on " not in (text := log.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the scheduler did not start: {text}")
            time.sleep(0.05)
        url = text.split("listening on ", 1)[1].split()[0]
        yield url, token_file, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


class Soak:
    """Jobs handed out to client threads, and what they found."""

    def __init__(self, total: int, url: str, token_file: Path, workload: str) -> None:
        self.total = total
        self.url = url
        self.token_file = token_file
        self.workload = workload
        self.done = 0
        self.unanswered: list[str] = []
        self._next = 0
        self._lock = threading.Lock()
        self.progress = threading.Condition(self._lock)

    def _take(self) -> bool:
        with self._lock:
            if self._next >= self.total:
                return False
            self._next += 1
            return True

    def client_loop(self) -> None:
        with SchedulerClient(self.url, token_file=self.token_file) as client:
            while self._take():
                job = client.submit([self.workload])["job"]
                records = [r for piece in client.results(job, follow=True) for r in piece]
                with self.progress:
                    if len(records) != 1:
                        self.unanswered.append(job)
                    self.done += 1
                    self.progress.notify_all()

    def wait_for(self, jobs: int) -> None:
        with self.progress:
            self.progress.wait_for(lambda: self.done >= jobs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in all")
    parser.add_argument("--baseline", type=int, default=2_000, help="jobs before the baseline")
    parser.add_argument("--every", type=int, default=2_000, help="jobs between two printed lines")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="the scheduler's local workers")
    parser.add_argument(
        "--keep-seconds", type=float, default=30.0, help="the journal's retention, in seconds"
    )
    parser.add_argument(
        "--keep-journal", type=Path, help="copy the journal here once the scheduler stopped"
    )
    args = parser.parse_args()
    if not 0 < args.baseline <= args.jobs:
        parser.error("--baseline must be from 1 to --jobs")
    with tempfile.TemporaryDirectory(prefix="taskfleet-soak-") as name:
        folder = Path(name)
        workload = folder / "one.txt"
        workload.write_text("sleep 0\n")
        with scheduler(folder, args.keep_seconds, args.workers) as (url, token_file, pid):
            journal = folder / "journal.sqlite3"
            soak = Soak(args.jobs, url, token_file, str(workload))
            print(
                f"{args.jobs} jobs of one `sleep 0`, {args.clients} clients,"
                f" {args.workers} workers, retention {args.keep_seconds:g} s (pid {pid})"
            )
            began = time.monotonic()
            threads = [threading.Thread(target=soak.client_loop) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            marks = sorted({args.baseline, *range(args.every, args.jobs, args.every), args.jobs})
            samples = {}
            for mark in marks:
                soak.wait_for(mark)
                seconds = time.monotonic() - began
                sizes = journal_bytes(journal), wal_bytes(journal)
                sample = Sample(mark, seconds, rss_kib(pid), *sizes)
                samples[mark] = sample
                print(sample.line(), flush=True)
            for thread in threads:
                thread.join()
        if args.keep_journal is not None:
            shutil.copyfile(journal, args.keep_journal)
    base, end = samples[args.baseline], samples[args.jobs]
    rss_growth = end.rss_kib / base.rss_kib
    journal_growth = end.journal_bytes / base.journal_bytes
    print(
        f"end / after {args.baseline} jobs: RSS x{rss_growth:.2f}, journal x{journal_growth:.2f}"
        f" (at most x{MAX_GROWTH}); unanswered jobs: {len(soak.unanswered)}"
    )
    passed = max(rss_growth, journal_growth) <= MAX_GROWTH and not soak.unanswered
    print("passed" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    os.environ.pop("TASKFLEET_TOKEN", None)  # the soak's scheduler has a token of its own
    sys.exit(main())
