"""Which workloads `taskfleet bench` runs on which systems, and the figures it keeps.

The experiments: throughput (`sleep 0`, tasks per second), efficiency (sleeps
of 10 ms, 1 s and 10 s; ideal time over measured), uneven sleeps (a sorted
workload, long tasks last, and a heavy-tailed one; makespan efficiency) and
shell commands (`true`, tasks per second), each for 1 to 16 workers, on
taskfleet's ways (embedded `run`, the scheduler service, the fleet of a
deployed stack) and on the peers people would otherwise use, measured in the
same run. Each figure is the median of repeated runs.
"""

import shutil
import statistics
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from client.benchmark import runners
from client.benchmark.runners import Service, Workload
from client.benchmark.workloads import heavy_tailed_durations, sorted_durations

WORKERS = (1, 2, 4, 8, 16)

#: A system the suite times: (name, is a peer, how to time a workload, or None
#: when it is not installed here).
System = tuple[str, bool, Callable[[Workload], float] | None]


class Experiment(NamedTuple):
    """One task line, at a fixed task count or a fixed count per worker, for worker
    counts; or (``durations``) the same uneven sleeps for every worker count."""

    kind: str  # "throughput", "efficiency", "uneven" or "commands"
    line: str  # the task line, or the name of the uneven workload
    tasks: int | None  # the same count for every worker count, or
    per_worker: int | None  # this many per worker
    workers: tuple[int, ...]
    durations: tuple[int, ...] = ()

    def workloads(self) -> list[Workload]:
        if self.durations:
            count = len(self.durations)
            return [Workload(self.line, count, w, self.durations) for w in self.workers]
        return [
            Workload(self.line, self.tasks or (self.per_worker or 1) * workers, workers)
            for workers in self.workers
        ]


def uneven(
    workers: tuple[int, ...], *, short: int, long: int, tailed: int
) -> tuple[Experiment, Experiment]:
    """A sorted workload (``short`` `sleep 0`, then ``long`` `sleep 250`) and a
    heavy-tailed one (``tailed`` sleeps of 10 ms and up, at most 2 s)."""
    return (
        Experiment("uneven", "sorted", None, None, workers, sorted_durations(short, long, 250)),
        Experiment(
            "uneven", "heavy-tailed", None, None, workers, heavy_tailed_durations(tailed, 10, 2000)
        ),
    )


FULL = (
    Experiment("throughput", "sleep 0", 10_000, None, WORKERS),
    Experiment("throughput", "sleep 0", 100_000, None, WORKERS),
    Experiment("efficiency", "sleep 10", None, 1_000, WORKERS),
    Experiment("efficiency", "sleep 1000", None, 100, WORKERS),
    Experiment("efficiency", "sleep 10000", None, 10, WORKERS),
    *uneven(WORKERS, short=2000, long=64, tailed=400),
    Experiment("commands", "true", 2_000, None, WORKERS),
)

QUICK = (
    Experiment("throughput", "sleep 0", 2_000, None, (1, 2)),
    Experiment("efficiency", "sleep 10", None, 20, (1, 2)),
    *uneven((2,), short=200, long=8, tailed=40),
    Experiment("commands", "true", 100, None, (2,)),
)


@dataclass
class Row:
    """The figures of one workload on one system."""

    kind: str
    line: str
    tasks: int
    workers: int
    system: str
    peer: bool
    seconds: float  # median of the runs
    runs: list[float]
    tasks_per_second: float
    efficiency: float | None  # ideal / measured, for sleeps
    vs_best_peer: float | None = None  # this row's figure over the best peer's
    absent: bool = False  # a peer not installed here: no figure

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def figure(self) -> float:
        """What the row is judged by: efficiency where it is known, else throughput."""
        return self.efficiency if self.efficiency is not None else self.tasks_per_second


