"""``taskfleet run``: a workload here and now, on local workers (or the fleet)."""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from client.cli.app import (
    Command,
    Files,
    Output,
    PricePerInstanceHour,
    Retries,
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


@app.command(cls=Command)
def run(
    context: typer.Context,
    files: Files,
    workers: Workers = None,
    output: Output = None,
    timeout: Timeout = 3600.0,
    summary_path: SummaryPath = None,
    remote: Annotated[
        bool,
        typer.Option("--remote", help="Run on the deployed fleet of --stack instead of locally."),
    ] = False,
    stack: Stack = None,
    price_per_instance_hour: PricePerInstanceHour = None,
    retries: Retries = 0,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="With --remote: return once the job is queued, printing its id; follow it"
            " with `taskfleet results JOB --stack NAME --follow` from anywhere.",
        ),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Run only the tasks without a 'succeeded' record in this earlier results file"
            " (same file, line and text); -o appends.",
        ),
    ] = None,
) -> None:
    """Run a workload here and now, on local worker processes (or the fleet: --remote)."""
    from client import report

    counts = checked(files)
    skip: frozenset[tuple[str, int, str]] = frozenset()
    if resume is not None:
        from scheduler.resume import plan_resumption
        from worker.errors import TaskfleetError

        try:
            resumption = plan_resumption(files, resume)
        except TaskfleetError as error:
            raise fail(str(error)) from error
        skip = resumption.done
        counts = counts._replace(total=counts.total - resumption.tasks)
        sys.stderr.write(
            f"resuming: {resumption.tasks} tasks done already, {counts.total} to run\n"
        )
        if counts.total == 0:
            raise typer.Exit(0)
    if remote:
        if not stack:
            raise fail("--remote needs --stack NAME (or TASKFLEET_STACK)")
        if given_on_command_line(context, "workers"):
            raise fail("--workers has no meaning with --remote: the fleet's size is the stack's")
        if detach and retries:
            raise fail("--retries needs an attached run: a detached job's tasks run once")
        if detach and (output or summary_path):
            raise fail("--detach writes no results: fetch them with `taskfleet results`")
        from scheduler.errors import FleetError
        from scheduler.fleet.aws import open_fleet
        from scheduler.fleet.run import run_remote, submit_remote
        from scheduler.pricing import fleet_prices

        try:
            fleet = open_fleet(stack)
            resources = fleet.resources
            prices = fleet_prices(resources.instance_types, resources.spot, price_per_instance_hour)
        except FleetError as error:
            raise fail(str(error)) from error
        jobs: list[str] = []  # the job's id, once it has one
        if detach:
            job_id = submit_remote(
                files, fleet=fleet, timeout=timeout or None, skip=skip, on_job=announce(stack, jobs)
            )
            print(job_id)
            raise typer.Exit(0)
        with (
            results_output(output, append=resume is not None) as stream,
            report.live_progress(counts.total) as bar,
        ):
            summary = run_remote(
                files,
                counts=counts,
                fleet=fleet,
                prices=prices,
                slots=fleet.slots(),
                output=stream,
                timeout=timeout or None,
                on_progress=lambda s: report.update(bar, s),
                on_job=announce(stack, jobs),
                retries=retries,
                skip=skip,
            )
        sys.stderr.write(
            "its instances' idle tail is added to its cost as they end:"
            f" `taskfleet status {jobs[0]} --stack {stack}`\n"
        )
    else:
        if detach:
            raise fail("--detach needs --remote: a local run ends with this command")
        from scheduler.local.run import run_embedded

        with (
            results_output(output, append=resume is not None) as stream,
            report.live_progress(counts.total) as bar,
        ):
            summary = run_embedded(
                files,
                counts=counts,
                workers=workers or default_workers(),
                timeout=timeout or None,
                output=stream,
                on_progress=lambda s: report.update(bar, s),
                retries=retries,
                skip=skip,
            )
    finish(summary, summary_path)


def given_on_command_line(context: typer.Context, name: str) -> bool:
    """Whether an option was given on the command line (not by default or environment)."""
    source = context.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def announce(stack: str, jobs: list[str]) -> "Callable[[str], None]":
    """What tells the person a fleet job's id as soon as it exists (and notes it in ``jobs``)."""

    def tell(job_id: str) -> None:
        jobs.append(job_id)
        sys.stderr.write(
            f"job {job_id} on stack {stack}: `taskfleet results {job_id} --stack {stack}`"
            " gets its records from any machine\n"
        )
        sys.stderr.flush()

    return tell
