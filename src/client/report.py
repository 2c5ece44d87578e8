"""What a person sees on stderr: a live progress bar, then a summary."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Counts(Protocol):
    """What the progress bar and summary read: scheduler.summary.Summary satisfies it."""

    total: int
    workers: int
    interrupted: bool

    @property
    def done(self) -> int: ...

    def as_dict(self) -> dict[str, object]: ...


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def live_progress(console: Console, total: int, label: str = "tasks") -> Iterator[Progress | None]:
    """A progress bar on a terminal; nothing (None) when stderr is a file or pipe."""
    if not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    bar.add_task(label, total=total)
    with bar:
        yield bar


def update(bar: Progress | None, counts: Counts) -> None:
    if bar is not None:
        bar.update(bar.task_ids[0], completed=counts.done)


def print_summary(console: Console, counts: Counts) -> None:
    """One block of figures after the last result."""
    figures = counts.as_dict()
    by_status = figures["by_status"]
    assert isinstance(by_status, dict)
    others = ", ".join(
        f"{name} {count}" for name, count in sorted(by_status.items()) if name != "succeeded"
    )
    head = "interrupted" if counts.interrupted else "done"
    console.print(
        f"{head}: {figures['finished']}/{figures['tasks']} tasks, "
        f"{figures['succeeded']} succeeded, {figures['failed']} failed"
        + (f" ({others})" if others else "")
    )
    console.print(
        f"wall {figures['wall_seconds']:.3f} s, {figures['throughput']:,.0f} tasks/s, "
        f"efficiency {figures['efficiency']:.3f} on {figures['workers']} workers"
    )
