"""The packings taskfleet's fleet path is measured against, on the same queues
and the same `taskfleet worker`s:

- one task per message (what a queue of jobs, Celery on SQS say, does);
- one bundle per fleet slot, consecutive lines by count (taskfleet's packing
  before bundles were cut by work).

Each sends every bundle at once, sets the group's capacity from the backlog
as taskfleet does, and reads results until every task has one (a duplicate
is written once), writing the records as JSON Lines.
"""

import math
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
    # Capacity is asked for as the first bundles land, as taskfleet does.
    fleet.send(bodies[:MAX_MESSAGES_PER_CALL])
    fleet.provision(open_bundles=len(bodies))
    fleet.send(bodies[MAX_MESSAGES_PER_CALL:])
    reported: set[str] = set()
    provisioned = time.monotonic()
    while len(reported) < total:
        for delivery in fleet.receive(wait_seconds=1):
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
            left = math.ceil((total - len(reported)) / max(per_bundle, 1))
            fleet.provision(open_bundles=left)
            provisioned = time.monotonic()
    output.flush()
    return total
