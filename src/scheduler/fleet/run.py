"""``taskfleet run --remote``: a workload on a deployed fleet, from this machine.

It runs on the scheduler service's own fleet path: the checked workload goes
into a journal of its own (a temporary SQLite file), and a dispatch thread
without local workers packs it into bundles, sends them, sets the group's
desired capacity from the exact backlog, journals results as they come
(checked against what was sent; a duplicate kept once), reports bundles in
the dead-letter queue as failed, and retries AWS calls with backoff. This
function copies the journal's results to the output as they arrive.
"""

import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from scheduler.fleet.aws import RemoteFleet
from scheduler.pricing import Prices, cost_fields
from scheduler.service.dispatch import ServiceDispatcher
from scheduler.service.journal import JobState, Journal, Placement
from scheduler.summary import Summary
from worker.result import decode
from worker.task import new_job_id
from worker.workload import TaskReader, WorkloadCounts

#: Tasks read from a workload file, and stored, at a time.
READ_BATCH = 8192

#: Result records copied to the output per read of the journal.
RESULTS_PAGE = 2000

#: Seconds the copy waits for news before it looks anyway.
POLL_SECONDS = 0.5

#: Seconds the run waits, after the last result, for each worker's last report
#: of what the job used (sent once it holds none of the job's bundles).
USAGE_WAIT_SECONDS = 5.0


def run_remote(
    paths: Sequence[str],
    *,
    counts: WorkloadCounts,
    fleet: RemoteFleet,
    slots: int,
    output: BinaryIO,
    prices: Prices | None = None,
    on_progress: Callable[[Summary], None] | None = None,
    retries: int = 0,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
) -> Summary:
    """Run a checked workload on the fleet; write results; return the summary.

    ``retries`` and ``skip`` as for ``run_embedded``. The fleet's response queue
    is read by this run alone: run one at a time per stack. The summary holds
    what the job used on the fleet, priced at ``prices``.
    """
    summary = Summary(total=counts.total, workers=slots)
    with tempfile.TemporaryDirectory(prefix="taskfleet-run-") as folder:
        journal_path = Path(folder) / "journal.sqlite3"
        journal = Journal(journal_path)
        news = threading.Event()
        dispatcher = ServiceDispatcher(journal_path, None, news.set, fleet)
        job_id = None
        try:
            job_id = store_workload(journal, paths, retries, skip)
            summary.start()
            dispatcher.start()
            copy_results(journal, job_id, dispatcher, news, output, summary, on_progress)
            if dispatcher.fleet is not None:
                dispatcher.fleet.link.wind_down()
            wait_for_usage(journal, job_id, dispatcher)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.end()
        finally:
            dispatcher.stopping.set()
            dispatcher.wake.set()
            if dispatcher.is_alive():
                dispatcher.join()
            if job_id is not None:
                summary.usage = journal.job(job_id).usage
                summary.costs = cost_fields(summary.usage, summary.total, prices)
            journal.close()
    if dispatcher.failure is not None:
        raise dispatcher.failure
    return summary


def wait_for_usage(journal: Journal, job_id: str, dispatcher: ServiceDispatcher) -> None:
    """Wait (a little) until every worker that ran the job has reported all it used."""
    deadline = time.monotonic() + USAGE_WAIT_SECONDS
    while journal.usage_to_come(job_id) and time.monotonic() < deadline:
        if dispatcher.failure is not None:
            return
        time.sleep(0.1)


def store_workload(
    journal: Journal,
    paths: Sequence[str],
    retries: int = 0,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
) -> str:
    """Journal the tasks of checked workload files (but those in ``skip``) as one
    remote job; its id."""
    job_id = new_job_id()
    journal.create_job(job_id, Placement.REMOTE, retries)
    total = 0
    for file_number, path in enumerate(paths, start=1):
        with TaskReader(path, check=False) as reader:
            while (batch := reader.read(READ_BATCH)).lines:
                rows = [
                    (file_number, line, text)
                    for line, text in zip(batch.lines, batch.texts, strict=True)
                    if (path, line, text) not in skip
                ]
                journal.add_tasks(job_id, rows)
                total += len(rows)
    journal.seal_job(job_id, list(paths), total)
    return job_id


def copy_results(
    journal: Journal,
    job_id: str,
    dispatcher: ServiceDispatcher,
    news: threading.Event,
    output: BinaryIO,
    summary: Summary,
    on_progress: Callable[[Summary], None] | None,
) -> None:
    """Write the job's records as the dispatcher journals them, until the last."""
    after = 0
    while dispatcher.failure is None:
        news.clear()
        # The job before its results: once it reads done, the page read next
        # holds the last of them.
        state, finished, total = journal.progress(job_id)
        page = journal.results_page(job_id, after, RESULTS_PAGE)
        if page:
            after = page[-1][0]
            for _, record in page:
                result = decode(record)
                summary.add({result.status: 1}, result.duration_ms / 1000.0)
            output.write(b"".join(record for _, record in page))
            output.flush()
            if on_progress is not None:
                on_progress(summary)
            continue
        if state in JobState.FINAL and finished >= total:
            return
        news.wait(POLL_SECONDS)
