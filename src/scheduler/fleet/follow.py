"""Following a fleet job from any machine with the stack's credentials.

`taskfleet results/status/wait JOB --stack` read the job from the stack: the
records its workers stored as they sent them (and its readers, what no worker
stored). While the client that submitted the job reads its queue (it holds
the job's reader lease), that is all; once no client does (it detached, or
died), they first collect what waits on the job's queue (storing what no
worker stored), so such a job is still read in full, and the first to find a
record for every task ends the job in the stack, deleting its queue.
"""

import time
from collections.abc import Iterator

from scheduler.errors import FleetError
from scheduler.fleet.aws import RemoteFleet
from scheduler.fleet.job_store import FleetJob, JobRecords, JobStore
from worker.contracts import JobItem
from worker.result import decode
from worker.usage import Usage

#: Seconds between two looks at a job that is still running (--follow).
FOLLOW_SECONDS = 1.0

#: The long poll's wait while moving results from a job's queue into the store.
COLLECT_WAIT_SECONDS = 1


def job_store(fleet: RemoteFleet) -> JobStore:
    if fleet.jobs is None:
        raise FleetError("this stack keeps no jobs (deployed by an earlier taskfleet)")
    return fleet.jobs


def collect(fleet: RemoteFleet, job: FleetJob) -> int:
    """Keep what waits on the job's queue (and its dead bundles, forwarded there):
    stored by its worker already, or stored here; each message deleted once kept.
    Returns how many records were kept."""
    fleet.forward_dead_letters()
    url = job_store(fleet).queue_url(job.id)
    stored = 0
    while url is not None:
        delivery = fleet.receive_job(url, COLLECT_WAIT_SECONDS)
        if not delivery.messages:
            break
        stored += fleet.keep(job.id, delivery, job.file_count or len(job.files))
        fleet.acknowledge(delivery)
    return stored


class JobView:
    """A fleet job as read now: its meta item and its records."""

    def __init__(self, fleet: RemoteFleet, job_id: str) -> None:
        self.fleet = fleet
        self.store = job_store(fleet)
        self.job_id = job_id
        self.job: FleetJob = self.store.job(job_id)
        self.records: JobRecords | None = None

    def refresh(self) -> None:
        """Read the job and its records again. With no live client reading the
        job's queue (it detached, or died), first collect what waits there, and end
        the job in the stack once every task has a record; with one, leave both to
        it (it may yet retry a task)."""
        unread = not self.job.ended and not self.job.has_reader
        if unread:
            collect(self.fleet, self.job)
        self.records = self.store.read_all(self.job, self.records)
        self.job = self.store.job(self.job_id)
        if unread and not self.job.ended and not self.job.has_reader and self.complete():
            assert self.records is not None
            self.store.end(self.job_id, records=len(self.records.records))
            self.job = self.store.job(self.job_id)

    def complete(self) -> bool:
        return self.records is not None and len(self.records.records) >= self.job.total

    def over(self) -> bool:
        """Nothing more will come: the job ended, or (no client reading its queue,
        which could yet retry a task) every task has its record."""
        return self.job.ended or (self.complete() and not self.job.has_reader)

    def counts(self) -> dict[str, int]:
        """Records by status."""
        counts: dict[str, int] = {}
        for line in self.records.records.values() if self.records else ():
            status = decode(line).status
            counts[status] = counts.get(status, 0) + 1
        return counts

    def usage(self) -> Usage:
        """What the job used so far: its workers' reports, and the idle tails of the
        instances that ran it last."""
        reported = self.records.usage if self.records else Usage()
        return reported + self.job.tail

    @property
    def state(self) -> str:
        return state_of(self.job)


def state_of(job: FleetJob) -> str:
    """A job's state as shown: ``running``, ``cancelled`` or ``done``."""
    if job.state == JobItem.RUNNING and job.ended:
        return JobItem.DONE
    return job.state


def follow_records(view: JobView, *, follow: bool) -> Iterator[list[bytes]]:
    """A job's records, each task's once (the first stored that is found), in
    pages as they are found; with ``follow``, until the job is over."""
    written: set[str] = set()
    while True:
        view.refresh()
        assert view.records is not None
        new = [task for task in view.records.records if task not in written]
        written.update(new)
        page = [view.records.records[task] for task in new]
        if page:
            yield page
        if not follow or view.over():
            return
        time.sleep(FOLLOW_SECONDS)
