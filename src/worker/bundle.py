"""The bundle wire format: many tasks in one SQS message, and results coming back.

A bundle is one JSON message on the request queue; its results go back as
JSON messages on the response queue, as many as their size needs. Both stay
under SQS's 1 MiB message limit: the scheduler packs bundles to it, and the
worker splits results to it.
"""

from typing import Annotated

import msgspec

from worker.contracts import MAX_MESSAGE_BYTES
from worker.errors import BundleError
from worker.record_items import RecordPlace
from worker.result import CheckedResult, Result, Short
from worker.task import FileName, JobId, LineNumber
from worker.usage import Usage

#: Room kept under the limit for SQS's own attributes and JSON framing.
MESSAGE_HEADROOM_BYTES = 16 * 1024

#: Most files one job may name (the scheduler service refuses more at upload).
MAX_JOB_FILES = 1000

#: The longest time limit a job may set for its tasks (a week), in seconds.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600

#: A bundle id: the claim table's key, which DynamoDB limits to 2,048 bytes.
BundleId = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z][0-9A-Za-z._:-]{0,127}$")]


class BundleTask(msgspec.Struct, array_like=True, gc=False):
    """One task of a bundle: [file number, line, text] on the wire."""

    file_number: int  # which file of the job, from 1: an index into Bundle.files + 1
    line: LineNumber
    text: str  # not bounded here: a line too long fails as a task, with the reason


#: An S3 bucket's name, as S3 allows it.
BucketName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]


class BundleFiles(msgspec.Struct, frozen=True, gc=False):
    """A job's files on the fleet: the stack's job-files bucket, and what its
    tasks get and give there. Keys are made from the job's id, not carried:
    a bundle cannot point a worker at another prefix."""

    bucket: BucketName
    inputs: bool = False  # the job's input list is at input_manifest.manifest_key(job)
    outputs: bool = False  # each task's files go back packed (worker.output_pack)


class Bundle(msgspec.Struct, gc=False):
    """Tasks of one job that travel and are claimed together."""

    bundle_id: BundleId  # unique across jobs: the claim table's key
    job: JobId
    files: Annotated[list[FileName], msgspec.Meta(max_length=MAX_JOB_FILES)]  # by number - 1
    tasks: Annotated[list[BundleTask], msgspec.Meta(min_length=1)]
    # The job's time limit per task in seconds, 0 for none; None: the worker's own.
    timeout: Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMEOUT_SECONDS)] | None = None
    job_files: BundleFiles | None = None  # None: no files travel
    records: RecordPlace | None = None  # None: the worker stores none (readers do)


class UsageReport(msgspec.Struct, gc=False):
    """What a worker process (``sender``) used for a job (None: for no job, its
    overhead) since its report ``sequence - 1``. ``final``: it holds no more of
    the job's bundles. Sender and sequence make it unique, so a report SQS
    delivers twice counts once, and order it, as SQS need not."""

    sender: Short
    sequence: Annotated[int, msgspec.Meta(ge=1)]
    job: JobId | None
    usage: Usage
    final: bool = False

    @property
    def report_id(self) -> str:
        return f"{self.sender}/{self.sequence}"


class ResultBatch(msgspec.Struct, gc=False, omit_defaults=True):
    """Results of some tasks of one bundle (a bundle's results may need several),
    and what the worker used for the bundle's job since its last report. A
    worker's last report for a job may come alone: no results, its bundle id
    that of the last bundle of the job it held."""

    bundle_id: str
    worker: str
    results: list[Result]
    usage: UsageReport | None = None
    stored: bool = False  # the worker stored its results and report as record items


class _ReceivedBatch(msgspec.Struct, gc=False):
    """A result batch as read from the response queue: every field bounded."""

    bundle_id: BundleId
    worker: Short
    results: list[CheckedResult]
    usage: UsageReport | None = None
    stored: bool = False


_encoder = msgspec.json.Encoder()
_bundle_decoder = msgspec.json.Decoder(Bundle)
_batch_decoder = msgspec.json.Decoder(_ReceivedBatch)


def encode_bundle(bundle: Bundle) -> str:
    return _encoder.encode(bundle).decode()


def decode_bundle(body: str) -> Bundle:
    """A bundle from a message body; BundleError says what is wrong with a bad one."""
    try:
        bundle = _bundle_decoder.decode(body)
    except msgspec.DecodeError as error:
        raise BundleError(f"not a bundle: {error}") from error
    for task in bundle.tasks:
        if not 1 <= task.file_number <= len(bundle.files):
            raise BundleError(f"task on line {task.line} names file {task.file_number}")
    return bundle


def decode_result_batch(body: str) -> ResultBatch:
    """A result batch from a message body, every field checked; BundleError says
    what is wrong with a bad one."""
    try:
        received = _batch_decoder.decode(body)
    except msgspec.DecodeError as error:
        raise BundleError(f"not a result batch: {error}") from error
    results: list[Result] = list(received.results)
    return ResultBatch(
        received.bundle_id, received.worker, results, received.usage, received.stored
    )


def usage_message(bundle_id: str, worker: str, usage: UsageReport) -> str:
    """A usage report alone, as a response-queue message body."""
    return _encoder.encode(ResultBatch(bundle_id, worker, [], usage)).decode()


def result_messages(
    bundle_id: str,
    worker: str,
    results: list[Result],
    usage: UsageReport | None = None,
    *,
    stored: bool = False,
) -> list[str]:
    """Results as response-queue message bodies, each under the message limit;
    ``usage`` rides on the first; ``stored``: the worker stored them (and it)."""
    limit = MAX_MESSAGE_BYTES - MESSAGE_HEADROOM_BYTES
    messages: list[str] = []
    batch: list[Result] = []
    size = 0
    for result in results:
        result_size = len(_encoder.encode(result))
        if batch and size + result_size > limit:
            body = ResultBatch(bundle_id, worker, batch, usage, stored)
            messages.append(_encoder.encode(body).decode())
            batch, size, usage = [], 0, None
        batch.append(result)
        size += result_size + 1
    if batch:
        messages.append(
            _encoder.encode(ResultBatch(bundle_id, worker, batch, usage, stored)).decode()
        )
    return messages
