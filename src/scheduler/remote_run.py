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
from worker.task import task_id
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

    ledger = TaskLedger(job_id, paths)
    bundles = send_bundles(paths, ledger, fleet, per_bundle, first_sent)
    if bundles != expected:
        fleet.provision(open_bundles=bundles)
    last_provision = time.monotonic()
    try:
        while ledger.reported < counts.total:
            for delivery in fleet.receive():
                fresh = [
                    result
                    for batch in delivery.batches
                    for result in batch.results
                    if result.job == job_id and ledger.report(result.file, result.line, result.id)
                ]
                for result in fresh:
                    summary.add({result.status: 1}, result.duration_ms / 1000.0)
                output.write(encode_lines(fresh))
                output.flush()
                fleet.acknowledge(delivery)
                if fresh and on_progress is not None:
                    on_progress(summary)
            if time.monotonic() - last_provision >= PROVISION_INTERVAL_SECONDS:
                left = counts.total - ledger.reported
                fleet.provision(open_bundles=math.ceil(left * bundles / counts.total))
                last_provision = time.monotonic()
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary


class TaskLedger:
    """Which lines of a run's files are tasks, and which have a result: a byte a
    line, so a run of ten million tasks keeps ten megabytes, not a set of ids.

    A result counts once, and only for a task this run sent: a message naming
    any other line (forged, or of an earlier run) is dropped.
    """

    EXPECTED, REPORTED = 1, 2

    def __init__(self, job_id: str, paths: Sequence[str]) -> None:
        self.job_id = job_id
        self.numbers = {path: number for number, path in enumerate(paths, start=1)}
        self.lines = [bytearray() for _ in paths]
        self.reported = 0

    def expect(self, file_number: int, line: int) -> None:
        marks = self.lines[file_number - 1]
        if len(marks) <= line:
            marks.extend(bytes(line + 1 - len(marks)))
        marks[line] = self.EXPECTED

    def report(self, file: str, line: int, result_id: str) -> bool:
        """True the first time a result for a task of this run arrives."""
        number = self.numbers.get(file)
        if number is None or result_id != task_id(self.job_id, number, line):
            return False
        marks = self.lines[number - 1]
        if line >= len(marks) or marks[line] != self.EXPECTED:
            return False
        marks[line] = self.REPORTED
        self.reported += 1
        return True


def send_bundles(
    paths: Sequence[str],
    ledger: TaskLedger,
    fleet: RemoteFleet,
    per_bundle: int,
    first_sent: Callable[[], None],
) -> int:
    """Pack and send every task of the workload, noting each in ``ledger``;
    returns the number of bundles."""
    packer = BundlePacker(ledger.job_id, list(paths), per_bundle)
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
                    ledger.expect(file_number, line)
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
