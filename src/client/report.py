"""What a person sees on stderr: a live progress bar, then a summary.

The bar is drawn by rich, and only on a terminal: a run whose stderr is a
file or pipe does not even import it. It is redrawn by ``update``, from the
caller's own loop, not by a thread of rich's: `taskfleet run` then has no
thread when it forks its workers.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class Counts(Protocol):
    """What the progress bar and summary read: scheduler.summary.Summary satisfies it."""

    total: int
    workers: int
    interrupted: bool

    @property
    def done(self) -> int: ...

    def as_dict(self) -> dict[str, object]: ...


def stderr_console() -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@contextmanager
def live_progress(total: int, label: str = "tasks") -> Iterator["Progress | None"]:
    """A progress bar on a terminal; nothing (None) when stderr is a file or pipe."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
        auto_refresh=False,  # redrawn by update(): no thread of its own
    )
    bar.add_task(label, total=total)
    with bar:
        bar.refresh()
        yield bar


def update(bar: "Progress | None", counts: Counts) -> None:
    if bar is not None:
        bar.update(bar.task_ids[0], completed=counts.done)
        bar.refresh()


def print_summary(counts: Counts) -> None:
    """One block of figures on stderr after the last result."""
    figures = counts.as_dict()
    by_status = figures["by_status"]
    assert isinstance(by_status, dict)
    others = ", ".join(
        f"{name} {count}" for name, count in sorted(by_status.items()) if name != "succeeded"
    )
    head = "interrupted" if counts.interrupted else "done"
    sys.stderr.write(
        f"{head}: {figures['finished']}/{figures['tasks']} tasks, "
        f"{figures['succeeded']} succeeded, {figures['failed']} failed"
        + (f" ({others})" if others else "")
        + "\n"
        f"wall {figures['wall_seconds']:.3f} s from the first task"
        + (
            f" ({figures['command_seconds']:.2f} s since the command started)"
            if isinstance(figures.get("command_seconds"), float)
            else ""
        )
        + f", {figures['throughput']:,.0f} tasks/s, "
        f"efficiency {figures['efficiency']:.3f} on {figures['workers']} workers\n"
        + "".join(line + "\n" for line in usage_lines(figures))
    )
    sys.stderr.flush()


def usage_lines(figures: dict[str, object]) -> list[str]:
    """What a job used and cost, in words, from its figures (a summary's or the
    service's): the fleet's instance time and requests, or local CPU time. Made
    visible: the service's figures carry words of its own."""
    from client.terminal import visible

    return [visible(line) for line in _usage_lines(figures)]


def _usage_lines(figures: dict[str, object]) -> list[str]:
    usage = figures.get("usage")
    if not isinstance(usage, dict) or not any(usage.values()):
        cpu = figures.get("cpu_seconds")
        return [f"used {cpu:.2f} CPU-seconds on local workers"] if cpu else []
    dynamodb = usage.get("dynamodb_writes", 0) + usage.get("dynamodb_reads", 0)
    s3 = usage.get("s3_writes", 0) + usage.get("s3_reads", 0)
    files = f", S3 {s3:,}" if s3 else ""
    moved = f", {usage.get('s3_bytes', 0) / 1e6:.2f} MB of files" if s3 else ""
    lines = [
        f"used {usage.get('instance_seconds', 0):.1f} instance-seconds on the fleet,"
        f" {figures.get('aws_requests', 0):,} AWS requests"
        f" (SQS {usage.get('sqs_requests', 0):,}, DynamoDB {dynamodb:,} units{files}),"
        f" {usage.get('bytes_sent', 0) / 1e6:.2f} MB sent{moved}"
    ]
    cost, per_1000 = figures.get("cost_usd"), figures.get("cost_per_1000_tasks_usd")
    prices = figures.get("priced_at")
    basis = prices.get("instance_basis", "") if isinstance(prices, dict) else ""
    if isinstance(cost, float | int):
        each = f", ${per_1000:.6f} per 1,000 tasks" if isinstance(per_1000, float | int) else ""
        lines.append(f"cost ${cost:.6f}{each} ({basis})")
    elif basis:
        lines.append(f"cost unknown: {basis}")
    return lines
