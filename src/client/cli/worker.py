"""``taskfleet worker``: what an instance of the fleet runs."""

from pathlib import Path
from typing import Annotated

import typer

from client.cli.app import Command, app, fail
from worker.contracts import LONG_POLL_SECONDS, Default, Setting


@app.command(cls=Command)
def worker(
    request_queue_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="The request queue.", envvar=Setting.REQUEST_QUEUE_URL),
    ] = None,
    response_queue_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="The response queue.", envvar=Setting.RESPONSE_QUEUE_URL),
    ] = None,
    claim_table: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="The claim table.", envvar=Setting.CLAIM_TABLE),
    ] = None,
    job_table: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="The job table, read for cancellations (none: jobs are not watched).",
            envvar=Setting.JOB_TABLE,
        ),
    ] = None,
    job_queue_prefix: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="A job's results go to the queue named this and its id (none: all to"
            " the response queue).",
            envvar=Setting.JOB_QUEUE_PREFIX,
        ),
    ] = None,
    region: Annotated[
        str | None, typer.Option(metavar="NAME", help="AWS region.", envvar=Setting.REGION)
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="This instance.",
            show_default="from instance metadata (IMDSv2)",
            envvar=Setting.INSTANCE_ID,
        ),
    ] = None,
    group_name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Its Auto Scaling group (none: no group).",
            envvar=Setting.GROUP_NAME,
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="Seconds idle before ending.",
            show_default=str(Default.IDLE_TIMEOUT_SECONDS),
            envvar=Setting.IDLE_TIMEOUT,
        ),
    ] = None,
    visibility_timeout: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            min=1,
            help="Request queue visibility, s.",
            show_default=str(Default.VISIBILITY_TIMEOUT_SECONDS),
            envvar=Setting.VISIBILITY_TIMEOUT,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            help="Task slots.",
            show_default="one per CPU",
            envvar=Setting.CONCURRENCY,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="Time limit per task, s (0: none).",
            show_default=str(Default.TASK_TIMEOUT_SECONDS),
            envvar=Setting.TASK_TIMEOUT,
        ),
    ] = None,
    task_user: Annotated[
        str | None,
        typer.Option(
            metavar="USER",
            help="Run shell tasks as this unprivileged user (the worker must be root).",
            envvar=Setting.TASK_USER,
        ),
    ] = None,
    metadata_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Instance metadata to watch for spot and termination notices (none: not watched).",
            envvar=Setting.METADATA_URL,
        ),
    ] = None,
    lifecycle_hook: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="The group's termination hook, completed once bundles are given back.",
            envvar=Setting.LIFECYCLE_HOOK,
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Note held bundles and finished tasks here, so a restarted worker takes"
            " them back at once.",
            envvar=Setting.STATE_DIR,
        ),
    ] = None,
    poll_seconds: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            min=0,
            max=LONG_POLL_SECONDS,
            help="Long poll wait, s.",
            show_default=str(Default.POLL_SECONDS),
            envvar=Setting.POLL_SECONDS,
        ),
    ] = None,
) -> None:
    """Run bundles from the request queue (what an instance of the fleet runs)."""
    import logging
    import os

    from worker.errors import TaskfleetError
    from worker.remote import RemoteConfig, RemoteWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {
        "request_queue_url": request_queue_url,
        "response_queue_url": response_queue_url,
        "claim_table": claim_table,
        "job_table": job_table,
        "job_queue_prefix": job_queue_prefix,
        "region": region,
        "instance_id": instance_id,
        "group_name": group_name,
        "idle_timeout": idle_timeout,
        "visibility_timeout": visibility_timeout,
        "concurrency": concurrency,
        "task_timeout": timeout,
        "task_user": task_user,
        "metadata_url": metadata_url,
        "lifecycle_hook": lifecycle_hook,
        "state_dir": state_dir,
        "poll_seconds": poll_seconds,
    }
    try:
        config = RemoteConfig.from_environment(os.environ, **overrides)
    except TaskfleetError as error:
        raise fail(str(error)) from error
    raise typer.Exit(RemoteWorker(config).run())
