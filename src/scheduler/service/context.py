"""What the service's request handlers share: the journal, the dispatcher, the
fleet's watch, the access rules, and the news of stored results."""

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import msgspec
from anyio import to_thread

from scheduler.fleet.watch import FleetWatch
from scheduler.jobs.dispatch import JobDispatcher
from scheduler.jobs.file_store import FileStore
from scheduler.jobs.journal import JobInfo, Journal, Placement
from scheduler.pricing import Prices, cost_fields
from scheduler.service.fleet_files import FleetFiles
from scheduler.service.guard import AccessRules
from scheduler.service.sessions import Sessions

T = TypeVar("T")
P = ParamSpec("P")


class Notifier:
    """Wakes result streams when the dispatch thread stores results."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def notify_threadsafe(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event


@dataclass
class ServiceContext:
    """What request handlers share."""

    journal_path: Path
    dispatcher: JobDispatcher
    notifier: Notifier
    workers: int
    fleet_slots: int  # the fleet's task slots; 0 without a stack
    rules: AccessRules
    prices: Prices | None = None  # what fleet usage is priced at; None without a stack
    fleet_watch: FleetWatch | None = None
    stack: str | None = None
    sessions: Sessions = field(default_factory=Sessions)  # the dashboard's sign-ins
    files: FileStore | None = None  # the jobs' inputs and outputs; None: no files taken
    fleet_files: "FleetFiles | None" = None  # their way to the fleet; None: none
    open_requests: int = 0  # kept by the AccessGuard
    _local: threading.local = field(default_factory=threading.local)
    _opened: list[Journal] = field(default_factory=list)  # every thread's, to close them
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token(self) -> str | None:
        return self.rules.token

    def failure(self) -> BaseException | None:
        return self.dispatcher.failure

    def describe(self, info: JobInfo) -> dict[str, object]:
        """A job as the API shows it: its counters, what it used and cost, and
        for a job on the fleet, how long it waited for a first worker."""
        described = info.as_dict()
        on_fleet = info.placement != Placement.LOCAL
        described.update(cost_fields(info.usage, info.total, self.prices if on_fleet else None))
        if on_fleet and self.fleet_watch is not None:
            wait = self.fleet_watch.first_worker_after(info.created_at)
            described["first_worker_seconds"] = None if wait is None else round(wait, 1)
        return described

    async def fleet(self) -> dict[str, object] | None:
        """The fleet's samples and overhead (see GET /fleet); None without a stack."""
        watch = self.fleet_watch
        if watch is None:
            return None
        watch.want()
        overhead = await self.run(Journal.overhead)
        resources = watch.fleet.resources
        return {
            "stack": self.stack,
            "max_workers": resources.max_workers,
            "slots_per_instance": resources.slots_per_instance,
            "instance_types": list(resources.instance_types),
            "spot": resources.spot,
            "samples": [sample._asdict() for sample in watch.samples(time.time() - 3600)],
            "overhead": {
                "aws_requests": overhead.aws_requests,
                "usage": msgspec.structs.asdict(overhead),
                **cost_fields(overhead, 0, self.prices),
            },
        }

    def journal(self) -> Journal:
        """This thread's connection to the journal."""
        journal: Journal | None = getattr(self._local, "journal", None)
        if journal is None:
            journal = self._local.journal = Journal(self.journal_path)
            with self._lock:
                self._opened.append(journal)
        return journal

    def close(self) -> None:
        """Close every thread's connection (once requests are over): the last one
        to close folds the write-ahead log into the database and removes it."""
        with self._lock:
            opened, self._opened = self._opened, []
        for journal in opened:
            journal.close()

    async def run(
        self, method: Callable[Concatenate[Journal, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a blocking journal method in a worker thread, with this thread's journal."""
        return await to_thread.run_sync(lambda: method(self.journal(), *args, **kwargs))
