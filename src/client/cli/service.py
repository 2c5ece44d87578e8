"""The scheduler service and its clients: scheduler, prune, submit, retry, results,
status, cancel."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from client.cli.app import (
    DEFAULT_SCHEDULER,
    Command,
    Files,
    Output,
    PricePerInstanceHour,
    Retries,
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
    checked_names,
    checked_output_dir,
    checked_uploads,
)
from client.cli.local import checked_for_fleet
from scheduler.service import sessions  # its settings' defaults (stdlib imports only)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from client.service_client import SchedulerClient
    from client.service_files import ServiceOutputs
    from scheduler.summary import Summary
    from worker.inputs import InputFile
    from worker.result import Result

SchedulerUrl = Annotated[
    str,
    typer.Option(
        "--scheduler",
        "-s",
        metavar="URL",
        help="Scheduler service URL.",
        envvar="TASKFLEET_SCHEDULER",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        metavar="TOKEN",
        help="The scheduler's token (visible in ps: prefer --token-file).",
        envvar="TASKFLEET_TOKEN",
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        metavar="PATH",
        help="A file (mode 600) holding the scheduler's token"
        " (for a scheduler on this machine: the one it wrote).",
        show_default="~/.local/state/taskfleet/token",
        envvar="TASKFLEET_TOKEN_FILE",
    ),
]
CaCert = Annotated[
    Path | None,
    typer.Option(
        metavar="PEM",
        help="Trust this certificate (PEM) for an HTTPS scheduler.",
        envvar="TASKFLEET_CA_CERT",
    ),
]
JobId = Annotated[str, typer.Argument(metavar="JOB", help="A job id, as submit printed it.")]
#: A fleet job is read from its stack, not from a scheduler service. No
#: environment variable: a TASKFLEET_STACK set for `run --remote` must not turn
#: `status JOB` away from the service.
StackOfJob = Annotated[
    str | None,
    typer.Option(
        "--stack",
        metavar="NAME",
        help="Read the fleet job from this deployed stack instead of a scheduler service.",
    ),
]


JournalPath = Annotated[
    Path | None,
    typer.Option(
        metavar="PATH",
        help="Journal database.",
        show_default="~/.local/state/taskfleet/journal.sqlite3",
        envvar="TASKFLEET_JOURNAL",
    ),
]
#: The journal's retention (``scheduler.jobs.retention.DEFAULT_KEEP_DAYS``; not
#: imported from there: it would load the journal for every command's --help).
DEFAULT_KEEP_DAYS = 30.0
KeepDays = Annotated[
    float,
    typer.Option(
        metavar="DAYS",
        min=0,
        help="Keep ended jobs (their results too) this long in the journal, then prune"
        " them (fractions of a day are fine; 0: as soon as they end).",
        envvar="TASKFLEET_KEEP_DAYS",
    ),
]


@contextmanager
def connected(
    scheduler: str, token: str | None, token_file: Path | None, ca_cert: Path | None
) -> Iterator["SchedulerClient"]:
    """A client of the scheduler; a failure to talk to it is one line and exit 2."""
    from client.errors import ClientError
    from client.service_client import SchedulerClient

    try:
        with SchedulerClient(scheduler, token, token_file=token_file, ca_cert=ca_cert) as client:
            yield client
    except ClientError as error:
        raise fail(str(error)) from error


@app.command(cls=Command)
def scheduler(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="N", min=0, max=65535, help="Port (0: any free one).")
    ] = 8750,
    workers: Workers = None,
    token: Token = None,
    token_file: TokenFile = None,
    journal: JournalPath = None,
    keep_days: KeepDays = DEFAULT_KEEP_DAYS,
    timeout: Timeout = 3600.0,
    exit_when_idle: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="Exit after this many seconds with no job and no request.",
        ),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Also run jobs on this deployed stack's fleet (submit --remote)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(metavar="PEM", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(metavar="PEM", help="The certificate's private key.")
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the dashboard in a web browser.")
    ] = False,
    price_per_instance_hour: PricePerInstanceHour = None,
    new_token: Annotated[
        bool,
        typer.Option(
            "--new-token",
            help="Replace the token in its file (--token-file, or the state folder's) with a"
            " new random one before starting: the old one, and every dashboard session, end.",
        ),
    ] = False,
    session_idle: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=1,
            help="End a dashboard session unused for this long.",
            envvar="TASKFLEET_SESSION_IDLE",
        ),
    ] = sessions.IDLE_SECONDS,
    session_max: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=1,
            help="End a dashboard session this long after its sign-in, used or not.",
            envvar="TASKFLEET_SESSION_MAX",
        ),
    ] = sessions.MAX_AGE_SECONDS,
) -> None:
    """Serve the scheduler: jobs over HTTP, run on local worker processes (and a fleet)."""
    from client import report
    from client.terminal import visible
    from scheduler.service.server import serve
    from scheduler.state import default_journal_path
    from worker.errors import TaskfleetError

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
                visible(f"taskfleet scheduler {line}"), markup=False, soft_wrap=True
            ),
            stack=stack or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            open_browser=open_browser,
            price_per_instance_hour=price_per_instance_hour,
            new_token=new_token,
            session_idle=session_idle,
            session_max=session_max,
            keep_days=keep_days,
        )
    except TaskfleetError as error:
        raise fail(str(error)) from error
    raise typer.Exit(code)


@app.command(cls=Command)
def prune(journal: JournalPath = None, keep_days: KeepDays = DEFAULT_KEEP_DAYS) -> None:
    """Forget the jobs of a scheduler's journal that ended more than --keep-days ago,
    and give their space back (safe while the scheduler runs)."""
    import sqlite3

    from scheduler.jobs.file_store import FileStore, store_of
    from scheduler.jobs.retention import keep_seconds, prune_journal
    from scheduler.state import default_journal_path

    path = journal or default_journal_path()
    if not path.is_file():
        raise fail(f"--journal: {path}: no such file")
    # The jobs' files (submit --upload/--output-dir) go with them, if there are any.
    files = FileStore(store_of(path)) if store_of(path).is_dir() else None
    try:
        report = prune_journal(path, keep_seconds(keep_days), files)
    except sqlite3.Error as error:
        raise fail(f"--journal: {path}: {error}") from error
    mib = 1024 * 1024
    compacted = " (compacted: made able to shrink)" if report.compacted else ""
    print(
        f"pruned {report.jobs} jobs ended over {keep_days:g} days ago; journal"
        f" {report.bytes_before / mib:.1f} MiB -> {report.bytes_after / mib:.1f} MiB{compacted}"
    )


Remote = Annotated[
    bool, typer.Option("--remote", help="Run on the scheduler's fleet (scheduler --stack).")
]
Hybrid = Annotated[
    bool,
    typer.Option("--hybrid", help="Run on the scheduler's local workers and its fleet together."),
]


@app.command(cls=Command)
def submit(
    files: Files,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    output: Output = None,
    summary_path: SummaryPath = None,
    remote: Remote = False,
    hybrid: Hybrid = False,
    retries: Retries = 0,
    upload: Uploads = None,
    upload_max_bytes: UploadMaxBytes = DEFAULT_UPLOAD_MAX_BYTES,
    upload_max_files: UploadMaxFiles = DEFAULT_UPLOAD_MAX_FILES,
    output_dir: OutputDir = None,
    keep_files: KeepFiles = False,
) -> None:
    """Submit a workload to a scheduler service and stream its results back."""
    placement = placement_of(remote=remote, hybrid=hybrid) or "local"
    counts = checked(files)
    uploads = checked_uploads(upload or [], upload_max_bytes, upload_max_files)
    checked_output_dir(output_dir, files, resume=None)
    if keep_files:
        checked_names(files, "--keep-files")
    if uploads and placement != "local":
        checked_for_fleet(uploads)
    keeps = output_dir is not None or keep_files
    with connected(scheduler, token, token_file, ca_cert) as client:
        summary = job_summary(client, counts.total, placement)
        inputs = send_inputs(client, uploads)
        job = client.submit(files, placement, retries, inputs, keeps)
        watch(client, job, summary, output, output_dir)
    finish(summary, summary_path)


def send_inputs(client: "SchedulerClient", uploads: "list[InputFile]") -> str | None:
    """Give the scheduler a job's inputs, saying what was sent; their id (None: none)."""
    if not uploads:
        return None
    from client import report
    from client.service_files import send_inputs as send

    sent = send(client, uploads)
    report.stderr_console().print(
        f"inputs: {sent.files} files, {sent.sent} contents sent, {sent.present} on the"
        " scheduler already",
        markup=False,
        highlight=False,
    )
    return sent.id


