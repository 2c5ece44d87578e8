"""Starting and stopping the scheduler service: pool, dispatch thread, HTTP server."""

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from scheduler.api import Notifier, ServiceState, build_app
from scheduler.errors import SchedulerError, UnsafeBindError
from scheduler.journal import Journal
from scheduler.local_pool import LocalPool
from scheduler.remote_dispatch import RemoteFleet, StackResources
from scheduler.service_dispatch import ServiceDispatcher

#: Seconds between two looks at whether the service is idle.
IDLE_CHECK_SECONDS = 0.5


def default_journal_path() -> Path:
    """Where the journal lives unless told: the user's state directory."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "taskfleet" / "journal.sqlite3"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def serve(
    *,
    host: str,
    port: int,
    workers: int,
    token: str | None,
    journal_path: Path,
    timeout: float | None,
    exit_when_idle: float | None,
    announce: Callable[[str], None],
    stack: str | None = None,
) -> int:
    """Run the service until stopped (SIGINT/SIGTERM) or idle; return an exit code.

    With a ``stack``, jobs may also run on its fleet (remote or hybrid).
    """
    if not token and not is_loopback(host):
        raise UnsafeBindError(
            f"refusing to listen on {host} without a token: set --token or TASKFLEET_TOKEN"
        )
    fleet = None
    if stack is not None:
        try:
            fleet = RemoteFleet(StackResources.lookup(stack))
        except ValueError as error:
            raise SchedulerError(str(error)) from error
    sock = bind(host, port)
    pool = LocalPool(workers, timeout)
    notifier = Notifier()
    try:
        pool.start()
        dispatcher = ServiceDispatcher(journal_path, pool, notifier.notify_threadsafe, fleet)
        slots = 0 if fleet is None else fleet.resources.max_workers
        state = ServiceState(journal_path, dispatcher, notifier, workers, slots, token)
        app = build_app(state)
        config = uvicorn.Config(
            app,
            log_level="warning",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,
            limit_concurrency=256,
            h11_max_incomplete_event_size=64 * 1024,
        )
        server = uvicorn.Server(config)
        dispatcher.start()
        if exit_when_idle is not None:
            watch = threading.Thread(
                target=_stop_when_idle,
                args=(server, state, exit_when_idle),
                name="taskfleet-idle",
                daemon=True,
            )
            watch.start()
        address = sock.getsockname()
        shown = f"[{address[0]}]" if sock.family == socket.AF_INET6 else address[0]
        announce(f"http://{shown}:{address[1]}")
        server.run(sockets=[sock])
        dispatcher.stopping.set()
        dispatcher.join()
        return 1 if dispatcher.failure is not None else 0
    finally:
        pool.stop(graceful=False)
        sock.close()


def _stop_when_idle(server: uvicorn.Server, state: ServiceState, idle_seconds: float) -> None:
    """Stop the server once no job is active and nothing happened for ``idle_seconds``."""
    journal = Journal(state.journal_path)
    try:
        while not server.should_exit:
            time.sleep(IDLE_CHECK_SECONDS)
            if state.dispatcher.failure is not None:
                server.should_exit = True
            idle = (
                state.open_requests == 0
                and state.dispatcher.idle_seconds() >= idle_seconds
                and not journal.active_jobs()
            )
            if idle:
                server.should_exit = True
    finally:
        journal.close()
