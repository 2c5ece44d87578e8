"""The ``taskfleet`` command: thin typer commands that hand off to the library."""

import os
import sys
from typing import Annotated, BinaryIO

import typer

from client import report
from scheduler.embedded import run_embedded
from worker.errors import TaskfleetError
from worker.workload import check_workload

app = typer.Typer(
    name="taskfleet",
    help="Run a workload (one task a line) on local worker processes or a fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Exit code for bad input or usage, as typer/click use for usage errors.
EXIT_USAGE = 2

Files = Annotated[
    list[str],
    typer.Argument(help="Workload files: one task a line ('sleep N' ms, or a shell command)."),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        max=1024,
        help="Local worker processes [default: one per CPU core].",
        envvar="TASKFLEET_WORKERS",
    ),
]
Output = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Write JSON Lines results here instead of stdout."),
]
Timeout = Annotated[
    float,
    typer.Option(min=0, help="Time limit per shell command in seconds (0: none)."),
]


@app.callback()
def taskfleet() -> None:
    """Run a workload (one task a line) on local worker processes or a fleet."""


def default_workers() -> int:
    return os.cpu_count() or 1


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    report.stderr_console().print(f"taskfleet: {message}", markup=False, highlight=False)
    return typer.Exit(code)


def open_output(path: str | None) -> BinaryIO:
    """The results stream: a new file at ``path``, or stdout."""
    if path is None:
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as error:
        raise fail(f"{path}: cannot write results: {error.strerror}") from error


@app.command()
def run(
    files: Files,
    workers: Workers = None,
    output: Output = None,
    timeout: Timeout = 3600.0,
) -> None:
    """Run a workload on local worker processes, here and now, no server."""
    console = report.stderr_console()
    try:
        counts = check_workload(files)
    except TaskfleetError as error:
        raise fail(str(error)) from error
    stream = open_output(output)
    try:
        with report.live_progress(console, counts.total) as bar:
            summary = run_embedded(
                files,
                counts=counts,
                workers=workers or default_workers(),
                timeout=timeout or None,
                output=stream,
                on_progress=lambda s: report.update(bar, s),
            )
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()
    report.print_summary(console, summary)
    raise typer.Exit(summary.exit_code())


def main() -> None:
    app()
