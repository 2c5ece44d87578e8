"""What work costs on the fleet: AWS requests as they are billed, and instance time.

A ``UsageMeter`` watches boto3 clients through botocore's event hooks and
charges every SQS, DynamoDB and S3 request to the job the calling thread works for
(``charged_to``) as it is sent, in the units AWS bills (an attempt that fails
without an answer, and is sent again, is taken back: it never reached AWS):

- SQS: one request per started 64 KiB of payload, the messages' bodies (a
  200 KiB send is four); a receive's payload is what it received.
- DynamoDB (on demand): a write costs one write unit per started KiB of the
  item; here the request's size stands for the item's, which its key names and
  expressions make a little larger. A read costs one read unit (claims are far
  under 4 KiB).

- S3 (the job-files bucket): a request each, in two tiers as billed (writes:
  PUT, COPY, POST, LIST; reads: GET, HEAD and the rest; deletes are free),
  and the bytes of objects sent and fetched. Storage is not counted: a job's
  objects are small beside a month's gigabyte and expire with the job.

Other AWS calls (Auto Scaling, CloudFormation) are free and not counted. Work
charged to no job (a long poll that found nothing) is the fleet's overhead.
Instance time is charged by the worker itself: each task's seconds divided by
the slots of its instance, since the slots share the instance.
"""

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import msgspec

#: Payload bytes SQS bills as one request.
SQS_BILLING_CHUNK_BYTES = 64 * 1024

#: Item bytes one DynamoDB write request unit covers.
DYNAMODB_WRITE_UNIT_BYTES = 1024

#: Bounds of a usage report read from a queue: far above any real one.
MAX_SECONDS = 1e9
MAX_COUNT = 10**15

DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})

#: S3 calls billed at the dearer tier (PUT, COPY, POST, LIST), and those free.
S3_WRITES = frozenset(
    {
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "ListObjects",
        "ListObjectsV2",
    }
)
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})

#: Seconds a reader waits, after a job's last result, for the last usage report
#: of each worker that ran it (sent once the worker holds none of its bundles).
USAGE_WAIT_SECONDS = 5.0


def wait_for_usage(reports_to_come: Callable[[], int], poll_seconds: float = 0.1) -> None:
    """Wait, USAGE_WAIT_SECONDS at most, until no worker has a report of a job to come."""
    deadline = time.monotonic() + USAGE_WAIT_SECONDS
    while reports_to_come() and time.monotonic() < deadline:
        time.sleep(poll_seconds)


class Usage(msgspec.Struct, gc=False, omit_defaults=True):
    """What some work used: billed request units, payload sent, instance time."""

    instance_seconds: Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)] = 0.0
    sqs_requests: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # one per 64 KiB
    dynamodb_writes: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # write units
    dynamodb_reads: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # read units
    bytes_sent: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # request payloads
    s3_writes: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # PUT, COPY, POST, LIST
    s3_reads: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # GET, HEAD
    s3_bytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0  # objects sent and fetched

    @property
    def aws_requests(self) -> int:
        """Billed SQS, DynamoDB and S3 request units in all."""
        return (
            self.sqs_requests
            + self.dynamodb_writes
            + self.dynamodb_reads
            + self.s3_writes
            + self.s3_reads
        )

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.instance_seconds + other.instance_seconds,
            self.sqs_requests + other.sqs_requests,
            self.dynamodb_writes + other.dynamodb_writes,
            self.dynamodb_reads + other.dynamodb_reads,
            self.bytes_sent + other.bytes_sent,
            self.s3_writes + other.s3_writes,
            self.s3_reads + other.s3_reads,
            self.s3_bytes + other.s3_bytes,
        )

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(
            self.instance_seconds - other.instance_seconds,
            self.sqs_requests - other.sqs_requests,
            self.dynamodb_writes - other.dynamodb_writes,
            self.dynamodb_reads - other.dynamodb_reads,
            self.bytes_sent - other.bytes_sent,
            self.s3_writes - other.s3_writes,
            self.s3_reads - other.s3_reads,
            self.s3_bytes - other.s3_bytes,
        )

    def __bool__(self) -> bool:
        return self != Usage()

    def figures(self) -> dict[str, object]:
        """As ``--summary`` and the API show it."""
        return {
            "instance_seconds": round(self.instance_seconds, 6),
            "aws_requests": self.aws_requests,
            "usage": msgspec.structs.asdict(self),
        }


def sqs_units(payload_bytes: int) -> int:
    """Billed SQS requests for one call with this payload."""
    return max(1, math.ceil(payload_bytes / SQS_BILLING_CHUNK_BYTES))


def sqs_payload(params: dict[str, Any]) -> int:
    """The payload SQS bills a call for: the bodies of the messages it sends (a
    receive's is counted as it is answered; other calls have none)."""
    entries = params.get("Entries") or [params]
    return sum(len(entry.get("MessageBody", "").encode()) for entry in entries)


def _length(body: object) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    return 0  # a streamed body: none of ours is


#: The meter's key for calls counted apart (``UsageMeter.apart``): no job's id.
_APART = "\0apart"


