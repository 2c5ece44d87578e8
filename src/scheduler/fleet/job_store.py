"""Fleet jobs kept in the stack: state, settings and records, shared by every client.

A job on the fleet belongs to the stack, not to the client that submitted it.
Its ``meta`` item in the job table holds its state, settings and who submitted
it; its results come back on a queue of its own (the stack's job queue prefix
and its id), made at submission. A worker stores the records it sends as
record items of the job, spread over the job's shards (``worker.record_items``),
before it sends them, and marks the messages so; whoever reads the queue —
the client that submitted the job, `taskfleet results --stack` on another
machine, a scheduler service — stores what it reads that no worker stored (a
dead bundle's failures) before it deletes the messages, so no reader ever
deletes a result that is not kept, and any number of readers may come and
go. Records are read back in the order they were stored, each task's last
attempt counting (a duplicate delivery stores a second copy of the same
outcome, which readers skip). DynamoDB's TTL ends a job's items after the
stack's retention; a job queue left by a client that died is deleted by the
next submission once it is older than the retention.
"""

import contextlib
import datetime
import gzip
import heapq
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.errors import FleetError, JobNotFoundError
from worker.bundle import UsageReport
from worker.contracts import JobItem
from worker.jobs import NO_SUCH_QUEUE
from worker.record_items import (
    LATE_SECONDS,
    compressed_pieces,
    key_seconds_before,
    record_item,
    record_partitions,
    usage_reports_json,
)
from worker.result import Result, decode
from worker.usage import Usage

log = logging.getLogger("taskfleet.scheduler")

#: Largest list of file names a fleet job's item keeps, as JSON bytes (the
#: records name every task's file; the item lists as many as fit, and the count).
MAX_FILES_BYTES = 64 * 1024

#: Seconds a client reading a job's queue holds it, renewed while it reads: a
#: client that dies leaves the job to any reader this long after.
READER_LEASE_SECONDS = 60.0

#: Job queues a sweep looks at for expiry, at the most (each is a request).
SWEEP_LIMIT = 5

#: The share of submissions that sweep for stale job queues: a stale queue (its
#: client died before the job ended) waits a few more submissions, and the rest
#: save the sweep's requests.
SWEEP_SHARE = 0.1


class FleetJob(NamedTuple):
    """A fleet job's meta item, as the stack keeps it."""

    id: str
    state: str  # JobItem.RUNNING, CANCELLED or DONE
    total: int
    files: list[str]
    submitted_by: str
    submitted_at: float
    ended_at: float | None
    timeout: float  # seconds per task, 0 for none
    retries: int
    stored: int  # records stored, duplicates included: exact counts come from the records
    tail: Usage  # what instances used for no job, charged by the workers that ran it last
    reader_until: float  # a client reads its queue until then (epoch seconds)
    file_count: int
    record_shards: int  # its workers' record partitions (0: a job kept before them)

    @property
    def has_reader(self) -> bool:
        """Whether a live client reads the job's queue into the stack."""
        return self.reader_until > time.time()

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class JobRecords(NamedTuple):
    """What a reader of a job's records found: one record per task, and usage."""

    records: dict[str, bytes]  # task id -> its last record stored (a JSON line)
    attempts: dict[str, int]  # task id -> the attempt of that record
    usage: Usage
    read_to: dict[str, str]  # partition -> the sort key of its last record item read
    reports: frozenset[str]  # the usage reports counted, by id: a redelivery counts once
    # The record items read, by partition and key, that a sweep may read again:
    # those no more than LATE_SECONDS behind the last key read in their partition.
    seen: frozenset[tuple[str, str]]
    swept_at: float  # when items that landed behind later keys were last looked for


