"""Fleet jobs read from the stack: ``status/results/cancel JOB --stack``, ``wait``, ``jobs``.

A job submitted to the fleet (``run --remote``, with or without ``--detach``,
or a scheduler service's fleet job) lives in the stack for its retention:
these commands reach it from any machine with the stack's credentials.
"""

import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from client.cli.app import Command, app, fail, results_output

if TYPE_CHECKING:
    from scheduler.fleet.aws import RemoteFleet
    from scheduler.fleet.follow import JobView

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


def job_view(stack: str, job_id: str) -> "JobView":
    """A job of the stack, read now; exit 2 if the stack has no such job."""
    from botocore.exceptions import BotoCoreError, ClientError

    from scheduler.fleet.follow import JobView
    from worker.errors import TaskfleetError

    fleet = open_stack(stack)
    try:
        view = JobView(fleet, job_id)
        view.refresh()
    except TaskfleetError as error:
        raise fail(str(error)) from error
    except (BotoCoreError, ClientError) as error:
        raise fail(f"stack {stack}: {error}", 1) from error
    return view


def job_age(submitted_at: float) -> str:
    """How long ago a job was submitted, in the largest whole unit."""
    seconds = max(0, int(time.time() - submitted_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_view(view: "JobView") -> None:
    from scheduler.pricing import cost_fields, fleet_prices

    job = view.job
    counts = ", ".join(f"{n} {status}" for status, n in sorted(view.counts().items())) or "none"
    finished = sum(view.counts().values())
    print(f"job {job.id}: {view.state}, {finished}/{job.total} tasks finished ({counts})")
    print(f"submitted by {job.submitted_by}, {job_age(job.submitted_at)} ago")
    usage = view.usage()
    resources = view.fleet.resources
    prices = fleet_prices(resources.instance_types, resources.spot, None)
    cost = cost_fields(usage, job.total, prices)["cost_usd"]
    priced = "" if cost is None else f", ${cost:.6f}"
    print(
        f"used {usage.instance_seconds:.1f} instance-seconds ({job.tail_seconds:.1f} of them"
        f" its instances' idle tail) and {usage.aws_requests} AWS requests so far{priced}"
    )


def status_on_stack(stack: str, job_id: str) -> None:
    print_view(job_view(stack, job_id))


def results_on_stack(stack: str, job_id: str, output: str | None, follow: bool) -> None:
    from scheduler.fleet.follow import follow_records

    job_view(stack, job_id)  # exits 2 if there is no such job
    fleet = open_stack(stack)
    with results_output(output) as stream:
        write_records(follow_records(fleet, job_id, follow=follow), stream)


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
    store = open_stack(stack).jobs
    if store is None:
        raise fail(f"stack {stack} keeps no jobs (deployed by an earlier taskfleet)")
    print(f"{'JOB':<10} {'STATE':<10} {'STORED':>13} {'AGE':>8}  SUBMITTED BY")
    for job in store.recent():
        state = "done" if job.state == "running" and job.ended else job.state
        stored = f"{min(job.stored, job.total)}/{job.total}"
        age = job_age(job.submitted_at)
        print(f"{job.id:<10} {state:<10} {stored:>13} {age:>8}  {job.submitted_by}")
