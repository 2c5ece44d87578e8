"""The typer app, the options commands share, and how a command fails or finishes.

Only what every command needs is imported here; a command imports the rest
when it runs.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from client.terminal import show_logs_visibly, visible, visible_stream
from worker.process_clock import process_age

if TYPE_CHECKING:
    from scheduler.summary import Summary
    from worker.workload import WorkloadCounts


class Command(typer.core.TyperCommand):
    """A command whose usage line names its arguments as written (FILE..., JOB),
    not in the braces typer puts around required ones."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # a click Context
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]

    def make_context(self, *args: Any, **kwargs: Any) -> Any:  # a click Context
        """Usage errors quote what was typed (an option's name, say): made visible.
        (Known by their message: typer may bring a click of its own.)"""
        try:
            return super().make_context(*args, **kwargs)
        except Exception as error:
            if isinstance(getattr(error, "message", None), str):
                error.message = visible(error.message)  # type: ignore[attr-defined]
            raise


app = typer.Typer(
    name="taskfleet",
    help="Run a workload (one task a line) on local worker processes or a fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: bracketed text stays as written, and no type tags beside each flag.
    rich_markup_mode=None,
)

#: Exit code for bad input or usage, as click uses for usage errors.
EXIT_USAGE = 2
#: Exit code after Ctrl-C, as shells report a SIGINT.
EXIT_INTERRUPTED = 130

DEFAULT_SCHEDULER = "http://127.0.0.1:8750"

Files = Annotated[
    list[str],
    typer.Argument(
        metavar="FILE...",
        help="Workload files: one task a line ('sleep N' ms, or a shell command).",
        show_default=False,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-w",
        metavar="N",
        min=1,
        max=1024,
        help="Local worker processes.",
        show_default="one per CPU core",
        envvar="TASKFLEET_WORKERS",
    ),
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output", "-o", metavar="PATH", help="Write JSON Lines results here instead of stdout."
    ),
]
Timeout = Annotated[
    float,
    typer.Option(metavar="SECONDS", min=0, help="Time limit per task in seconds (0: none)."),
]
Stack = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="The deployed stack's name.", envvar="TASKFLEET_STACK"),
]
PricePerInstanceHour = Annotated[
    float | None,
    typer.Option(
        "--price-per-instance-hour",
        metavar="USD",
        min=0,
        max=1000,
        help="Price the fleet's instance time at this many US dollars an hour, instead of"
        " the price table shipped with taskfleet (docs/cost.md).",
    ),
]
#: Most retries of one task: scheduler.retries.MAX_RETRIES, written out so that
#: the CLI starts without importing the scheduler.
MAX_RETRIES = 100
Retries = Annotated[
    int,
    typer.Option(
        metavar="N",
        min=0,
        max=MAX_RETRIES,
        help="Run a task that failed, timed out or was lost again, up to N more times.",
    ),
]
SummaryPath = Annotated[
    Path | None,
    typer.Option("--summary", metavar="PATH", help="Also write the summary figures here, as JSON."),
]


def print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"taskfleet {version('taskfleet')}")
        raise typer.Exit(0)


@app.callback()
def taskfleet(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Run a workload (one task a line) on local worker processes or a fleet."""


def default_workers() -> int:
    return os.cpu_count() or 1


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``taskfleet: MESSAGE`` on stderr, made visible (a message may quote a
    file name or a scheduler's words); raise the returned Exit."""
    sys.stderr.write(f"taskfleet: {visible(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def checked(files: list[str]) -> "WorkloadCounts":
    """The task counts of workload files, or exit 2 naming the first bad line."""
    from worker.errors import TaskfleetError
    from worker.workload import check_workload

    try:
        return check_workload(files)
    except TaskfleetError as error:
        raise fail(str(error)) from error


def private_file(path: str, flags: int) -> int:
    """Open ``path``, creating it readable and writable by its owner alone (0600):
    results hold the tasks' output, which the journal keeps 0600 too."""
    return os.open(path, flags, 0o600)


@contextmanager
def results_output(path: str | None, *, append: bool = False) -> Iterator[BinaryIO]:
    """The results stream: a file at ``path``, created 0600 (or its end, with
    ``append``); or stdout, made visible, since it may be a terminal."""
    if path is None:
        with visible_stream(sys.stdout.buffer) as stdout:
            yield stdout
        return
    try:
        stream = open(path, "ab" if append else "wb", opener=private_file)  # noqa: SIM115
    except OSError as error:
        raise fail(f"{path}: cannot write results: {error.strerror}") from error
    with stream:
        yield stream


def finish(summary: "Summary", path: Path | None) -> None:
    """Print the summary, write it as JSON if asked, and exit with its code."""
    import json

    from client import report

    summary.command_seconds = process_age()
    report.print_summary(summary)
    if path is not None:
        figures = summary.as_dict()
        # This process's own peak memory: the scheduler's, for `run`.
        figures["peak_rss_kib"] = peak_rss_kib()
        path.write_text(json.dumps(figures, indent=2) + "\n")
    raise typer.Exit(summary.exit_code())


def peak_rss_kib() -> int:
    """This process's peak resident memory, in KiB: its memory's high-water mark
    (Linux). Not getrusage's ru_maxrss, which Linux carries across exec: a run
    started by a big process reported that process's peak."""
    kib = high_water_kib("self")
    if kib is not None:
        return kib
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def high_water_kib(pid: int | str) -> int | None:
    """A process's peak resident memory in KiB (VmHWM in /proc), None without /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main() -> None:
    show_logs_visibly()
    app()