@app.command(cls=Command)
def retry(
    job: JobId,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    output: Output = None,
    summary_path: SummaryPath = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run on the scheduler's local workers.")
    ] = False,
    remote: Remote = False,
    hybrid: Hybrid = False,
    retries: Retries = 0,
) -> None:
    """Run the tasks of an ended job that did not succeed again, as a new job, and stream
    their results back (where the job ran, unless --local, --remote or --hybrid)."""
    placement = placement_of(local=local, remote=remote, hybrid=hybrid)
    with connected(scheduler, token, token_file, ca_cert) as client:
        new = client.retry(job, placement, retries)
        summary = job_summary(client, new["tasks"], new["placement"])
        watch(client, new, summary, output)
    finish(summary, summary_path)


def placement_of(**flags: bool) -> str | None:
    """The placement one of the flags names, None if none; two are a usage error."""
    chosen = [name for name, given in flags.items() if given]
    if len(chosen) > 1:
        raise fail(" and ".join(f"--{name}" for name in chosen) + " exclude each other")
    return chosen[0] if chosen else None


def job_summary(client: "SchedulerClient", total: int, placement: str) -> "Summary":
    """A started summary of a job of ``total`` tasks, with the service's slots for it."""
    from scheduler.summary import Summary

    health = client.health()
    local, fleet = int(health.get("workers", 1)), int(health.get("fleet_slots", 0))
    workers = {"local": local, "remote": fleet, "hybrid": local + fleet}.get(placement, local)
    summary = Summary(total=total, workers=max(workers, 1))
    summary.start()
    return summary