class JobStore:
    """The job table and job queues of one deployed stack."""

    def __init__(
        self,
        dynamodb: Any,
        sqs: Any,
        *,
        table: str,
        queue_prefix: str,
        retention_days: int,
        key: str = "",
    ) -> None:
        """``key``: the stack's KMS key (its ARN), which the job queues are then
        encrypted with; empty: SQS's own key."""
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.table = table
        self.queue_prefix = queue_prefix
        self.retention_seconds = retention_days * 24 * 3600
        self._encryption = {"KmsMasterKeyId": key} if key else {"SqsManagedSseEnabled": "true"}
        # Records the lease holder stored and has not added to the job's count yet:
        # added with its next lease renewal or the job's end, not a write a store.
        self._uncounted: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- submitting ------------------------------------------------------------

    def create(
        self,
        job_id: str,
        *,
        files: list[str],
        total: int,
        timeout: float,
        retries: int,
        submitted_by: str,
        record_shards: int,
    ) -> str | None:
        """Keep a job in the stack and make its result queue; returns the queue's URL.
        The caller is taken to read the queue: it holds the job's reader lease.

        Made again (a scheduler restarted, or a call retried after a failure
        half-way), a running job keeps its item and gets its queue, made if
        missing; a job that has ended gets None: nothing of it is read any more.
        """
        files_json = json.dumps(files_within(files, MAX_FILES_BYTES))
        now = time.time()
        item = {
            JobItem.PARTITION: {"S": job_id},
            JobItem.SORT: {"S": JobItem.META},
            JobItem.STATE: {"S": JobItem.RUNNING},
            JobItem.DAY: {"S": day_of(now)},
            JobItem.TTL: {"N": str(int(now + self.retention_seconds))},
            "submitted_at": {"N": f"{now:.3f}"},
            "submitted_by": {"S": submitted_by},
            "files": {"S": files_json},
            "file_count": {"N": str(len(files))},
            "total": {"N": str(total)},
            "timeout": {"N": repr(float(timeout))},
            "retries": {"N": str(retries)},
            "stored": {"N": "0"},
            "record_shards": {"N": str(record_shards)},
            "reader_until": {"N": f"{now + READER_LEASE_SECONDS:.3f}"},
        }
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#job)",
                ExpressionAttributeNames={"#job": JobItem.PARTITION},
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            kept = self.job(job_id)
            if kept.ended:
                return None
            if kept.record_shards < record_shards:
                # Its workers now store over more shards (the stack's fleet grew
                # since): readers query as many, never fewer.
                self._set_shards(job_id, record_shards)
        # The same name and attributes again: SQS answers the queue made before.
        url: str = self.sqs.create_queue(
            QueueName=self.queue_prefix + job_id,
            Attributes={
                # Results wait for a reader as long as the job is kept (SQS keeps 14 days).
                "MessageRetentionPeriod": str(min(self.retention_seconds, 14 * 24 * 3600)),
                **self._encryption,
                "ReceiveMessageWaitTimeSeconds": "20",
            },
            tags={"taskfleet:job": job_id},
        )["QueueUrl"]
        if random.random() < SWEEP_SHARE:
            self.sweep_stale_queues(keep=job_id)
        return url

    def _set_shards(self, job_id: str, shards: int) -> None:
        self._update(
            job_id,
            "SET record_shards = :n",
            {":n": {"N": str(shards)}},
            condition="(attribute_not_exists(record_shards) OR record_shards < :n)",
        )

    def sweep_stale_queues(self, keep: str = "") -> int:
        """Delete job queues older than the retention (their jobs have expired:
        a client died before their results were all read); returns how many."""
        try:
            urls: list[str] = self.sqs.list_queues(QueueNamePrefix=self.queue_prefix).get(
                "QueueUrls", []
            )
        except (BotoCoreError, ClientError) as error:
            log.warning("could not list the job queues: %s", error)
            return 0
        others = [url for url in urls if not url.endswith("/" + self.queue_prefix + keep)]
        stale = 0
        # A few at a time, picked at random: long-lived queues do not hide the rest.
        for url in random.sample(others, min(SWEEP_LIMIT, len(others))):
            try:
                created = float(
                    self.sqs.get_queue_attributes(
                        QueueUrl=url, AttributeNames=["CreatedTimestamp"]
                    )["Attributes"]["CreatedTimestamp"]
                )
                if time.time() - created > self.retention_seconds:
                    self.sqs.delete_queue(QueueUrl=url)
                    stale += 1
            except (BotoCoreError, ClientError, KeyError, ValueError) as error:
                log.warning("could not look at job queue %s: %s", url, error)
        return stale

    # -- reading a job ---------------------------------------------------------

    def job(self, job_id: str) -> FleetJob:
        """A job's meta item; JobNotFoundError if the stack has none (or it expired)."""
        item = self.dynamodb.get_item(
            TableName=self.table,
            Key=_meta_key(job_id),
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise JobNotFoundError(f"no job {job_id!r} on this stack (or it expired)")
        return _fleet_job(item)

    def recent(self) -> list[FleetJob]:
        """The jobs kept (those of the retention), newest first."""
        now = time.time()
        days = int(self.retention_seconds // 86400) + 1
        jobs: list[FleetJob] = []
        for back in range(days):
            query: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": JobItem.DAY_INDEX,
                "KeyConditionExpression": "#day = :day",
                "ExpressionAttributeNames": {"#day": JobItem.DAY},
                "ExpressionAttributeValues": {":day": {"S": day_of(now - back * 86400)}},
                "ScanIndexForward": False,
            }
            for page in self._pages(query):
                jobs.extend(_fleet_job(item) for item in page)
        return jobs

    def hold_reader(self, job_id: str, *, release: bool = False) -> float:
        """Note that a client reads the job's queue, for the next
        READER_LEASE_SECONDS: other readers then only read the store, and neither
        take results from under it nor end the job (``release``: it reads no
        more, and they may at once). Returns until when."""
        until = 0.0 if release else time.time() + READER_LEASE_SECONDS
        values = {":until": {"N": f"{until:.3f}"}}
        with self._counting(job_id) as count:
            self._update(
                job_id,
                "SET reader_until = :until" + count.expression,
                values | count.values,
                names=count.names,
            )
        return until

    def queue_url(self, job_id: str) -> str | None:
        """The job's result queue; None once it is gone (the job ended or expired)."""
        try:
            url: str = self.sqs.get_queue_url(QueueName=self.queue_prefix + job_id)["QueueUrl"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in NO_SUCH_QUEUE:
                return None
            raise
        return url

    def records(
        self, job: FleetJob, starts: dict[str, str] | None = None
    ) -> Iterator[tuple[str, str, bytes, list[Any]]]:
        """A job's record items from ``starts`` on (partition -> the lowest sort key
        to read), in the order of their keys across its partitions: (partition,
        key, JSON Lines, usage reports as dicts)."""
        partitions = record_partitions(job.id, job.record_shards)
        return heapq.merge(
            *(
                self._records_in(partition, (starts or {}).get(partition))
                for partition in partitions
            ),
            key=lambda found: found[1],
        )

    def _records_in(
        self, partition: str, start: str | None
    ) -> Iterator[tuple[str, str, bytes, list[Any]]]:
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#job = :job AND #item BETWEEN :start AND :end",
            "ExpressionAttributeNames": {"#job": JobItem.PARTITION, "#item": JobItem.SORT},
            "ExpressionAttributeValues": {
                ":job": {"S": partition},
                ":start": {"S": start or JobItem.RECORDS_PREFIX},
                ":end": {"S": JobItem.RECORDS_PREFIX + "\uffff"},
            },
            "ConsistentRead": True,
        }
        for page in self._pages(query):
            for item in page:
                usage = json.loads(item.get("usage", {}).get("S", "[]"))
                lines = gzip.decompress(item["records"]["B"])
                yield partition, item[JobItem.SORT]["S"], lines, usage

    def read_all(self, job: FleetJob, known: JobRecords | None = None) -> JobRecords:
        """Every record of a job, one per task, and what it used: ``known``'s and
        those stored since it was read. A task's record is its last attempt's (a
        retry's comes after the failure it retries, from whichever worker), the
        last stored of that attempt (a duplicate delivery repeats its outcome).
        A line that is not a record of a task of the job is skipped (logged).

        Each partition is read on from the last key read there; every half of
        LATE_SECONDS, from LATE_SECONDS before it, for an item that landed
        behind a later key (items already read are skipped by key)."""
        records = dict(known.records) if known else {}
        attempts = dict(known.attempts) if known else {}
        counted = set(known.reports) if known else set()
        usage = known.usage if known else Usage()
        read_to = dict(known.read_to) if known else {}
        seen = set(known.seen) if known else set()
        now = time.monotonic()
        sweep = known is None or now - known.swept_at >= LATE_SECONDS / 2
        starts = {
            partition: key_seconds_before(key, LATE_SECONDS) if sweep else key + "\x00"
            for partition, key in read_to.items()
        }
        file_count = job.file_count or len(job.files)
        strangers = 0
        for partition, key, lines, usage_reports in self.records(job, starts):
            if (partition, key) in seen:
                continue
            seen.add((partition, key))
            read_to[partition] = max(key, read_to.get(partition, ""))
            for line in lines.splitlines(keepends=True):
                result = _record_of(line)
                if result is None or not is_task_of(result, job.id, file_count):
                    strangers += 1
                elif result.attempt >= attempts.get(result.id, 0):
                    records[result.id], attempts[result.id] = line, result.attempt
            for report in usage_reports:
                if report["id"] not in counted:
                    counted.add(report["id"])
                    usage = usage + Usage(**report["usage"])
        if strangers:
            log.warning("skipped %d stored lines that are no record of job %s", strangers, job.id)
        swept_at = now if sweep or known is None else known.swept_at
        # Keys a sweep no longer reaches need not be remembered: the set stays
        # the size of LATE_SECONDS of items, however long the job.
        floors = {p: key_seconds_before(key, LATE_SECONDS) for p, key in read_to.items()}
        recent = frozenset((p, key) for p, key in seen if key >= floors[p])
        return JobRecords(records, attempts, usage, read_to, frozenset(counted), recent, swept_at)

    # -- storing what a reader read ----------------------------------------------

    def store(
        self,
        job_id: str,
        results: list[Result],
        reports: list[UsageReport],
        *,
        reading: bool = False,
    ) -> None:
        """Keep results and usage reports read from the job's queue: one item per
        MAX_RECORD_ITEM_BYTES of compressed records, and their count on the job's
        item; ``reading`` (by the client holding the reader lease): the count is
        added with the lease's next renewal or the job's end (``hold_reader``,
        ``end``), which a store each would make a hot item."""
        pieces = compressed_pieces(results)
        usage = usage_reports_json([(r.report_id, r.usage) for r in reports])
        expires_at = int(time.time() + self.retention_seconds)
        for number, (compressed, _) in enumerate(pieces or [(gzip.compress(b""), 0)]):
            item = record_item(job_id, compressed, usage if number == 0 else "[]", expires_at)
            self.dynamodb.put_item(TableName=self.table, Item=item)
        self.count(job_id, sum(count for _, count in pieces), reading=reading)

    def count(self, job_id: str, count: int, *, reading: bool = False) -> None:
        """Add ``count`` records stored (by a reader, or by the workers that sent
        them) to the job's count; ``reading``: as ``store`` takes it."""
        if reading:
            with self._lock:
                self._uncounted[job_id] = self._uncounted.get(job_id, 0) + count
        elif count:
            values = {":n": {"N": str(count)}}
            self._update(job_id, "ADD #stored :n", values, names={"#stored": "stored"})

    @contextlib.contextmanager
    def _counting(self, job_id: str) -> Iterator["StoredCount"]:
        """The records stored and not counted yet, as an update's clause; put back
        if the update fails."""
        with self._lock:
            count = self._uncounted.pop(job_id, 0)
        try:
            yield StoredCount(count)
        except BaseException:
            with self._lock:
                self._uncounted[job_id] = self._uncounted.get(job_id, 0) + count
            raise

    # -- changing a job's state --------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Cancel a running job: workers stop its tasks (within CANCEL_CHECK_SECONDS
        of reading it); False if it had ended already."""
        return self._set_state(job_id, JobItem.CANCELLED, ended=False)

    def end(self, job_id: str, queue_url: str | None = None, *, records: int | None = None) -> None:
        """A job's records are all stored: mark it done (a cancelled job stays
        cancelled), their count added (``records``: set to that, by a reader that
        read them all from the store, where its workers stored more than it
        collected), and delete its queue (``queue_url``, if the caller knows it)."""
        with self._counting(job_id) as counted:
            count = counted if records is None else StoredCount(records, exact=True)
            if not self._set_state(job_id, JobItem.DONE, ended=True, count=count):
                self._update(
                    job_id,
                    "SET ended_at = :now" + count.expression,
                    {":now": {"N": f"{time.time():.3f}"}} | count.values,
                    condition="attribute_not_exists(ended_at)",
                    names=count.names,
                )
        url = queue_url or self.queue_url(job_id)
        if url is not None:
            with contextlib.suppress(self.sqs.exceptions.QueueDoesNotExist):
                self.sqs.delete_queue(QueueUrl=url)

    def _set_state(
        self, job_id: str, state: str, *, ended: bool, count: "StoredCount | None" = None
    ) -> bool:
        count = count or StoredCount(0)
        values = {":state": {"S": state}, ":running": {"S": JobItem.RUNNING}} | count.values
        update = "SET #state = :state"
        if ended:
            update += ", ended_at = :now"
            values[":now"] = {"N": f"{time.time():.3f}"}
        names = {"#state": JobItem.STATE} | count.names
        return self._update(
            job_id, update + count.expression, values, condition="#state = :running", names=names
        )

    def _update(
        self,
        job_id: str,
        update: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
    ) -> bool:
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": _meta_key(job_id),
            "UpdateExpression": update,
            "ExpressionAttributeValues": values,
        }
        # Never create a meta item: only a job that exists is changed.
        request["ConditionExpression"] = "attribute_exists(#job)" + (
            f" AND {condition}" if condition else ""
        )
        request["ExpressionAttributeNames"] = {"#job": JobItem.PARTITION, **(names or {})}
        try:
            self.dynamodb.update_item(**request)
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _pages(self, query: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        while True:
            answer = self.dynamodb.query(**query)
            yield answer.get("Items", [])
            if "LastEvaluatedKey" not in answer:
                return
            query = {**query, "ExclusiveStartKey": answer["LastEvaluatedKey"]}


class StoredCount(NamedTuple):
    """Records to add to a job's count, as a clause of an update."""

    records: int
    exact: bool = False  # the count itself, not one to add

    @property
    def expression(self) -> str:
        """Follows an update's SET clause."""
        if self.exact:
            return ", #stored = :stored"
        return " ADD #stored :stored" if self.records else ""

    @property
    def values(self) -> dict[str, Any]:
        return {":stored": {"N": str(self.records)}} if self.records or self.exact else {}

    @property
    def names(self) -> dict[str, str]:
        return {"#stored": "stored"} if self.records or self.exact else {}


