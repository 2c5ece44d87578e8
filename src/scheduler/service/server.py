"""Starting and stopping the scheduler service: pool, dispatch thread, HTTP server."""

import contextlib
import resource
import signal
import socket
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NamedTuple

import uvicorn
from starlette.applications import Starlette

from scheduler.errors import JobNotFoundError, SchedulerError
from scheduler.fleet.aws import open_fleet
from scheduler.fleet.feeder import FleetFeeder
from scheduler.fleet.watch import FleetWatch
from scheduler.jobs.dispatch import JobDispatcher
from scheduler.jobs.file_store import FileStore, store_of
from scheduler.jobs.journal import JobState, Journal
from scheduler.jobs.retention import (
    DEFAULT_KEEP_DAYS,
    PruneReport,
    Retention,
    keep_seconds,
    prune_journal,
)
from scheduler.local.dispatch import Dispatcher
from scheduler.local.pool import LocalPool
from scheduler.pricing import Prices, fleet_prices
from scheduler.service.api import build_app
from scheduler.service.context import Notifier, ServiceContext
from scheduler.service.fleet_files import FleetFiles
from scheduler.service.guard import AccessRules
from scheduler.service.http_protocol import MAX_CONNECTIONS, GuardedH11Protocol
from scheduler.service.sessions import IDLE_SECONDS, MAX_AGE_SECONDS, Sessions
from scheduler.tokens import is_loopback, service_token
from worker.execute import scrub_secrets

#: Seconds between two looks at whether the service is idle.
IDLE_CHECK_SECONDS = 0.5

#: File descriptors the service wants: its connections, the journal's, the workers' pipes.
WANTED_FILES = MAX_CONNECTIONS + 512


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise SchedulerError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    sock.listen(128)
    return sock


def raise_file_limit() -> None:
    """Lift the soft limit on open files toward WANTED_FILES, as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_FILES if hard == resource.RLIM_INFINITY else min(WANTED_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def check_tls(tls_cert: Path | None, tls_key: Path | None) -> None:
    if (tls_cert is None) != (tls_key is None):
        raise SchedulerError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise SchedulerError(f"{path}: no such file")


def serve(
    *,
    host: str,
    port: int,
    workers: int,
    journal_path: Path,
    timeout: float | None,
    exit_when_idle: float | None,
    announce: Callable[[str], None],
    token: str | None = None,
    token_file: Path | None = None,
    stack: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    open_browser: bool = False,
    price_per_instance_hour: float | None = None,
    new_token: bool = False,
    session_idle: float = IDLE_SECONDS,
    session_max: float = MAX_AGE_SECONDS,
    keep_days: float = DEFAULT_KEEP_DAYS,
) -> int:
    """Run the service until stopped (SIGINT/SIGTERM) or idle; return an exit code.

    Every request but /health needs the token: ``token``, else the one in
    ``token_file``, else the one in the user's state folder (made on first
    start); with ``new_token``, a new random one replaces the file's first.
    The dashboard's sessions end after ``session_idle`` seconds unused, and
    ``session_max`` seconds after their sign-in. With a ``stack``, jobs may
    also run on its fleet (remote or hybrid), its jobs' usage priced at the
    stack's instance types (or at ``price_per_instance_hour``). With
    ``tls_cert`` and ``tls_key``, it speaks HTTPS. With ``open_browser``, the
    dashboard opens in the user's browser. Jobs that ended more than
    ``keep_days`` ago are pruned from the journal, at start and as it runs.
    """
    check_tls(tls_cert, tls_key)
    sessions = Sessions(session_idle, session_max)
    secret, token_source = service_token(token, token_file, new=new_token)
    scrub_secrets()  # no worker process or task inherits TASKFLEET_TOKEN
    raise_file_limit()
    files = FileStore(store_of(journal_path))
    retention = Retention(keep_seconds(keep_days), files)
    pruned = prune_journal(journal_path, retention.keep_seconds, files)
    announce_pruned(pruned, keep_days, announce)
    fleet = (
        None if stack is None else FleetSide.open(stack, workers, timeout, price_per_instance_hour)
    )
    sock = bind(host, port)
    pool = LocalPool(workers, timeout)
    notifier = Notifier()
    try:
        pool.start()
        dispatcher = JobDispatcher(
            journal_path,
            notifier.notify_threadsafe,
            local=partial(Dispatcher, pool),
            feeder=None if fleet is None else fleet.feeder,
            retention=retention,
            job_files=files,
        )
        sweep_files(journal_path, files)
        context = ServiceContext(
            journal_path,
            dispatcher,
            notifier,
            workers,
            0 if fleet is None else fleet.slots,
            AccessRules.for_address(host, sock.getsockname()[1], secret),
            None if fleet is None else fleet.prices,
            None if fleet is None else fleet.watch,
            stack,
            sessions,
            files,
            None if fleet is None else fleet.files,
        )
        server = uvicorn_server(build_app(context), tls_cert, tls_key)
        url = url_of(sock, tls=tls_cert is not None)
        announce(f"listening on {url} (token {token_source}); dashboard at {url}/")
        if open_browser:
            # In a thread: a terminal browser would otherwise hold the service up.
            threading.Thread(target=open_dashboard, args=(url + "/", announce), daemon=True).start()
        if tls_cert is None and not is_loopback(host):
            announce(
                "warning: without --tls-cert, the token and results cross the network in clear"
            )
        return run_until_stopped(server, sock, context, exit_when_idle)
    finally:
        pool.stop(graceful=False)
        sock.close()


def open_dashboard(url: str, announce: Callable[[str], None]) -> None:
    """Open the dashboard in the user's web browser (BROWSER, else the desktop's
    or a terminal's), or say that none could be started."""
    if not webbrowser.open(url):
        announce(f"--open: no web browser could be started here; open {url} in one")