def watch(
    client: "SchedulerClient",
    job: dict[str, Any],
    summary: "Summary",
    output: str | None,
    output_dir: Path | None = None,
) -> None:
    """Say which job runs, then write its results as they arrive until it ends
    (or Ctrl-C: the job goes on), its tasks' files brought back under ``output_dir``."""
    from client import report
    from client.terminal import visible

    console = report.stderr_console()
    job_id = job["job"]
    retried = f" (retrying job {job['retry_of']})" if "retry_of" in job else ""
    console.print(visible(f"job {job_id}: {job['tasks']} tasks{retried}"), markup=False)
    console.file.flush()  # the job id must reach a log even if this process is killed
    outputs = None if output_dir is None else files_back(client, job_id, output_dir)
    with results_output(output) as stream, report.live_progress(summary.total) as bar:
        try:
            follow(client, job_id, stream, summary, bar, outputs)
            take_usage(client, job_id, summary)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.end()
            console.print(
                visible(f"stopped following; job {job_id} goes on: taskfleet results {job_id}"),
                markup=False,
            )
        finally:
            if outputs is not None:
                outputs.close()


def files_back(client: "SchedulerClient", job_id: str, output_dir: Path) -> "ServiceOutputs":
    from client.service_files import ServiceOutputs

    return ServiceOutputs(client, job_id, output_dir)


def take_usage(client: "SchedulerClient", job_id: str, summary: "Summary") -> None:
    """Put what the ended job used and cost in its summary, once the workers that
    ran it have reported (a few seconds at most)."""
    from worker.usage import Usage, wait_for_usage

    info = client.job(job_id)

    def reports_to_come() -> int:
        nonlocal info
        info = client.job(job_id)
        return int(info.get("usage_to_come") or 0)

    if info.get("usage_to_come"):
        wait_for_usage(reports_to_come, poll_seconds=0.2)
    usage = info.get("usage")
    if isinstance(usage, dict):
        summary.usage = Usage(**usage)
    cpu = info.get("cpu_seconds")
    summary.cpu_seconds = float(cpu) if isinstance(cpu, int | float) else 0.0
    summary.costs = {name: info.get(name) for name in summary.costs}


def follow(
    client: "SchedulerClient",
    job_id: str,
    stream: BinaryIO,
    summary: "Summary",
    bar: "Progress | None",
    outputs: "ServiceOutputs | None" = None,
) -> None:
    """Write a job's results as they arrive and count them (their tasks' files
    brought back first, with ``outputs``)."""
    from client import report

    for records in client.results(job_id, follow=True):
        results = decoded(records)
        for result in results:
            summary.add({result.status: 1}, result.duration_ms / 1000.0)
        write_records(stream, records, results, outputs)
        report.update(bar, summary)


def decoded(records: list[bytes]) -> "list[Result]":
    import msgspec

    from client.errors import ClientError
    from worker.result import decode

    try:
        return [decode(line) for line in records]
    except msgspec.DecodeError as error:
        raise ClientError(f"scheduler sent a bad result record: {error}") from error


