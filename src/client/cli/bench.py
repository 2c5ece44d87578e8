"""``taskfleet bench``: throughput and efficiency beside the peers a user would reach for."""

from pathlib import Path
from typing import Annotated

import typer

from client.cli.app import Command, Stack, app, fail


@app.command(cls=Command)
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="A run of under a minute: small workloads, 1-2 workers.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Folder for the figures.",
            show_default="taskfleet-bench-DATE-TIME",
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            help="Runs per figure; the median is kept.",
            show_default="3, with --quick 1",
        ),
    ] = None,
    stack: Stack = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            metavar="EXPERIMENT",
            help="Run only these experiments: a kind (throughput, efficiency, uneven, commands),"
            " a task line ('sleep 10') or an uneven workload ('sorted'); repeatable.",
        ),
    ] = None,
) -> None:
    """Measure throughput and efficiency beside multiprocessing, concurrent.futures, xargs and
    GNU parallel."""
    import importlib.util
    import tempfile
    import time

    from rich.console import Console

    from client import report

    console = report.stderr_console()
    if importlib.util.find_spec("matplotlib") is None:
        raise fail(
            "taskfleet bench draws its plots with matplotlib: pip install 'taskfleet[bench]'"
        )
    from client.benchmark import output as output_files
    from client.benchmark.runners import BenchError
    from client.benchmark.suite import FULL, QUICK, Row, Suite

    experiments = tuple(
        e for e in (QUICK if quick else FULL) if not only or e.kind in only or e.line in only
    )
    if not experiments:
        raise fail(f"--only {', '.join(only or [])}: no such experiment")
    folder = output or Path(time.strftime("taskfleet-bench-%Y%m%d-%H%M%S"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise fail(f"{folder}: cannot write the figures: {error.strerror}") from error
    runs = repeat or (1 if quick else 3)
    settings: dict[str, object] = {
        "quick": quick,
        "repeat": runs,
        "stack": stack,
        "only": ", ".join(only or []) or None,
    }
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="taskfleet-bench-") as scratch,
        Suite(Path(scratch), runs, stack or None) as suite,
        report.live_progress(suite.measurements(experiments), label="runs") as bar,
    ):

        def advance(_label: str) -> None:
            if bar is not None:
                bar.advance(bar.task_ids[0])
                bar.refresh()

        try:
            rows.extend(suite.run(experiments, advance))
        except BenchError as error:
            raise fail(str(error), code=1) from error
    facts = output_files.machine()
    output_files.write_data(folder, rows, facts)
    output_files.write_plots(folder, rows)
    output_files.write_report(folder, rows, facts, settings)
    screen = Console()
    if not screen.is_terminal:
        screen = Console(width=120)  # a file or pipe: no need to cut the table to 80 columns
    screen.print(output_files.table(rows))
    console.print(f"figures, plots and report in {folder}/ ({', '.join(output_files.FILES)})")
