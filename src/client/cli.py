"""The ``taskfleet`` command: thin typer commands that hand off to the library."""

import importlib.util
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
import typer
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as AwsClientError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from client import report
from client.benchmark import output as output_files
from client.benchmark.runners import BenchError
from client.benchmark.suite import FULL, QUICK, Row, Suite
from client.errors import ClientError
from client.service_client import SchedulerClient
from scheduler.embedded import run_embedded
from scheduler.remote_dispatch import RemoteFleet, StackResources
from scheduler.remote_run import run_remote
from scheduler.server import serve
from scheduler.state import default_journal_path
from scheduler.summary import Summary
from worker.errors import TaskfleetError
from worker.remote import RemoteConfig, RemoteWorker
from worker.result import decode
from worker.workload import WorkloadCounts, check_workload

app = typer.Typer(
    name="taskfleet",
    help="Run a workload (one task a line) on local worker processes or a fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Exit code for bad input or usage, as click uses for usage errors.
EXIT_USAGE = 2
#: Exit code after Ctrl-C, as shells report a SIGINT.
EXIT_INTERRUPTED = 130

DEFAULT_SCHEDULER = "http://127.0.0.1:8750"

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
SchedulerUrl = Annotated[
    str,
    typer.Option("--scheduler", "-s", help="Scheduler service URL.", envvar="TASKFLEET_SCHEDULER"),
]
Token = Annotated[
    str | None,
    typer.Option(
        help="The scheduler's token (visible in ps: prefer --token-file).",
        envvar="TASKFLEET_TOKEN",
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        help="A file (mode 600) holding the scheduler's token"
        " (default: ~/.local/state/taskfleet/token, for a scheduler on this machine).",
        envvar="TASKFLEET_TOKEN_FILE",
    ),
]
CaCert = Annotated[
    Path | None,
    typer.Option(
        help="Trust this certificate (PEM) for an HTTPS scheduler.", envvar="TASKFLEET_CA_CERT"
    ),
]
Stack = Annotated[
    str | None, typer.Option(help="The deployed stack's name.", envvar="TASKFLEET_STACK")
]
JobId = Annotated[str, typer.Argument(help="A job id, as submit printed it.")]
SummaryPath = Annotated[
    Path | None,
    typer.Option("--summary", help="Also write the summary figures here, as JSON."),
]


@app.callback()
def taskfleet() -> None:
    """Run a workload (one task a line) on local worker processes or a fleet."""


def default_workers() -> int:
    return os.cpu_count() or 1


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    report.stderr_console().print(
        f"taskfleet: {message}", markup=False, highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def checked(files: list[str]) -> WorkloadCounts:
    """The task counts of workload files, or exit 2 naming the first bad line."""
    try:
        return check_workload(files)
    except TaskfleetError as error:
        raise fail(str(error)) from error


@contextmanager
def results_output(path: str | None) -> Iterator[BinaryIO]:
    """The results stream: a new file at ``path``, or stdout."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        stream = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as error:
        raise fail(f"{path}: cannot write results: {error.strerror}") from error
    with stream:
        yield stream


@contextmanager
def client_errors() -> Iterator[None]:
    """Turn a failure to talk to the scheduler into a one-line message and exit 2."""
    try:
        yield
    except ClientError as error:
        raise fail(str(error)) from error


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
    console = report.stderr_console()
    counts = checked(files)
    fleet = None
    slots = 0
    if remote:
        if not stack:
            raise fail("--remote needs --stack NAME (or TASKFLEET_STACK)")
        try:
            fleet = RemoteFleet(StackResources.lookup(stack))
            slots = fleet.slots()
        except (ValueError, BotoCoreError, AwsClientError) as error:
            raise fail(f"cannot use stack {stack}: {error}") from error
    with results_output(output) as stream, report.live_progress(console, counts.total) as bar:
        if fleet is not None:
            summary = run_remote(
                files,
                counts=counts,
                fleet=fleet,
                slots=slots,
                output=stream,
                on_progress=lambda s: report.update(bar, s),
            )
        else:
            summary = run_embedded(
                files,
                counts=counts,
                workers=workers or default_workers(),
                timeout=timeout or None,
                output=stream,
                on_progress=lambda s: report.update(bar, s),
            )
    finish(console, summary, summary_path)


def finish(console: Console, summary: Summary, path: Path | None) -> None:
    """Print the summary, write it as JSON if asked, and exit with its code."""
    report.print_summary(console, summary)
    if path is not None:
        figures = summary.as_dict()
        # This process's own peak memory: the scheduler's, for `run`.
        figures["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        path.write_text(json.dumps(figures, indent=2) + "\n")
    raise typer.Exit(summary.exit_code())


@app.command()
def scheduler(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8750,
    workers: Workers = None,
    token: Token = None,
    token_file: TokenFile = None,
    journal: Annotated[
        Path | None,
        typer.Option(
            help="Journal database [default: ~/.local/state/taskfleet/].",
            envvar="TASKFLEET_JOURNAL",
        ),
    ] = None,
    timeout: Timeout = 3600.0,
    exit_when_idle: Annotated[
        float | None,
        typer.Option(min=0, help="Exit after this many seconds with no job and no request."),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option(help="Also run jobs on this deployed stack's fleet (submit --remote)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
) -> None:
    """Serve the scheduler: jobs over HTTP, run on local worker processes (and a fleet)."""
    console = report.stderr_console()
    try:
        code = serve(
            host=host,
            port=port,
            workers=workers or default_workers(),
            token=token,
            token_file=token_file,
            journal_path=journal or default_journal_path(),
            timeout=timeout or None,
            exit_when_idle=exit_when_idle,
            announce=lambda line: console.print(
                f"taskfleet scheduler {line}", markup=False, soft_wrap=True
            ),
            stack=stack or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except TaskfleetError as error:
        raise fail(str(error)) from error
    raise typer.Exit(code)


@app.command()
def submit(
    files: Files,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    output: Output = None,
    summary_path: SummaryPath = None,
    remote: Annotated[
        bool, typer.Option(help="Run on the scheduler's fleet (scheduler --stack).")
    ] = False,
    hybrid: Annotated[
        bool, typer.Option(help="Run on the scheduler's local workers and its fleet together.")
    ] = False,
) -> None:
    """Submit a workload to a scheduler service and stream its results back."""
    console = report.stderr_console()
    if remote and hybrid:
        raise fail("--remote and --hybrid exclude each other")
    placement = "remote" if remote else "hybrid" if hybrid else "local"
    counts = checked(files)
    with (
        client_errors(),
        SchedulerClient(scheduler, token, token_file=token_file, ca_cert=ca_cert) as client,
    ):
        health = client.health()
        local, fleet = int(health.get("workers", 1)), int(health.get("fleet_slots", 0))
        workers = {"local": local, "remote": fleet, "hybrid": local + fleet}[placement]
        summary = Summary(total=counts.total, workers=max(workers, 1))
        summary.start()
        job = client.submit(files, placement)
        console.print(f"job {job['job']}: {job['tasks']} tasks")
        console.file.flush()  # the job id must reach a log even if this process is killed
        with results_output(output) as stream, report.live_progress(console, counts.total) as bar:
            try:
                follow(client, job["job"], stream, summary, bar)
            except KeyboardInterrupt:
                summary.interrupted = True
                console.print(
                    f"stopped following; job {job['job']} goes on: taskfleet results {job['job']}"
                )
    finish(console, summary, summary_path)


def follow(
    client: SchedulerClient,
    job_id: str,
    stream: BinaryIO,
    summary: Summary,
    bar: Progress | None,
) -> None:
    """Write a job's results as they arrive and count them."""
    for line in client.results(job_id, follow=True):
        stream.write(line + b"\n")
        try:
            result = decode(line)
        except msgspec.DecodeError as error:
            raise ClientError(f"scheduler sent a bad result record: {error}") from error
        summary.add({result.status: 1}, result.duration_ms / 1000.0)
        report.update(bar, summary)


@app.command()
def results(
    job: JobId,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    output: Output = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish.")] = False,
) -> None:
    """Print the results of a job, finished so far (or all, with --wait)."""
    with (
        client_errors(),
        SchedulerClient(scheduler, token, token_file=token_file, ca_cert=ca_cert) as client,
        results_output(output) as stream,
    ):
        for line in client.results(job, follow=wait):
            stream.write(line + b"\n")


@app.command()
def status(
    job: Annotated[str | None, typer.Argument(help="A job id; all recent jobs if omitted.")] = None,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
) -> None:
    """Show the state of one job, or of recent jobs."""
    with (
        client_errors(),
        SchedulerClient(scheduler, token, token_file=token_file, ca_cert=ca_cert) as client,
    ):
        jobs = [client.job(job)] if job else client.jobs()
    print_jobs(Console(), jobs)


@app.command()
def cancel(
    job: JobId,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
) -> None:
    """Cancel the tasks of a job that have not started; running ones finish."""
    with (
        client_errors(),
        SchedulerClient(scheduler, token, token_file=token_file, ca_cert=ca_cert) as client,
    ):
        info = client.cancel(job)
    print_jobs(Console(), [info])


@app.command()
def worker(
    request_queue_url: Annotated[
        str | None, typer.Option(help="The request queue.", envvar="TASKFLEET_REQUEST_QUEUE_URL")
    ] = None,
    response_queue_url: Annotated[
        str | None,
        typer.Option(help="The response queue.", envvar="TASKFLEET_RESPONSE_QUEUE_URL"),
    ] = None,
    claim_table: Annotated[
        str | None, typer.Option(help="The claim table.", envvar="TASKFLEET_CLAIM_TABLE")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="AWS region.", envvar="TASKFLEET_REGION")
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(help="This instance [default: from IMDSv2].", envvar="TASKFLEET_INSTANCE_ID"),
    ] = None,
    group_name: Annotated[
        str | None,
        typer.Option(
            help="Its Auto Scaling group (none: no group).", envvar="TASKFLEET_GROUP_NAME"
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds idle before ending.", envvar="TASKFLEET_IDLE_TIMEOUT"),
    ] = None,
    visibility_timeout: Annotated[
        int | None,
        typer.Option(
            min=1, help="Request queue visibility, s.", envvar="TASKFLEET_VISIBILITY_TIMEOUT"
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Task slots (default: one per CPU).", envvar="TASKFLEET_CONCURRENCY"
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Time limit per shell command, s (0: none).",
            envvar="TASKFLEET_TASK_TIMEOUT",
        ),
    ] = None,
    task_user: Annotated[
        str | None,
        typer.Option(
            help="Run shell tasks as this unprivileged user (the worker must be root).",
            envvar="TASKFLEET_TASK_USER",
        ),
    ] = None,
    metadata_url: Annotated[
        str | None,
        typer.Option(
            help="Instance metadata to watch for spot and termination notices (none: not watched).",
            envvar="TASKFLEET_METADATA_URL",
        ),
    ] = None,
    lifecycle_hook: Annotated[
        str | None,
        typer.Option(
            help="The group's termination hook, completed once bundles are given back.",
            envvar="TASKFLEET_LIFECYCLE_HOOK",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Note held bundles here, so a restarted worker takes them back at once.",
            envvar="TASKFLEET_STATE_DIR",
        ),
    ] = None,
    poll_seconds: Annotated[
        int | None,
        typer.Option(
            min=0, max=20, help="Long poll wait, s (default: 20).", envvar="TASKFLEET_POLL_SECONDS"
        ),
    ] = None,
) -> None:
    """Run bundles from the request queue (what an instance of the fleet runs)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {
        "request_queue_url": request_queue_url,
        "response_queue_url": response_queue_url,
        "claim_table": claim_table,
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


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="A run of under a minute: small workloads, 1-2 workers.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Folder for the figures [default: taskfleet-bench-TIME]."
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(min=1, help="Runs per figure; the median is kept [default: 3, --quick 1]."),
    ] = None,
    stack: Stack = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only these experiments: a kind (throughput, efficiency, commands) or a "
            "task line ('sleep 10'); repeatable."
        ),
    ] = None,
) -> None:
    """Measure throughput and efficiency beside multiprocessing, concurrent.futures and xargs."""
    console = report.stderr_console()
    if importlib.util.find_spec("matplotlib") is None:
        raise fail(
            "taskfleet bench draws its plots with matplotlib: pip install 'taskfleet[bench]'"
        )
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
        report.live_progress(console, suite.measurements(experiments), label="runs") as bar,
    ):

        def advance(_label: str) -> None:
            if bar is not None:
                bar.advance(bar.task_ids[0])

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


def print_jobs(console: Console, jobs: list[dict[str, object]]) -> None:
    table = Table()
    # Figures are never cut: on a narrow terminal only the file names wrap.
    for name in ("job", "state", "placement", "tasks", "finished", "succeeded", "failed"):
        table.add_column(name, no_wrap=True)
    table.add_column("files", overflow="fold")
    for info in jobs:
        cells = [
            info["job"],
            info["state"],
            info.get("placement", "local"),
            info["tasks"],
            info["finished"],
            info["succeeded"],
            info["failed"],
            files_cell(info),
        ]
        # Text, not markup: a file name like "[red]x" is shown as it is.
        table.add_row(*(Text(str(cell)) for cell in cells))
    console.print(table)


def files_cell(info: dict[str, object]) -> str:
    """A job's file names as the service lists them, and how many more there are."""
    files = info.get("files")
    names = [str(name) for name in files] if isinstance(files, list) else []
    count = info.get("file_count", len(names))
    more = count - len(names) if isinstance(count, int) else 0
    return ", ".join(names) + (f" (+{more} more)" if more > 0 else "")


def main() -> None:
    app()