def write_records(
    stream: BinaryIO,
    records: list[bytes],
    results: "list[Result] | None" = None,
    outputs: "ServiceOutputs | None" = None,
) -> None:
    """Write records as they came, or with ``outputs`` as their files came back."""
    if outputs is None:
        stream.write(b"".join(line + b"\n" for line in records))
    else:
        from worker.result import encode_lines

        stream.write(encode_lines(outputs.records(results or decoded(records))))
    stream.flush()  # before waiting for more: a person may be watching the file


@app.command(cls=Command)
def results(
    job: JobId,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    output: Output = None,
    wait: Annotated[
        bool, typer.Option("--wait", "--follow", help="Wait for the job to finish.")
    ] = False,
    stack: StackOfJob = None,
    files: Annotated[
        Path | None,
        typer.Option(
            "--files",
            metavar="DIR",
            help="Bring back the files its tasks left (kept by --output-dir or --keep-files)"
            " under DIR/<file>-<line>/, as the records are written.",
        ),
    ] = None,
) -> None:
    """Print the results of a job, finished so far (or all, with --wait)."""
    if stack is not None:
        from client.cli.fleet_jobs import results_on_stack

        results_on_stack(stack, job, output, follow=wait, files_dir=files)
        return
    with connected(scheduler, token, token_file, ca_cert) as client:
        outputs = None
        if files is not None:
            info = client.job(job)  # no such job: exit 2 before a folder is made
            if not info.get("keeps_files"):
                raise fail(f"--files: job {job} kept no files (submit --output-dir/--keep-files)")
            checked_output_dir(files, [str(name) for name in info["files"]], None, "--files")
            outputs = files_back(client, job, files)
        try:
            with results_output(output) as stream:
                for records in client.results(job, follow=wait):
                    write_records(stream, records, outputs=outputs)
        finally:
            if outputs is not None:
                outputs.close()


@app.command(cls=Command)
def status(
    job: Annotated[
        str | None, typer.Argument(metavar="JOB", help="A job id; all recent jobs if omitted.")
    ] = None,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    stack: StackOfJob = None,
) -> None:
    """Show the state of one job, or of recent jobs."""
    if stack is not None:
        from client.cli import fleet_jobs

        if job:
            fleet_jobs.status_on_stack(stack, job)
        else:
            fleet_jobs.jobs(stack)
        return
    from rich.console import Console

    from client.report import usage_lines

    with connected(scheduler, token, token_file, ca_cert) as client:
        jobs = [client.job(job)] if job else client.jobs()
    console = Console()
    print_jobs(console, jobs)
    if job:
        for line in usage_lines(jobs[0]):
            console.print(line, markup=False, highlight=False)


@app.command(cls=Command)
def cancel(
    job: JobId,
    scheduler: SchedulerUrl = DEFAULT_SCHEDULER,
    token: Token = None,
    token_file: TokenFile = None,
    ca_cert: CaCert = None,
    stack: StackOfJob = None,
) -> None:
    """Cancel the tasks of a job that have not started; running ones finish (on the
    fleet, --stack: they are stopped)."""
    if stack is not None:
        from client.cli.fleet_jobs import cancel_on_stack

        cancel_on_stack(stack, job)
        return
    from rich.console import Console

    with connected(scheduler, token, token_file, ca_cert) as client:
        info = client.cancel(job)
    print_jobs(Console(), [info])


def print_jobs(console: "Console", jobs: list[dict[str, object]]) -> None:
    """Jobs as a table that fits 80 columns: figures are never cut, file names wrap."""
    from rich.table import Table
    from rich.text import Text

    from client.terminal import visible

    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    # tasks - (succeeded + failed + cancelled) are still to run.
    for name in ("job", "state", "where", "tasks", "succeeded", "failed", "cancelled"):
        table.add_column(
            name, no_wrap=True, justify="left" if name in ("job", "state", "where") else "right"
        )
    table.add_column("files", overflow="fold", min_width=10)
    for info in jobs:
        cells = [
            info["job"],
            info["state"],
            info.get("placement", "local"),
            info["tasks"],
            info["succeeded"],
            info["failed"],
            info.get("cancelled", 0),
            files_cell(info),
        ]
        # Text, not markup: a file name like "[red]x" is shown as it is.
        table.add_row(*(Text(visible(str(cell))) for cell in cells))
    console.print(table)


def files_cell(info: dict[str, object]) -> str:
    """A job's file names as the service lists them, and how many more there are."""
    files = info.get("files")
    names = [str(name) for name in files] if isinstance(files, list) else []
    count = info.get("file_count", len(names))
    more = count - len(names) if isinstance(count, int) else 0
    return ", ".join(names) + (f" (+{more} more)" if more > 0 else "")
