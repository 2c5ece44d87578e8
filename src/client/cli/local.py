"""``taskfleet run``: a workload here and now, on local workers (or the fleet)."""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
from client.cli.job_files import (
    DEFAULT_UPLOAD_MAX_BYTES,
    DEFAULT_UPLOAD_MAX_FILES,
    KeepFiles,
    OutputDir,
    UploadMaxBytes,
    UploadMaxFiles,
    Uploads,
    checked_output_dir,
    checked_uploads,
)

if TYPE_CHECKING:
    from scheduler.resume import Done
    from scheduler.summary import Summary
    from worker.inputs import InputFile
    from worker.workload import WorkloadCounts


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
    upload: Uploads = None,
    upload_max_bytes: UploadMaxBytes = DEFAULT_UPLOAD_MAX_BYTES,
    upload_max_files: UploadMaxFiles = DEFAULT_UPLOAD_MAX_FILES,
    output_dir: OutputDir = None,
    keep_files: KeepFiles = False,
) -> None:
    """Run a workload here and now, on local worker processes (or the fleet: --remote)."""
    counts, skip = workload_to_run(files, resume)
    append = resume is not None
    if remote and detach and output_dir:
        raise fail(
            "--output-dir needs an attached run: give --keep-files, then fetch the files"
            " with `taskfleet results JOB --stack NAME --files DIR`"
        )
    if keep_files and not remote:
        raise fail("--keep-files needs --remote: a local run's files go to --output-dir")
    uploads = checked_uploads(upload or [], upload_max_bytes, upload_max_files)
    if remote:
        checked_for_fleet(uploads)
    checked_output_dir(output_dir, files, resume is not None)
    if remote:
        stack = fleet_usage(context, stack, detach=detach, retries=retries, output=output,
                            summary_path=summary_path, price=price_per_instance_hour)  # fmt: skip
        if detach:
            print(submit_to_fleet(files, stack, timeout, skip, uploads, keep_files))
            raise typer.Exit(0)
        summary = run_on_fleet(
            files, counts, skip, stack, output, append, timeout, retries,
            price_per_instance_hour, uploads, output_dir, keep_files,
        )  # fmt: skip
    else:
        if detach:
            raise fail("--detach needs --remote: a local run ends with this command")
        summary = run_here(
            files, counts, skip, workers, output, append, timeout, retries, uploads, output_dir
        )
    finish(summary, summary_path)


def workload_to_run(files: list[str], resume: Path | None) -> tuple["WorkloadCounts", "Done"]:
    """The workload's counts, checked (exit 2 on a bad line), less what an earlier
    results file shows done (``--resume``; exit 0 if that is everything)."""
    counts = checked(files)
    if resume is None:
        return counts, frozenset()
    from scheduler.resume import plan_resumption
    from worker.errors import TaskfleetError

    try:
        resumption = plan_resumption(files, resume)
    except TaskfleetError as error:
        raise fail(str(error)) from error
    counts = counts._replace(total=counts.total - resumption.tasks)
    sys.stderr.write(f"resuming: {resumption.tasks} tasks done already, {counts.total} to run\n")
    if counts.total == 0:
        raise typer.Exit(0)
    return counts, resumption.done


def fleet_usage(
    context: typer.Context,
    stack: str | None,
    *,
    detach: bool,
    retries: int,
    output: str | None,
    summary_path: Path | None,
    price: float | None,
) -> str:
    """The stack to run on; exit 2 for an option that has no meaning on the fleet."""
    if not stack:
        raise fail("--remote needs --stack NAME (or TASKFLEET_STACK)")
    if given_on_command_line(context, "workers"):
        raise fail("--workers has no meaning with --remote: the fleet's size is the stack's")
    if detach and retries:
        raise fail("--retries needs an attached run: a detached job's tasks run once")
    if detach and (output or summary_path):
        raise fail("--detach writes no results: fetch them with `taskfleet results`")
    if detach and price is not None:
        raise fail("--price-per-instance-hour needs an attached run: `taskfleet status` prices"
                   " a detached job at the stack's instance types")  # fmt: skip
    return stack


def checked_for_fleet(uploads: "list[InputFile]") -> None:
    """Exit 2 if an upload cannot go to the fleet (a file too large for one request)."""
    from scheduler.fleet.job_inputs import MAX_OBJECT_BYTES, too_large

    if (file := too_large(uploads)) is not None:
        raise fail(
            f"--upload {file.source}: over {MAX_OBJECT_BYTES} bytes, more than one"
            " request sends to the fleet (multipart uploads are not built)"
        )


def submit_to_fleet(
    files: list[str],
    stack: str,
    timeout: float,
    skip: "Done",
    uploads: "list[InputFile]",
    keep_files: bool,
) -> str:
    """Queue the workload on the fleet as a job of the stack's; its id."""
    from client.cli.fleet_jobs import open_stack
    from scheduler.errors import FleetError
    from scheduler.fleet.run import submit_remote

    fleet = open_stack(stack)
    try:
        return submit_remote(
            files,
            fleet=fleet,
            timeout=timeout or None,
            skip=skip,
            on_job=announce(stack, []),
            uploads=uploads,
            keep_files=keep_files,
        )
    except FleetError as error:
        raise fail(str(error)) from error


def run_on_fleet(
    files: list[str],
    counts: "WorkloadCounts",
    skip: "Done",
    stack: str,
    output: str | None,
    append: bool,
    timeout: float,
    retries: int,
    price_per_instance_hour: float | None,
    uploads: "list[InputFile]",
    output_dir: Path | None,
    keep_files: bool,
) -> "Summary":
    """Run the workload on the stack's fleet, attached: its results as they come."""
    from client import report
    from client.cli.fleet_jobs import open_stack
    from scheduler.errors import FleetError
    from scheduler.fleet.run import run_remote
    from scheduler.pricing import fleet_prices

    fleet = open_stack(stack)
    resources = fleet.resources
    try:
        prices = fleet_prices(resources.instance_types, resources.spot, price_per_instance_hour)
    except FleetError as error:
        raise fail(str(error)) from error
    jobs: list[str] = []  # the job's id, once it has one
    with results_output(output, append=append) as stream, report.live_progress(counts.total) as bar:
        try:
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
                uploads=uploads,
                output_dir=output_dir,
                keep_files=keep_files,
            )
        except FleetError as error:
            if jobs:  # failed on the way: not a refusal before anything ran
                raise
            raise fail(str(error)) from error
    sys.stderr.write(
        "its instances' idle tail is added to its cost as they end:"
        f" `taskfleet status {jobs[0]} --stack {stack}`\n"
    )
    return summary


def run_here(
    files: list[str],
    counts: "WorkloadCounts",
    skip: "Done",
    workers: int | None,
    output: str | None,
    append: bool,
    timeout: float,
    retries: int,
    uploads: "list[InputFile]",
    output_dir: Path | None,
) -> "Summary":
    """Run the workload on local worker processes."""
    from client import report
    from scheduler.local.run import run_embedded

    with results_output(output, append=append) as stream, report.live_progress(counts.total) as bar:
        return run_embedded(
            files,
            counts=counts,
            workers=workers or default_workers(),
            timeout=timeout or None,
            output=stream,
            on_progress=lambda s: report.update(bar, s),
            retries=retries,
            skip=skip,
            uploads=uploads,
            output_dir=output_dir,
        )


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