def sweep_files(journal_path: Path, files: FileStore) -> None:
    """Before any request: remove the files of jobs the journal dropped (their
    upload cut off when the service stopped), and the inputs of ended jobs."""
    journal = Journal(journal_path)

    def state_of(job_id: str) -> str | None:
        try:
            return journal.job(job_id).state
        except JobNotFoundError:
            return None

    try:
        files.sweep(state_of, JobState.FINAL)
    finally:
        journal.close()


class FleetSide(NamedTuple):
    """The service's parts for a stack's fleet."""

    feeder: FleetFeeder
    watch: FleetWatch
    prices: Prices
    slots: int  # the fleet's task slots
    files: FleetFiles | None  # jobs' files through its bucket (None: it has none)

    @classmethod
    def open(
        cls, stack: str, workers: int, timeout: float | None, price_per_instance_hour: float | None
    ) -> "FleetSide":
        """The fleet of ``stack``, fed beside ``workers`` local workers, its tasks
        limited to ``timeout`` seconds, its usage priced at the stack's instance
        types (or at ``price_per_instance_hour``)."""
        fleet = open_fleet(stack)
        resources = fleet.resources
        prices = fleet_prices(resources.instance_types, resources.spot, price_per_instance_hour)
        feeder = FleetFeeder.of(fleet, workers, timeout, reads_overhead=True)
        watch = FleetWatch(fleet, feeder.busy)
        return cls(feeder, watch, prices, resources.slots, FleetFiles.of(fleet))


def announce_pruned(report: PruneReport, keep_days: float, announce: Callable[[str], None]) -> None:
    """Say what pruning at start did, when it did anything."""
    if report.jobs or report.compacted:
        mib = 1024 * 1024
        announce(
            f"pruned {report.jobs} jobs ended over {keep_days:g} days ago; journal"
            f" {report.bytes_before / mib:.1f} MiB -> {report.bytes_after / mib:.1f} MiB"
        )


def uvicorn_server(app: Starlette, tls_cert: Path | None, tls_key: Path | None) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http=GuardedH11Protocol,  # header timeouts; only requests count toward limits
        log_level="warning",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=64 * 1024,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )
    return uvicorn.Server(config)


def url_of(sock: socket.socket, *, tls: bool) -> str:
    """The service's URL, from the address its socket listens on."""
    address = sock.getsockname()
    shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
    return f"{'https' if tls else 'http'}://{shown}:{address[1]}"


def run_until_stopped(
    server: uvicorn.Server,
    sock: socket.socket,
    context: ServiceContext,
    exit_when_idle: float | None,
) -> int:
    """Run the dispatch thread, the fleet's watch and the server until the
    server stops; then stop the threads and close the journal. The exit code:
    1 if dispatch failed."""
    dispatcher, fleet_watch = context.dispatcher, context.fleet_watch
    dispatcher.start()
    if fleet_watch is not None:
        fleet_watch.start()
    idle_watch = None
    if exit_when_idle is not None:
        idle_watch = threading.Thread(
            target=_stop_when_idle,
            args=(server, context, exit_when_idle),
            name="taskfleet-idle",
            daemon=True,
        )
        idle_watch.start()
    with _sigterm_returns():
        try:
            server.run(sockets=[sock])
        finally:
            dispatcher.stopping.set()
            dispatcher.join()
            if fleet_watch is not None:
                fleet_watch.stopping.set()
                fleet_watch.join()
            if idle_watch is not None:
                idle_watch.join()
            context.close()
    return 1 if dispatcher.failure is not None else 0


@contextlib.contextmanager
def _sigterm_returns() -> Iterator[None]:
    """Make SIGTERM a clean stop. uvicorn shuts down gracefully on it, then
    raises it again, which by default would kill the process before the
    dispatch thread, the journal and the workers are closed; here it returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signal, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_when_idle(server: uvicorn.Server, context: ServiceContext, idle_seconds: float) -> None:
    """Stop the server once no job is active and nothing happened for ``idle_seconds``."""
    journal = Journal(context.journal_path)
    try:
        while not server.should_exit:
            time.sleep(IDLE_CHECK_SECONDS)
            if context.dispatcher.failure is not None:
                server.should_exit = True
            idle = (
                context.open_requests == 0
                and context.dispatcher.idle_seconds() >= idle_seconds
                and not journal.active_jobs()
            )
            if idle:
                server.should_exit = True
    finally:
        journal.close()
