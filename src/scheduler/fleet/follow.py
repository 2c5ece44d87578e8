"""Following a fleet job from any machine with the stack's credentials.

`taskfleet results/status/wait JOB --stack` read the job from the stack: the
records its readers stored, after moving into the store whatever waits on
the job's queue (so a job whose client went away is still read in full).
The first reader to find a record for every task ends the job in the stack,
which deletes its queue.
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


def collect(fleet: RemoteFleet, job_id: str) -> int:
    """Store what waits on the job's queue, deleting each message once stored;
    returns how many records were stored."""
    url = job_store(fleet).queue_url(job_id)
    stored = 0
    while url is not None:
        delivery = fleet.receive_job(url, COLLECT_WAIT_SECONDS)
        if not delivery.messages:
            break
        stored += fleet.keep(job_id, delivery)
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
        """Collect what waits on the job's queue, then read the job and its records
        again; end the job in the stack once every task has a record."""
        if not self.job.ended:
            collect(self.fleet, self.job_id)
        self.records = self.store.read_all(self.job_id, self.records)
        self.job = self.store.job(self.job_id)
        if not self.job.ended and self.complete():
            self.store.end(self.job_id)
            self.job = self.store.job(self.job_id)

    def complete(self) -> bool:
        return self.records is not None and len(self.records.records) >= self.job.total

    def over(self) -> bool:
        """Nothing more will come: every task has its record, or the job ended."""
        return self.complete() or self.job.ended

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
        return reported + Usage(instance_seconds=self.job.tail_seconds)

    @property
    def state(self) -> str:
        if self.job.state == JobItem.RUNNING and self.job.ended:
            return JobItem.DONE
        return self.job.state


def follow_records(fleet: RemoteFleet, job_id: str, *, follow: bool) -> Iterator[list[bytes]]:
    """A job's records, each task's once, in pages as they are found; with
    ``follow``, until the job is over."""
    view = JobView(fleet, job_id)
    written: set[bytes] = set()
    while True:
        view.refresh()
        assert view.records is not None
        page = [line for task, line in view.records.records.items() if task.encode() not in written]
        written.update(
            task.encode() for task in view.records.records if task.encode() not in written
        )
        if page:
            yield page
        if not follow or view.over():
            return
        time.sleep(FOLLOW_SECONDS)
