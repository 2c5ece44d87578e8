"""Counting results as they arrive: the figures of the end-of-job summary."""

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.result import Status
from worker.usage import Usage

#: The cost figures of work that has none (local) or none known yet.
NO_COSTS = {"cost_usd": None, "cost_per_1000_tasks_usd": None, "priced_at": None}


@dataclass
class Summary:
    """Tasks expected and finished, by status, and the time they took."""

    total: int
    workers: int
    by_status: Counter[Status] = field(default_factory=Counter)
    task_seconds: float = 0.0
    started: float | None = None  # perf_counter when the first task was dispatched
    finished: float | None = None  # perf_counter when the last result arrived, or the run ended
    interrupted: bool = False
    # Seconds from the command's start to its end (start-up and the check pass
    # included), when the command measures it: what the person waited.
    command_seconds: float | None = None
    cpu_seconds: float = 0.0  # of local workers and their commands
    usage: Usage = field(default_factory=Usage)  # on the fleet
    # What the usage cost (scheduler.pricing.cost_fields), once it is known.
    costs: dict[str, object] = field(default_factory=lambda: dict(NO_COSTS))

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def add(self, by_status: Mapping[Status, int], task_seconds: float) -> None:
        """Count finished tasks, by status, and the seconds they ran in all."""
        self.by_status.update(by_status)
        self.task_seconds += task_seconds
        self.finished = time.perf_counter()

    def end(self) -> None:
        """The run ended now (an interrupt, say): the wall time runs to here."""
        if self.started is not None:
            self.finished = time.perf_counter()

    @property
    def done(self) -> int:
        return sum(self.by_status.values())

    @property
    def succeeded(self) -> int:
        return self.by_status[Status.SUCCEEDED]

    @property
    def failed(self) -> int:
        return self.done - self.succeeded

    @property
    def wall_seconds(self) -> float:
        if self.started is None:
            return 0.0
        end = self.finished if self.finished is not None else time.perf_counter()
        return max(end - self.started, 0.0)

    @property
    def throughput(self) -> float:
        """Finished tasks per second of wall time."""
        wall = self.wall_seconds
        return self.done / wall if wall > 0 else 0.0

    @property
    def efficiency(self) -> float:
        """Task time over worker time available: 1.0 means no worker ever waited."""
        wall = self.wall_seconds
        return self.task_seconds / (wall * self.workers) if wall > 0 else 0.0

    def exit_code(self) -> int:
        """0 when every task succeeded, 130 when interrupted, else 1."""
        if self.interrupted:
            return 130
        return 0 if self.succeeded == self.total else 1

    def as_dict(self) -> dict[str, object]:
        return {
            "tasks": self.total,
            "finished": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "by_status": {status.value: count for status, count in self.by_status.items()},
            "workers": self.workers,
            "wall_seconds": round(self.wall_seconds, 6),
            "command_seconds": (
                None if self.command_seconds is None else round(self.command_seconds, 3)
            ),
            "throughput": round(self.throughput, 3),
            "efficiency": round(self.efficiency, 4),
            "interrupted": self.interrupted,
            "cpu_seconds": round(self.cpu_seconds, 6),
            **self.usage.figures(),
            **self.costs,
        }
