"""``taskfleet run``: a workload here and now, on local workers (or the fleet)."""

from typing import Annotated

import typer

from client.cli.app import (
    Files,
    Output,
    Stack,
    SummaryPath,
    Timeout,
    Workers,
    app,
    checked,
    default_workers,
    fail,
    finish,
    results_output,
)


@app.command()
def run(
    files: Files,
    workers: Workers = None,
    output: Output = None,
    timeout: Timeout = 3600.0,
    summary_path: SummaryPath = None,
    remote: Annotated[
        bool, typer.Option(help="Run on the deployed fleet of --stack instead of locally.")
    ] = False,
    stack: Stack = None,
) -> None:
    """Run a workload here and now, on local worker processes (or the fleet: --remote)."""
    from client import report

    counts = checked(files)
    if remote:
        if not stack:
            raise fail("--remote needs --stack NAME (or TASKFLEET_STACK)")
        from scheduler.errors import FleetError
        from scheduler.remote_dispatch import open_fleet
        from scheduler.remote_run import run_remote

        try:
            fleet = open_fleet(stack)
        except FleetError as error:
            raise fail(str(error)) from error
        with results_output(output) as stream, report.live_progress(counts.total) as bar:
            summary = run_remote(
                files,
                counts=counts,
                fleet=fleet,
                slots=fleet.slots(),
                output=stream,
                on_progress=lambda s: report.update(bar, s),
            )
    else:
        from scheduler.embedded import run_embedded

        with results_output(output) as stream, report.live_progress(counts.total) as bar:
            summary = run_embedded(
                files,
                counts=counts,
                workers=workers or default_workers(),
                timeout=timeout or None,
                output=stream,
                on_progress=lambda s: report.update(bar, s),
            )
    finish(summary, summary_path)
