"""The packings taskfleet's fleet path is measured against, on the same queues
and the same `taskfleet worker`s:

- one task per message (what a queue of jobs, Celery on SQS say, does);
- one bundle per fleet slot, consecutive lines by count (taskfleet's packing
  before bundles were cut by work).

Each sends every bundle at once, sets the group's capacity from the backlog
as taskfleet does, and reads results until every task has one (a duplicate
is written once), writing the records as JSON Lines.
"""

import time
from typing import BinaryIO

from scheduler.fleet.aws import RemoteFleet
from scheduler.fleet.bundling import BundlePacker
from worker.contracts import MAX_MESSAGES_PER_CALL
from worker.result import encode_lines
from worker.task import new_job_id
from worker.workload import TaskReader

#: Seconds between two settings of the group's capacity while the job runs.
PROVISION_INTERVAL_SECONDS = 10.0


def run_packed(path: str, fleet: RemoteFleet, per_bundle: int, output: BinaryIO) -> int:
    """Run a workload file on the fleet in bundles of ``per_bundle`` tasks; the
    number of tasks."""
    job_id = new_job_id()
    packer = BundlePacker(job_id, [path], per_bundle)
    bodies: list[str] = []
    total = 0
    with TaskReader(path, check=False) as reader:
        while (batch := reader.read(8192)).lines:
            for line, text in zip(batch.lines, batch.texts, strict=True):
                total += 1
                if (bundle := packer.add(1, line, text)) is not None:
                    bodies.append(bundle.body)
    if (last := packer.finish()) is not None:
        bodies.append(last.body)
    # The job's own result queue, as taskfleet's clients make it.
    assert fleet.jobs is not None, "a stack with job queues"
    queue = fleet.jobs.create(
        job_id,
        files=[path],
        total=total,
        timeout=0,
        retries=0,
        submitted_by="bench",
        record_shards=0,  # its bundles name no record place: the workers store none
    )
    assert queue is not None, "a new job"
    # Capacity is asked for as the first bundles land, as taskfleet does.
    fleet.send(bodies[:MAX_MESSAGES_PER_CALL])
    fleet.provision(just_sent=len(bodies))
    fleet.send(bodies[MAX_MESSAGES_PER_CALL:])
    reported: set[str] = set()
    provisioned = time.monotonic()
    while len(reported) < total:
        delivery = fleet.receive_job(queue, 1)
        if delivery.messages:
            fresh = [
                result
                for batch in delivery.batches
                for result in batch.results
                if result.job == job_id and result.id not in reported
            ]
            reported.update(result.id for result in fresh)
            output.write(encode_lines(fresh))
            fleet.acknowledge(delivery)
        if time.monotonic() - provisioned >= PROVISION_INTERVAL_SECONDS:
            fleet.provision()
            provisioned = time.monotonic()
    fleet.jobs.end(job_id)
    output.flush()
    return total
