"""Fleet jobs read from the stack: ``status/results/cancel JOB --stack``, ``wait``, ``jobs``.

A job submitted to the fleet (``run --remote``, with or without ``--detach``,
or a scheduler service's fleet job) lives in the stack for its retention:
these commands reach it from any machine with the stack's credentials.
"""

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from client.cli.app import Command, app, fail, results_output
from client.cli.job_files import checked_output_dir

if TYPE_CHECKING:
    from scheduler.fleet.aws import RemoteFleet
    from scheduler.fleet.follow import JobView
    from scheduler.fleet.job_outputs import OutputsBack

#: Exit codes of `wait`, as `run`'s: all succeeded, or not.
EXIT_SUCCEEDED, EXIT_NOT_ALL = 0, 1

StackName = Annotated[
    str, typer.Option("--stack", metavar="NAME", help="The deployed stack the jobs live in.")
]


def open_stack(stack: str) -> "RemoteFleet":
    """The deployed stack's fleet, or exit 2 saying why not."""
    from scheduler.errors import FleetError
    from scheduler.fleet.aws import open_fleet

    try:
        return open_fleet(stack)
    except FleetError as error:
        raise fail(str(error)) from error


@contextmanager
def stack_errors(stack: str) -> Iterator[None]:
    """A failure reading the stack as a one-line error: exit 2 for what was asked
    (no such job), 1 for AWS (unreachable, refused)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from worker.errors import TaskfleetError

    try:
        yield
    except TaskfleetError as error:
        raise fail(str(error)) from error
    except (BotoCoreError, ClientError) as error:
        raise fail(f"stack {stack}: {error}", 1) from error


def job_view(stack: str, job_id: str) -> "JobView":
    """A job of the stack, read now; exit 2 if the stack has no such job."""
    from scheduler.fleet.follow import JobView

    fleet = open_stack(stack)
    with stack_errors(stack):
        view = JobView(fleet, job_id)
        view.refresh()
    return view


def job_age(submitted_at: float) -> str:
    """How long ago a job was submitted, in the largest whole unit."""
    seconds = max(0, int(time.time() - submitted_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_view(view: "JobView") -> None:
    from client.terminal import visible
    from scheduler.pricing import cost_fields, fleet_prices

    job = view.job
    counts = ", ".join(f"{n} {status}" for status, n in sorted(view.counts().items())) or "none"
    finished = sum(view.counts().values())
    # What the stack holds, any user of it may have written: shown as text.
    print(visible(f"job {job.id}: {view.state}, {finished}/{job.total} tasks finished ({counts})"))
    print(visible(f"submitted by {job.submitted_by}, {job_age(job.submitted_at)} ago"))
    usage = view.usage()
    resources = view.fleet.resources
    prices = fleet_prices(resources.instance_types, resources.spot, None)
    cost = cost_fields(usage, job.total, prices)["cost_usd"]
    priced = "" if cost is None else f", ${cost:.6f}"
    print(
        f"used {usage.instance_seconds:.1f} instance-seconds"
        f" ({job.tail.instance_seconds:.1f} of them"
        f" its instances' idle tail) and {usage.aws_requests} AWS requests so far{priced}"
    )


def status_on_stack(stack: str, job_id: str) -> None:
    print_view(job_view(stack, job_id))


def results_on_stack(
    stack: str, job_id: str, output: str | None, follow: bool, files_dir: Path | None = None
) -> None:
    from scheduler.fleet.follow import follow_records

    view = job_view(stack, job_id)  # no such job: exit 2 before a file is made
    checked_output_dir(files_dir, view.job.files, resume=None, option="--files")
    pages = follow_records(view, follow=follow)
    with stack_errors(stack), results_output(output) as stream:
        if files_dir is None:
            write_records(pages, stream)
            return
        outputs = files_back(view.fleet, job_id, files_dir)
        try:
            write_records(outputs_of(pages, outputs), stream)
        finally:
            outputs.close()


def files_back(fleet: "RemoteFleet", job_id: str, files_dir: Path) -> "OutputsBack":
    """What brings a job's tasks' files back under ``files_dir``; exit 2 for a
    stack without a job-files bucket."""
    from scheduler.fleet.job_outputs import OutputsBack

    bucket = fleet.resources.job_files_bucket
    if not bucket:
        raise fail("--files: the stack has no job-files bucket (JobFilesBucket)")
    return OutputsBack(fleet.s3, fleet.meter, bucket, job_id, files_dir)


def outputs_of(pages: Iterable[list[bytes]], outputs: "OutputsBack") -> Iterator[list[bytes]]:
    """The pages of records, each record's files brought back and named in it."""
    from worker.result import decode, encode_lines

    for page in pages:
        yield [encode_lines(outputs.records([decode(record) for record in page]))]


def write_records(pages: Iterable[list[bytes]], stream: BinaryIO) -> None:
    for page in pages:
        stream.write(b"".join(page))
        stream.flush()  # before waiting for more: a person may be watching the file


def cancel_on_stack(stack: str, job_id: str) -> None:
    view = job_view(stack, job_id)
    if view.job.ended or not view.store.cancel(job_id):
        raise fail(f"job {job_id} has ended already ({view.state})", 1)
    sys.stderr.write(
        f"job {job_id} cancelled: workers stop its tasks within seconds; its records say"
        " 'cancelled'\n"
    )


@app.command(cls=Command)
def wait(
    job: Annotated[str, typer.Argument(metavar="JOB", help="A fleet job's id.")],
    stack: StackName,
) -> None:
    """Wait for a fleet job to end; exit 0 if every task succeeded, else 1."""
    from scheduler.fleet.follow import FOLLOW_SECONDS

    view = job_view(stack, job)
    with stack_errors(stack):
        while not view.over():
            time.sleep(FOLLOW_SECONDS)
            view.refresh()
    print_view(view)
    counts = view.counts()
    all_succeeded = counts.get("succeeded", 0) == view.job.total
    raise typer.Exit(EXIT_SUCCEEDED if all_succeeded else EXIT_NOT_ALL)


@app.command(cls=Command)
def jobs(stack: StackName) -> None:
    """List the recent jobs on a deployed stack: id, who submitted it, state, age."""
    from client.terminal import visible
    from scheduler.fleet.follow import state_of

    store = open_stack(stack).jobs
    if store is None:
        raise fail(f"stack {stack} keeps no jobs (deployed by an earlier taskfleet)")
    with stack_errors(stack):
        recent = store.recent()
    print(f"{'JOB':<10} {'STATE':<10} {'STORED':>13} {'AGE':>8}  SUBMITTED BY")
    for job in recent:
        stored = f"{min(job.stored, job.total)}/{job.total}"
        age = job_age(job.submitted_at)
        line = f"{job.id:<10} {state_of(job):<10} {stored:>13} {age:>8}  {job.submitted_by}"
        print(visible(line))
