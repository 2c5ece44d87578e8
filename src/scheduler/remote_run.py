"""``taskfleet run --remote``: a workload on a deployed fleet, from this machine.

The workload is checked, packed into bundles (never fewer than the fleet's
task slots, each under the SQS message limit) and sent ten to a call; the
group's desired capacity is set from the exact backlog at once; results are
read from the response queue as they come (a duplicate delivery is written
once) and bundles found in the dead-letter queue are reported failed.
"""

import math
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from scheduler.bundling import BundlePacker, tasks_per_bundle
from scheduler.embedded import new_job_id
from scheduler.remote_dispatch import RemoteFleet
from scheduler.summary import Summary
from worker.result import encode_lines
from worker.sqs import MAX_MESSAGES_PER_CALL
from worker.workload import TaskReader, WorkloadCounts

#: Tasks read from a workload file at a time while packing.
READ_BATCH = 8192

#: Seconds between two settings of the group's capacity while a job runs.
PROVISION_INTERVAL_SECONDS = 10.0


def run_remote(
    paths: Sequence[str],
    *,
    counts: WorkloadCounts,
    fleet: RemoteFleet,
    slots: int,
    output: BinaryIO,
    on_progress: Callable[[Summary], None] | None = None,
) -> Summary:
    """Run a checked workload on the fleet; write results; return the summary.

    The fleet's response queue is read by this run alone: run one at a time
    per stack.
    """
    job_id = new_job_id()
    summary = Summary(total=counts.total, workers=slots)
    summary.start()
    per_bundle = tasks_per_bundle(counts.total, slots)
    expected = math.ceil(counts.total / per_bundle)  # more only if some hit the size limit

    def first_sent() -> None:
        # Capacity is asked for as the first bundles land, not after the last.
        fleet.provision(open_bundles=expected)

    bundles = send_bundles(paths, job_id, fleet, per_bundle, first_sent)
    if bundles != expected:
        fleet.provision(open_bundles=bundles)
    reported: set[str] = set()
    last_provision = time.monotonic()
    try:
        while len(reported) < counts.total:
            for delivery in fleet.receive():
                fresh = [
                    result
                    for batch in delivery.batches
                    for result in batch.results
                    if result.job == job_id and result.id not in reported
                ]
                reported.update(r.id for r in fresh)
                for result in fresh:
                    summary.add({result.status: 1}, result.duration_ms / 1000.0)
                output.write(encode_lines(fresh))
                output.flush()
                fleet.acknowledge(delivery)
                if fresh and on_progress is not None:
                    on_progress(summary)
            if time.monotonic() - last_provision >= PROVISION_INTERVAL_SECONDS:
                left = counts.total - len(reported)
                fleet.provision(open_bundles=math.ceil(left * bundles / counts.total))
                last_provision = time.monotonic()
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary


def send_bundles(
    paths: Sequence[str],
    job_id: str,
    fleet: RemoteFleet,
    per_bundle: int,
    first_sent: Callable[[], None],
) -> int:
    """Pack and send every task of the workload; returns the number of bundles."""
    packer = BundlePacker(job_id, list(paths), per_bundle)
    pending: list[str] = []
    sent = 0

    def flush() -> None:
        nonlocal pending, sent
        fleet.send(pending)
        if not sent:
            first_sent()
        sent += len(pending)
        pending = []

    for file_number, path in enumerate(paths, start=1):
        with TaskReader(path, check=False) as reader:
            while (batch := reader.read(READ_BATCH)).lines:
                for line, text in zip(batch.lines, batch.texts, strict=True):
                    packed = packer.add(file_number, line, text)
                    if packed is not None:
                        pending.append(packed.body)
                        if len(pending) == MAX_MESSAGES_PER_CALL:
                            flush()
    last = packer.finish()
    if last is not None:
        pending.append(last.body)
    if pending:
        flush()
    return sent