def day_of(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d")


def _meta_key(job_id: str) -> dict[str, Any]:
    return {JobItem.PARTITION: {"S": job_id}, JobItem.SORT: {"S": JobItem.META}}


def tail_of(item: dict[str, Any]) -> Usage:
    """The tail the workers charged to a job (``tail_<Usage field>`` attributes)."""
    figures = {
        name.removeprefix(JobItem.TAIL_PREFIX): json.loads(value["N"])
        for name, value in item.items()
        if name.startswith(JobItem.TAIL_PREFIX)
        and name.removeprefix(JobItem.TAIL_PREFIX) in Usage.__struct_fields__
    }
    try:
        return msgspec.convert(figures, Usage)
    except msgspec.ValidationError as error:
        raise FleetError(f"a job item of the stack is not taskfleet's: {error}") from error


def _fleet_job(item: dict[str, Any]) -> FleetJob:
    try:
        return FleetJob(
            id=item[JobItem.PARTITION]["S"],
            state=item[JobItem.STATE]["S"],
            total=int(item["total"]["N"]),
            files=json.loads(item["files"]["S"]),
            submitted_by=item["submitted_by"]["S"],
            submitted_at=float(item["submitted_at"]["N"]),
            ended_at=float(item["ended_at"]["N"]) if "ended_at" in item else None,
            timeout=float(item["timeout"]["N"]),
            retries=int(item["retries"]["N"]),
            stored=int(item.get("stored", {"N": "0"})["N"]),
            tail=tail_of(item),
            reader_until=float(item.get("reader_until", {"N": "0"})["N"]),
            file_count=int(item.get("file_count", {"N": "0"})["N"]),
            record_shards=int(item.get("record_shards", {"N": "0"})["N"]),
        )
    except (KeyError, ValueError) as error:
        raise FleetError(f"a job item of the stack is not taskfleet's: {error}") from error


def _record_of(line: bytes) -> Result | None:
    try:
        return decode(line)
    except msgspec.MsgspecError:
        return None


def is_task_of(result: Result, job_id: str, file_count: int) -> bool:
    """Whether a result names a task of the job: its id is the job's, a file number
    of the job's, and the result's own line."""
    job, _, rest = result.id.partition(":")
    number, _, line = rest.partition(":")
    return (
        job == job_id == result.job
        and number.isdigit()
        and 1 <= int(number) <= file_count
        and line == str(result.line)
    )


def caller_identity(sts: Any) -> str:
    """Who is calling AWS (an ARN), for the jobs list; "unknown" if STS won't say."""
    try:
        return str(sts.get_caller_identity()["Arn"])
    except (BotoCoreError, ClientError, KeyError):
        return "unknown"


def files_within(files: list[str], limit: int) -> list[str]:
    """The first of ``files`` whose names, as JSON, take ``limit`` bytes at most."""
    kept: list[str] = []
    size = len("[]") - len(", ")  # json.dumps's own separator, none before the first
    for name in files:
        size += len(json.dumps(name)) + len(", ")
        if size > limit:
            break
        kept.append(name)
    return kept
