"""Running one workload on one system and timing it: taskfleet's ways, and the peers'.

Every figure is seconds from the first task handed over to the last result
back, with the system's workers already started: for taskfleet the summary's
wall time of a real `taskfleet run` / `taskfleet submit` process, for the
peers the same span around their map call on pre-started worker pools.
"""

import contextlib
import json
import multiprocessing
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from scheduler.fleet.aws import StackResources
from worker.errors import TaskfleetError
from worker.execute import TaskRunner, plan
from worker.sqs import aws_client

#: The taskfleet command, run by the same interpreter as this one.
TASKFLEET = [sys.executable, "-m", "client"]

#: Seconds a scheduler service has to start.
START_TIMEOUT_SECONDS = 60


class BenchError(TaskfleetError):
    """A system failed to run a workload."""


class Workload(NamedTuple):
    """The same task line ``tasks`` times, for ``workers`` workers; or, with
    ``durations``, one `sleep N` a duration (``line`` then names the workload)."""

    line: str
    tasks: int
    workers: int
    durations: tuple[int, ...] = ()

    @property
    def ideal_seconds(self) -> float | None:
        """Time with no overhead at all: known for sleeps that take time. For
        uneven sleeps, the least any schedule could take: the work spread evenly,
        or the longest task."""
        if self.durations:
            work = max(sum(self.durations) / self.workers, max(self.durations))
            return work / 1000.0
        planned = plan(self.line).sleep_ms
        if not planned:
            return None
        per_worker = -(-self.tasks // self.workers)
        return per_worker * planned / 1000.0

    def texts(self) -> list[str]:
        """Its task lines."""
        if self.durations:
            return [f"sleep {ms}" for ms in self.durations]
        return [self.line] * self.tasks

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.line.replace(' ', '-')}-{self.tasks}.txt"
        if not path.exists():
            path.write_text("".join(f"{text}\n" for text in self.texts()))
        return path


def taskfleet(directory: Path, *args: str) -> float:
    """Run a taskfleet command that writes results and a summary; its wall seconds."""
    return float(taskfleet_figures(directory, *args)["wall_seconds"])


def taskfleet_figures(directory: Path, *args: str) -> dict[str, Any]:
    """Run a taskfleet command that writes results and a summary; its summary's
    figures, and ``command_seconds`` measured around the whole process."""
    summary = directory / "summary.json"
    output = directory / "results.jsonl"
    began = time.perf_counter()
    done = subprocess.run(
        [*TASKFLEET, *args, "-o", str(output), "--summary", str(summary)],
        capture_output=True,
        text=True,
        check=False,
    )
    command_seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchError(f"taskfleet {args[0]} exited {done.returncode}: {done.stderr.strip()}")
    figures: dict[str, Any] = json.loads(summary.read_text())
    with output.open("rb") as records:
        written = sum(1 for _ in records)
    if written != figures["tasks"] or figures["succeeded"] != figures["tasks"]:
        raise BenchError(f"taskfleet {args[0]}: {written} results for {figures['tasks']} tasks")
    figures["command_seconds"] = command_seconds
    return figures


def taskfleet_run(workload: Workload, directory: Path) -> float:
    path = workload.write(directory)
    return taskfleet(directory, "run", str(path), "--workers", str(workload.workers))


def taskfleet_remote(workload: Workload, directory: Path, stack: str) -> float:
    """On the deployed stack's fleet, its size capped at the workload's workers."""
    path = workload.write(directory)
    with fleet_capped(stack, workload.workers):
        return taskfleet(directory, "run", str(path), "--remote", "--stack", stack)


@contextlib.contextmanager
def fleet_capped(stack: str, workers: int) -> Iterator[None]:
    """The stack's group limited to ``workers`` instances, restored afterwards."""
    group_name = StackResources.lookup(stack).group_name
    if group_name is None:
        yield
        return
    autoscaling = aws_client("autoscaling")
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])[
        "AutoScalingGroups"
    ]
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=group_name, MaxSize=workers)
    try:
        yield
    finally:
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=group_name, MaxSize=group["MaxSize"]
        )


class Service:
    """A `taskfleet scheduler` process with a given number of workers."""

    def __init__(self, workers: int, directory: Path) -> None:
        self.workers = workers
        self.log = directory / f"scheduler-{workers}.log"
        journal = directory / f"journal-{workers}-{time.monotonic_ns()}.sqlite3"
        command = [
            *TASKFLEET,
            "scheduler",
            "--port",
            "0",
            "--workers",
            str(workers),
            "--journal",
            str(journal),
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stderr=log, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (match := re.search(r"listening on (\S+)", self.log.read_text())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise BenchError(f"the scheduler did not start: {self.log.read_text()}")
            time.sleep(0.05)
        self.url = match.group(1)

    def submit(self, workload: Workload, directory: Path) -> float:
        path = workload.write(directory)
        return taskfleet(directory, "submit", str(path), "--scheduler", self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=60)


_runner: TaskRunner | None = None


def peer_task(text: str) -> None:
    """What a taskfleet worker does for a task line, minus the record: the peers' work."""
    global _runner  # one per pool process, as a taskfleet worker has
    if _runner is None:
        _runner = TaskRunner(timeout=None)
    _runner.run(text, plan(text))


def pool_seconds(workload: Workload, chunksize: int | None) -> float:
    """multiprocessing.Pool: imap_unordered with ``chunksize``, or map's automatic one (None)."""
    return pool_lines_seconds(workload.texts(), workload.workers, chunksize)


def pool_lines_seconds(lines: list[str], workers: int, chunksize: int | None = 1) -> float:
    """Task lines on a started multiprocessing.Pool, first in to last out."""
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(peer_task, ["sleep 0"] * workers, chunksize=1)  # started, warm
        began = time.perf_counter()
        if chunksize is None:
            pool.map(peer_task, lines)
        else:
            for _ in pool.imap_unordered(peer_task, lines, chunksize=chunksize):
                pass
        return time.perf_counter() - began


def executor_seconds(workload: Workload) -> float:
    """concurrent.futures.ProcessPoolExecutor.map, as people write it (chunksize 1)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workload.workers, mp_context=context) as executor:
        list(executor.map(peer_task, ["sleep 0"] * workload.workers))  # started, warm
        began = time.perf_counter()
        for _ in executor.map(peer_task, workload.texts()):
            pass
        return time.perf_counter() - began


def xargs_seconds(workload: Workload, directory: Path) -> float:
    """GNU xargs -P running each line through the shell, as people do with command lists."""
    command = ["xargs", "-P", str(workload.workers), "-d", "\\n", "-n", "1", "/bin/sh", "-c"]
    return command_seconds(command, workload.write(directory))


def parallel_seconds(workload: Workload, directory: Path) -> float:
    """GNU parallel -j running each line (through the shell, as it does)."""
    command = ["parallel", "--will-cite", "-j", str(workload.workers)]
    return command_seconds(command, workload.write(directory))


def command_seconds(command: list[str], lines: Path | None = None) -> float:
    """Whole-process seconds of a command (fed the lines of a file on stdin)."""
    with (lines or Path("/dev/null")).open("rb") as stdin:
        began = time.perf_counter()
        done = subprocess.run(command, stdin=stdin, capture_output=True, check=False)
        seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchError(f"{command[0]} exited {done.returncode}: {done.stderr.decode().strip()}")
    return seconds
