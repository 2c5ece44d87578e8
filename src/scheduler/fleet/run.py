"""``taskfleet run --remote``: a workload on a deployed fleet, from this machine.

It runs on the scheduler service's own fleet path: the checked workload goes
into a journal of its own (a temporary SQLite file), and a dispatch thread
without local workers packs it into bundles, sends them, sets the group's
desired capacity from the exact backlog, journals results as they come
(checked against what was sent; a duplicate kept once), reports bundles in
the dead-letter queue as failed, and retries AWS calls with backoff. This
function copies the journal's results to the output as they arrive. With
``--upload`` the job's inputs go to the stack's job-files bucket before its
first bundle (``job_inputs``); with ``--output-dir`` each task's files are
fetched from there as its record is copied (``job_outputs``).
"""

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from scheduler.errors import FleetError
from scheduler.fleet.aws import RemoteFleet
from scheduler.fleet.feeder import FleetFeeder
from scheduler.fleet.job_inputs import ship_inputs
from scheduler.fleet.job_outputs import OutputsBack
from scheduler.jobs.dispatch import JobDispatcher
from scheduler.jobs.journal import JobState, Journal, Placement
from scheduler.pricing import Prices, cost_fields
from scheduler.resume import not_done
from scheduler.summary import Summary
from worker.bundle import BundleFiles
from worker.inputs import InputFile
from worker.result import decode, encode_lines
from worker.task import new_job_id
from worker.usage import wait_for_usage
from worker.workload import TaskReader, WorkloadCounts

log = logging.getLogger("taskfleet.scheduler")

#: Tasks read from a workload file, and stored, at a time.
READ_BATCH = 8192

#: Result records copied to the output per read of the journal.
RESULTS_PAGE = 2000

#: Seconds the copy waits for news before it looks anyway.
POLL_SECONDS = 0.5


def run_remote(
    paths: Sequence[str],
    *,
    counts: WorkloadCounts,
    fleet: RemoteFleet,
    slots: int,
    output: BinaryIO,
    timeout: float | None = None,
    prices: Prices | None = None,
    on_progress: Callable[[Summary], None] | None = None,
    on_job: Callable[[str], None] = lambda _job: None,
    retries: int = 0,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
    uploads: Sequence[InputFile] = (),
    output_dir: Path | None = None,
    keep_files: bool = False,
) -> Summary:
    """Run a checked workload on the fleet; write results; return the summary.

    ``retries``, ``skip``, ``uploads`` and ``output_dir`` as for
    ``run_embedded``; ``keep_files``: tasks' files are kept in the stack's
    bucket (as with ``output_dir``) for ``results --files``; ``timeout`` per
    task (None: none); ``on_job`` hears the job's id once it is made. The job
    is kept in the stack: if this process dies, it runs on, and ``taskfleet
    results JOB --stack`` gets its records. Ctrl-C cancels it on the fleet.
    The summary holds what the job used on the fleet, priced at ``prices``.
    """
    summary = Summary(total=counts.total, workers=slots)
    files = _Files(uploads, output_dir, keep_files)
    with _fleet_job(paths, fleet, timeout, retries, skip, files) as job:
        journal, dispatcher, job_id = job.journal, job.dispatcher, job.id
        on_job(job_id)
        outputs = None
        if output_dir is not None:
            bucket = fleet.resources.job_files_bucket
            outputs = OutputsBack(fleet.s3, fleet.meter, bucket, job_id, output_dir)
        try:
            summary.start()
            dispatcher.start()
            copy_results(
                journal, job_id, dispatcher, job.news, output, summary, on_progress, outputs
            )
            job.feeder.link.wind_down()
            # Every worker's last report of what the job used (or a failure: no wait).
            wait_for_usage(lambda: dispatcher.failure is None and journal.usage_to_come(job_id))
            job.feeder.link.end_job(job_id)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.end()
            # The link stopped first: a job not yet kept in the stack never is
            # (its bundles are not sent), and one that is gets cancelled.
            _stop(dispatcher)
            cancel_on_fleet(fleet, job_id)
        finally:
            _stop(dispatcher)
            if outputs is not None:
                outputs.close()
            summary.usage = journal.job(job_id).usage
            summary.costs = cost_fields(summary.usage, summary.total, prices)
    if dispatcher.failure is not None:
        raise dispatcher.failure
    return summary


def submit_remote(
    paths: Sequence[str],
    *,
    fleet: RemoteFleet,
    timeout: float | None = None,
    on_job: Callable[[str], None] = lambda _job: None,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
    uploads: Sequence[InputFile] = (),
    keep_files: bool = False,
) -> str:
    """Queue a checked workload on the fleet and return once every bundle is
    sent (the job then runs without this process); returns the job's id.
    ``uploads`` go to the stack's bucket first; with ``keep_files`` each task's
    files are kept there, for ``taskfleet results JOB --files DIR``."""
    if fleet.jobs is None:
        raise FleetError("this stack keeps no jobs: a detached job could not be followed")
    with _fleet_job(paths, fleet, timeout, 0, skip, _Files(uploads, None, keep_files)) as job:
        dispatcher, job_id, feeder = job.dispatcher, job.id, job.feeder
        on_job(job_id)
        total = job.journal.job(job_id).total
        try:
            dispatcher.start()
            while dispatcher.failure is None and dispatcher.is_alive():
                if feeder.queued(job_id) >= total and not feeder.link.unsent():
                    break
                time.sleep(POLL_SECONDS / 5)
        except KeyboardInterrupt:
            _stop(dispatcher)
            cancel_on_fleet(fleet, job_id)
            raise
        finally:
            _stop(dispatcher)
    if dispatcher.failure is not None:
        raise dispatcher.failure
    return job_id


