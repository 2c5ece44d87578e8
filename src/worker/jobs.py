"""What a worker asks the stack about a bundle's job: where its results go, and
whether it was cancelled.

Each fleet job has a result queue of its own, made by the client that
submitted it and named the stack's job queue prefix and the job id, so that
any number of clients share one stack and each reads only its own job's
results. A job's state lives in the job table; a worker looks at it when it
takes a bundle and every CANCEL_CHECK_SECONDS while it holds one, and stops
the job's tasks once it reads ``cancelled``.
"""

import logging
import time
from typing import Any

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from worker.contracts import JobItem
from worker.record_items import record_key
from worker.usage import Usage

log = logging.getLogger("taskfleet.worker")

#: Seconds a job's state, once read, is taken as known: how soon a worker sees
#: a cancellation, against one read per job held every so often.
CANCEL_CHECK_SECONDS = 5.0

#: Jobs whose state a worker remembers; past it, it forgets them all (a worker
#: may run for weeks).
REMEMBERED_JOBS = 1000

#: What SQS answers for a queue that does not exist (the query and JSON protocols).
NO_SUCH_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


class JobQueues:
    """Each job's result queue; ``fallback``: where results go when the stack
    names no job queues (a worker started by hand, say)."""

    def __init__(self, request_queue_url: str, prefix: str | None, fallback: str) -> None:
        self.account_url = request_queue_url.rsplit("/", 1)[0]  # the stack's queues share it
        self.prefix = prefix
        self.fallback = fallback

    def url(self, job: str) -> str:
        """The job's result queue: named the stack's prefix and the job id, in the
        stack's account, so no look-up is asked (SQS names a queue by its URL's
        last part). It may not exist: the job ended (every result stored, or
        cancelled and collected) or expired, or its queue was made a moment ago
        and is not seen yet (``JobStates.ended`` tells which); a send to it
        then fails with ``is_no_such_queue``."""
        if self.prefix is None:
            return self.fallback
        return f"{self.account_url}/{self.prefix}{job}"


def is_no_such_queue(error: Exception) -> bool:
    """Whether an SQS call failed because its queue does not exist."""
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in (
        NO_SUCH_QUEUE
    )


class JobStates:
    """Whether a job was cancelled, read from the job table at most every
    CANCEL_CHECK_SECONDS per job; the job's records, stored as they are sent
    (``worker.record_items``); and what an instance's idle tail adds to the
    last job it ran."""

    def __init__(self, dynamodb: Any, table: str | None, *, records: Any = None) -> None:
        """``records``: the client that puts record items (``dynamodb`` if None)."""
        self.dynamodb = dynamodb
        self.records = records or dynamodb
        self.table = table
        self._known: dict[str, tuple[float, bool]] = {}  # job -> (read at, cancelled)
        self._ended: set[str] = set()  # jobs read as ended: their records are kept no more

    def cancelled(self, job: str) -> bool:
        """Whether the job is cancelled (for good, once read so); a failed read
        counts as not yet."""
        if self.table is None:
            return False
        now = time.monotonic()
        known = self._known.get(job)
        if known is not None and (known[1] or now - known[0] < CANCEL_CHECK_SECONDS):
            return known[1]
        if len(self._known) >= REMEMBERED_JOBS:
            self._known.clear()
        try:
            item = self.dynamodb.get_item(
                TableName=self.table,
                Key={JobItem.PARTITION: {"S": job}, JobItem.SORT: {"S": JobItem.META}},
                ProjectionExpression="#state",
                ExpressionAttributeNames={"#state": JobItem.STATE},
            ).get("Item", {})
        except (BotoCoreError, ClientError) as error:
            log.warning("could not read the state of job %s: %s", job, error)
            return known[1] if known is not None else False
        cancelled: bool = item.get(JobItem.STATE, {}).get("S") == JobItem.CANCELLED
        self._known[job] = (now, cancelled)
        return cancelled

    def ended(self, job: str) -> bool:
        """Whether the job has ended in the stack (or expired: it has no item), read
        now; with no job table, a job without a queue counts as ended."""
        if self.table is None:
            return True
        item = self.dynamodb.get_item(
            TableName=self.table,
            Key={JobItem.PARTITION: {"S": job}, JobItem.SORT: {"S": JobItem.META}},
            ProjectionExpression="#state, ended_at",
            ExpressionAttributeNames={"#state": JobItem.STATE},
            ConsistentRead=True,
        ).get("Item")
        ended = item is None or "ended_at" in item
        if ended:
            if len(self._ended) >= REMEMBERED_JOBS:
                self._ended.clear()
            self._ended.add(job)
        return ended

    def keeps(self, job: str) -> bool:
        """Whether a job's records are to be stored as they are sent: there is a
        job table, and the job was not read as ended (a bundle drained after its
        job was collected reports to nobody)."""
        return self.table is not None and job not in self._ended

    def store(self, items: list[dict[str, Any]]) -> None:
        """Put record items in the job table (made by ``record_items.sent_items``),
        each keyed as it goes (a key of the same length as the one it was made
        with: its cost counted ahead stays right)."""
        for item in items:
            keyed = {**item, JobItem.SORT: {"S": record_key()}}
            self.records.put_item(TableName=self.table or "", Item=keyed)

    def charge_tail(self, job: str, tail: Usage) -> bool:
        """Add what an instance used for no job (its idle tail, slots left empty,
        long polls that found nothing) to the last job it ran, on the job's meta
        item, one attribute a figure; False if it could not (the job has expired,
        or the write failed: logged)."""
        if self.table is None:
            return False
        figures = {name: value for name, value in msgspec.structs.asdict(tail).items() if value}
        if not figures:
            return True
        names = {f"#t{n}": JobItem.TAIL_PREFIX + name for n, name in enumerate(figures)}
        values = {
            f":t{n}": {"N": f"{value:.3f}" if isinstance(value, float) else str(value)}
            for n, value in enumerate(figures.values())
        }
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={JobItem.PARTITION: {"S": job}, JobItem.SORT: {"S": JobItem.META}},
                UpdateExpression="ADD " + ", ".join(f"#t{n} :t{n}" for n in range(len(figures))),
                ConditionExpression="attribute_exists(#job)",  # never make a meta item
                ExpressionAttributeNames={**names, "#job": JobItem.PARTITION},
                ExpressionAttributeValues=values,
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            log.info("job %s has expired: its instance's idle tail is charged to none", job)
            return False
        except (BotoCoreError, ClientError) as error:
            log.warning("could not charge the idle tail to job %s: %s", job, error)
            return False
        return True