class UsageMeter:
    """Counts the billed use of the clients it watches, per job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str | None, Usage] = {}
        self._context = threading.local()

    def watch(self, client: Any) -> Any:
        """Count ``client``'s SQS, DynamoDB or S3 calls from now on; returns it."""
        events = client.meta.events
        events.register("before-parameter-build.sqs", self._on_sqs_params)
        events.register("before-send.sqs", self._on_sqs_send)
        events.register("after-call.sqs.ReceiveMessage", self._on_sqs_received)
        events.register("before-send.dynamodb", self._on_dynamodb_send)
        events.register("before-send.s3", self._on_s3_send)
        events.register("after-call.s3.GetObject", self._on_s3_fetched)
        # After every attempt, whether it is tried again or not.
        events.register("needs-retry.sqs", self._on_attempt)
        events.register("needs-retry.dynamodb", self._on_attempt)
        events.register("needs-retry.s3", self._on_attempt)
        return client

    @contextmanager
    def charged_to(self, job: str | None) -> Iterator[None]:
        """Charge this thread's calls, while in the block, to ``job`` (None: to
        nobody: the fleet's overhead)."""
        earlier = self._job()
        self._context.job = job
        try:
            yield
        finally:
            self._context.job = earlier

    @contextmanager
    def apart(self, spent: list[Usage]) -> Iterator[None]:
        """Count this thread's calls in the block apart from every job's: what
        they cost is appended to ``spent`` (for calls already charged ahead).
        One thread at a time."""
        with self.charged_to(_APART):
            try:
                yield
            finally:
                spent.append(self.take(_APART))

    def charge(self, job: str | None, usage: Usage) -> None:
        with self._lock:
            self._by_job[job] = self._by_job.get(job, Usage()) + usage

    def move(self, usage: Usage, source: str | None, target: str | None) -> None:
        """Charge to ``target`` what was charged to ``source`` (a receive's cost,
        once it is known whose bundles it brought)."""
        with self._lock:
            self._by_job[source] = self._by_job.get(source, Usage()) - usage
            self._by_job[target] = self._by_job.get(target, Usage()) + usage

    def take(self, job: str | None) -> Usage:
        """What ``job`` used since the last take; counting starts again from zero."""
        with self._lock:
            return self._by_job.pop(job, Usage())

    def jobs(self) -> list[str]:
        """Jobs with usage not taken yet."""
        with self._lock:
            return [job for job, usage in self._by_job.items() if job is not None and usage]

    def _job(self) -> str | None:
        """The job this thread's calls are charged to now."""
        job: str | None = getattr(self._context, "job", None)
        return job

    def _charge_call(self, usage: Usage) -> None:
        self.charge(self._job(), usage)
        self._context.last = usage

    def last_call(self) -> Usage:
        """What this thread's last counted call cost."""
        last: Usage = getattr(self._context, "last", Usage())
        return last

    def _on_sqs_params(self, params: dict[str, Any], **_: Any) -> None:
        # Once a call, before its attempts: each attempt is charged as it is sent.
        self._context.sqs_payload = sqs_payload(params)

    def _on_sqs_send(self, **_: Any) -> None:
        size: int = getattr(self._context, "sqs_payload", 0)
        self._charge_call(Usage(sqs_requests=sqs_units(size), bytes_sent=size))

    def _on_attempt(self, response: object = None, **_: Any) -> None:
        if response is None:  # no answer: take the attempt back
            self.charge(self._job(), Usage() - self.last_call())
            self._context.last = Usage()

    def _on_sqs_received(self, parsed: dict[str, Any], **_: Any) -> None:
        received = sum(len(m.get("Body", "").encode()) for m in parsed.get("Messages", []))
        extra = sqs_units(received) - 1  # the call itself was counted as it was sent
        if extra:
            usage = Usage(sqs_requests=extra)
            self.charge(self._job(), usage)
            self._context.last = self.last_call() + usage

    def _on_dynamodb_send(self, request: Any, event_name: str, **_: Any) -> None:
        size = _length(request.body)
        if event_name.rsplit(".", 1)[-1] in DYNAMODB_WRITES:
            units = max(1, math.ceil(size / DYNAMODB_WRITE_UNIT_BYTES))
            self._charge_call(Usage(dynamodb_writes=units, bytes_sent=size))
        else:
            self._charge_call(Usage(dynamodb_reads=1, bytes_sent=size))

    def _on_s3_send(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation in S3_FREE:
            return
        # A file's body is streamed: its length is in the header.
        size = int(request.headers.get("Content-Length") or 0)
        if operation in S3_WRITES:
            self._charge_call(Usage(s3_writes=1, s3_bytes=size))
        else:
            self._charge_call(Usage(s3_reads=1))

    def _on_s3_fetched(self, parsed: dict[str, Any], **_: Any) -> None:
        """An object fetched: its bytes (the call was counted as it was sent)."""
        usage = Usage(s3_bytes=int(parsed.get("ContentLength") or 0))
        self.charge(self._job(), usage)
        self._context.last = self.last_call() + usage