class _Files(NamedTuple):
    """What files a job's tasks get (``uploads``) and give (to ``output_dir``, or
    kept in the stack: ``keep``)."""

    uploads: Sequence[InputFile]
    output_dir: Path | None
    keep: bool = False

    @property
    def outputs(self) -> bool:
        return self.output_dir is not None or self.keep

    def bundle_files(self, fleet: RemoteFleet) -> BundleFiles | None:
        """What its bundles say of them (None: no files travel)."""
        if not self.uploads and not self.outputs:
            return None
        bucket = fleet.resources.job_files_bucket
        if not bucket:
            raise FleetError(
                "the stack has no job-files bucket (JobFilesBucket): deploy it again"
                " with this taskfleet to use --upload, --output-dir or --keep-files with --remote"
            )
        return BundleFiles(bucket, inputs=bool(self.uploads), outputs=self.outputs)


class _RemoteJob(NamedTuple):
    """A remote job in a journal of its own, and what sends it."""

    id: str
    journal: Journal
    dispatcher: JobDispatcher
    feeder: FleetFeeder
    news: threading.Event  # set when the dispatcher journals results


@contextlib.contextmanager
def _fleet_job(
    paths: Sequence[str],
    fleet: RemoteFleet,
    timeout: float | None,
    retries: int,
    skip: frozenset[tuple[str, int, str]],
    files: _Files,
) -> Iterator[_RemoteJob]:
    """A remote job in a journal of its own (a temporary file), its inputs
    shipped, and the dispatcher that sends it (not started)."""
    bundle_files = files.bundle_files(fleet)
    with tempfile.TemporaryDirectory(prefix="taskfleet-run-") as folder:
        journal_path = Path(folder) / "journal.sqlite3"
        # A journal of its own, which no one filters by status or duration.
        journal = Journal(journal_path, task_filters=False)
        news = threading.Event()
        feeder = FleetFeeder.of(fleet, 0, timeout, bundle_files, reads_overhead=False)
        dispatcher = JobDispatcher(journal_path, news.set, feeder=feeder, task_filters=False)
        try:
            job_id = store_workload(journal, paths, retries, skip)
            if bundle_files is not None and files.uploads:
                _ship(fleet, bundle_files.bucket, job_id, files.uploads, journal)
            yield _RemoteJob(job_id, journal, dispatcher, feeder, news)
        finally:
            _stop(dispatcher)
            journal.close()


def _ship(
    fleet: RemoteFleet, bucket: str, job_id: str, uploads: Sequence[InputFile], journal: Journal
) -> None:
    """Send a job's inputs before its first bundle, charged to it."""
    try:
        with fleet.meter.charged_to(job_id):
            ship_inputs(fleet.s3, bucket, job_id, uploads)
    except (BotoCoreError, ClientError) as error:
        raise FleetError(f"--upload: could not send the inputs to {bucket}: {error}") from error
    journal.add_usage(job_id, fleet.meter.take(job_id))


def _stop(dispatcher: JobDispatcher) -> None:
    dispatcher.stopping.set()
    dispatcher.wake.set()
    if dispatcher.is_alive():
        dispatcher.join()


def cancel_on_fleet(fleet: RemoteFleet, job_id: str) -> None:
    """Cancel a job in the stack (workers stop its tasks); a failure is logged."""
    if fleet.jobs is None:
        return
    try:
        fleet.jobs.cancel(job_id)
    except (BotoCoreError, ClientError) as error:
        log.warning("could not cancel job %s on the fleet: %s", job_id, error)


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
            while (read := reader.read(READ_BATCH)).lines:
                batch = not_done(path, read, skip)
                rows = [
                    (file_number, line, text)
                    for line, text in zip(batch.lines, batch.texts, strict=True)
                ]
                journal.add_tasks(job_id, rows)
                total += len(rows)
    journal.seal_job(job_id, list(paths), total)
    return job_id


def copy_results(
    journal: Journal,
    job_id: str,
    dispatcher: JobDispatcher,
    news: threading.Event,
    output: BinaryIO,
    summary: Summary,
    on_progress: Callable[[Summary], None] | None,
    outputs: OutputsBack | None = None,
) -> None:
    """Write the job's records as the dispatcher journals them, until the last;
    each task's files brought back first (``outputs``)."""
    after = 0
    while dispatcher.failure is None:
        news.clear()
        # The job before its results: once it reads done, the page read next
        # holds the last of them.
        state, finished, total = journal.progress(job_id)
        page = journal.results_page(job_id, after, RESULTS_PAGE)
        if page:
            after = page[-1][0]
            results = [decode(record) for _, record in page]
            for result in results:
                summary.add({result.status: 1}, result.duration_ms / 1000.0)
            if outputs is not None:
                output.write(encode_lines(outputs.records(results)))
            else:
                output.write(b"".join(record for _, record in page))
            output.flush()
            if on_progress is not None:
                on_progress(summary)
            continue
        if state in JobState.FINAL and finished >= total:
            return
        news.wait(POLL_SECONDS)