class Suite:
    """Runs experiments on every system that applies, repeating each run."""

    def __init__(self, directory: Path, repeat: int, stack: str | None) -> None:
        self.directory = directory
        self.repeat = repeat
        self.stack = stack
        self._services: dict[int, Service] = {}

    def __enter__(self) -> "Suite":
        return self

    def __exit__(self, *_: object) -> None:
        for service in self._services.values():
            service.stop()

    def systems(self, experiment: Experiment) -> list[System]:
        """(name, is a peer, how to time a workload, or None if it is not installed)
        for every system that applies."""
        found: list[System] = [
            ("taskfleet run", False, lambda w: runners.taskfleet_run(w, self.directory)),
            (
                "taskfleet service",
                False,
                lambda w: self.service(w.workers).submit(w, self.directory),
            ),
        ]
        if self.stack is not None:
            stack = self.stack
            found.append(
                (
                    "taskfleet remote",
                    False,
                    lambda w: runners.taskfleet_remote(w, self.directory, stack),
                )
            )
        found += [
            ("Pool chunksize=1", True, lambda w: runners.pool_seconds(w, 1)),
            ("Pool map (auto chunks)", True, lambda w: runners.pool_seconds(w, None)),
            ("ProcessPoolExecutor", True, runners.executor_seconds),
        ]
        if experiment.kind == "commands":
            found.append(("xargs -P", True, lambda w: runners.xargs_seconds(w, self.directory)))
            parallel = None
            if shutil.which("parallel") is not None:
                parallel = lambda w: runners.parallel_seconds(w, self.directory)  # noqa: E731
            found.append(("GNU parallel -j", True, parallel))
        return found

    def service(self, workers: int) -> Service:
        if workers not in self._services:
            self._services[workers] = Service(workers, self.directory)
        return self._services[workers]

    def measurements(self, experiments: tuple[Experiment, ...]) -> int:
        """How many timed runs ``run`` makes, for a progress bar."""
        return (
            sum(
                len(e.workloads()) * sum(timed is not None for _, _, timed in self.systems(e))
                for e in experiments
            )
            * self.repeat
        )

    def run(
        self, experiments: tuple[Experiment, ...], advance: Callable[[str], None]
    ) -> Iterator[Row]:
        """Time every workload on every system; ``advance(label)`` after each timed run."""
        for experiment in experiments:
            for workload in experiment.workloads():
                rows = []
                for name, peer, timed in self.systems(experiment):
                    if timed is None:
                        rows.append(absent_row(experiment.kind, workload, name))
                        continue
                    runs = []
                    for _ in range(self.repeat):
                        runs.append(timed(workload))
                        advance(
                            f"{workload.line} x{workload.tasks:,}, {workload.workers} w, {name}"
                        )
                    rows.append(row(experiment.kind, workload, name, peer, runs))
                yield from compare_to_peers(rows)


def row(kind: str, workload: Workload, system: str, peer: bool, runs: list[float]) -> Row:
    seconds = statistics.median(runs)
    ideal = workload.ideal_seconds
    return Row(
        kind=kind,
        line=workload.line,
        tasks=workload.tasks,
        workers=workload.workers,
        system=system,
        peer=peer,
        seconds=seconds,
        runs=runs,
        tasks_per_second=workload.tasks / seconds if seconds > 0 else float("inf"),
        efficiency=None if ideal is None or seconds <= 0 else ideal / seconds,
    )


def absent_row(kind: str, workload: Workload, system: str) -> Row:
    """The row of a peer that is not installed: shown as such, never dropped."""
    return Row(kind, workload.line, workload.tasks, workload.workers, system, True, 0.0, [],
               0.0, None, absent=True)  # fmt: skip


def compare_to_peers(rows: list[Row]) -> list[Row]:
    """Set each row's ratio to the best peer on the same workload."""
    peers = [r.figure for r in rows if r.peer and not r.absent]
    if peers:
        best = max(peers)
        for each in (r for r in rows if not r.absent):
            each.vs_best_peer = each.figure / best if best > 0 else None
    return rows
