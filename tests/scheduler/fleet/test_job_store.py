"""The stack's job store on a real moto_server: jobs, their queues and their records."""

import gzip
import json
import secrets
import time
from typing import Any

import boto3
import msgspec
import pytest

from scheduler.errors import JobNotFoundError
from scheduler.fleet import job_store
from scheduler.fleet.job_store import JobStore
from tests.conftest import create_job_table
from worker import record_items
from worker.bundle import UsageReport
from worker.contracts import JobItem
from worker.jobs import JobStates
from worker.result import Outcome, Result, Status, make_result
from worker.usage import Usage, UsageMeter


@pytest.fixture
def store(moto_endpoint: str) -> JobStore:
    assert moto_endpoint  # boto3 here reaches it
    dynamodb: Any = boto3.client("dynamodb")
    create_job_table(dynamodb, "jobs")
    sqs: Any = boto3.client("sqs")
    return JobStore(dynamodb, sqs, table="jobs", queue_prefix="Stack_job_", retention_days=7)


def record(job: str, line: int, status: Status = Status.SUCCEEDED, stdout: str = "") -> Result:
    now = time.time()
    outcome = Outcome(status, 0, now, now, 1.0, stdout=stdout, stderr="")
    return make_result(f"{job}:1:{line}", job, "w.txt", line, "echo", "i-1", outcome)


def create(store: JobStore, job: str, total: int = 3, shards: int = 2) -> str | None:
    return store.create(
        job,
        files=["w.txt"],
        total=total,
        timeout=5.0,
        retries=0,
        submitted_by="arn:me",
        record_shards=shards,
    )


def test_a_job_is_kept_with_its_settings_and_a_queue_of_its_own(store: JobStore) -> None:
    url = create(store, "a1")
    assert url is not None
    assert url.endswith("/Stack_job_a1")
    assert store.queue_url("a1") == url
    job = store.job("a1")
    assert (job.state, job.total, job.files, job.timeout) == (JobItem.RUNNING, 3, ["w.txt"], 5.0)
    assert job.submitted_by == "arn:me"
    assert not job.ended
    assert [j.id for j in store.recent()] == ["a1"]
    with pytest.raises(JobNotFoundError, match="no job 'zz'"):
        store.job("zz")


def test_the_tails_workers_charge_add_up_on_the_job(store: JobStore) -> None:
    create(store, "a1")
    states = JobStates(store.dynamodb, "jobs")
    assert states.charge_tail("a1", Usage(instance_seconds=300.25, sqs_requests=15))
    assert states.charge_tail("a1", Usage(instance_seconds=12.5, dynamodb_writes=1))
    assert store.job("a1").tail == Usage(
        instance_seconds=312.75, sqs_requests=15, dynamodb_writes=1
    )
    assert not states.charge_tail("zz", Usage(instance_seconds=1.0))  # no such job: none made
    with pytest.raises(JobNotFoundError):
        store.job("zz")


def test_a_job_queue_takes_the_stacks_key_if_it_has_one(store: JobStore) -> None:
    def encryption(url: str) -> dict[str, str]:
        attributes = store.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        names = ("KmsMasterKeyId", "SqsManagedSseEnabled")
        return {k: v for k, v in attributes["Attributes"].items() if k in names}

    assert encryption(str(create(store, "a1"))) == {"SqsManagedSseEnabled": "true"}
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    keyed = JobStore(
        store.dynamodb,
        store.sqs,
        table="jobs",
        queue_prefix="Stack_job_",
        retention_days=7,
        key=key,
    )
    assert encryption(str(create(keyed, "a2")))["KmsMasterKeyId"] == key


def test_records_are_read_back_once_per_task_with_their_usage(store: JobStore) -> None:
    create(store, "a1")
    report = UsageReport("i-1/x", 1, "a1", Usage(instance_seconds=2.0, sqs_requests=3))
    store.store("a1", [record("a1", 1), record("a1", 2, Status.FAILED)], [report])
    # A duplicate delivery: the same task again, and the same report again.
    store.store("a1", [record("a1", 2, Status.FAILED)], [report])
    first = store.read_all(store.job("a1"))
    assert sorted(first.records) == ["a1:1:1", "a1:1:2"]
    assert first.usage == Usage(instance_seconds=2.0, sqs_requests=3)
    store.store("a1", [record("a1", 3)], [])
    later = store.read_all(store.job("a1"), first)  # only what was stored since
    assert sorted(later.records) == ["a1:1:1", "a1:1:2", "a1:1:3"]
    assert later.usage == first.usage
    assert store.job("a1").stored == 4  # duplicates counted here, not in the records


def test_the_lease_holders_stores_are_counted_with_its_renewals_and_the_jobs_end(
    store: JobStore,
) -> None:
    create(store, "a1", total=5)
    store.store("a1", [record("a1", 1), record("a1", 2)], [], reading=True)
    store.store("a1", [record("a1", 3)], [], reading=True)
    assert store.job("a1").stored == 0  # no write a store: the meta item is not hot
    until = store.hold_reader("a1")
    job = store.job("a1")
    assert job.stored == 3
    assert job.reader_until == pytest.approx(until, abs=0.01)
    store.store("a1", [record("a1", 4), record("a1", 5)], [], reading=True)
    store.end("a1")
    job = store.job("a1")
    assert (job.stored, job.state) == (5, JobItem.DONE)
    assert len(store.read_all(store.job("a1")).records) == 5


def test_records_are_cut_into_items_by_their_compressed_size(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record_items, "MAX_RECORD_ITEM_BYTES", 4096)
    # 20 kB of output that compresses: one item.
    create(store, "a1", total=20)
    store.store("a1", [record("a1", n, stdout="x" * 1000) for n in range(1, 21)], [])
    assert len(list(store.records(store.job("a1")))) == 1
    # 20 kB that does not: as many items as it takes, each within the bound.
    create(store, "a2", total=20)
    noise = [secrets.token_hex(500) for _ in range(20)]
    store.store("a2", [record("a2", n, stdout=noise[n - 1]) for n in range(1, 21)], [])
    items = store.dynamodb.query(
        TableName="jobs",
        KeyConditionExpression="#job = :job AND begins_with(#item, :rec)",
        ExpressionAttributeNames={"#job": JobItem.PARTITION, "#item": JobItem.SORT},
        ExpressionAttributeValues={":job": {"S": "a2"}, ":rec": {"S": "rec#"}},
    )["Items"]
    assert len(items) >= 3  # hex: half its size gzipped, so 10 kB at the least
    assert all(len(item["records"]["B"]) <= 4096 for item in items)
    records = store.read_all(store.job("a2")).records
    assert {json.loads(line)["stdout"] for line in records.values()} == set(noise)
    assert store.job("a2").stored == 20


def test_a_cancelled_job_stays_cancelled_when_it_ends_and_its_queue_goes(store: JobStore) -> None:
    create(store, "a1")
    assert store.cancel("a1")
    assert not store.cancel("a1")  # once
    store.end("a1")
    job = store.job("a1")
    assert (job.state, job.ended) == (JobItem.CANCELLED, True)
    assert store.queue_url("a1") is None
    assert not store.cancel("a1")


def test_a_job_ends_done_once(store: JobStore) -> None:
    create(store, "a1")
    store.end("a1")
    ended_at = store.job("a1").ended_at
    store.end("a1")
    assert store.job("a1").state == JobItem.DONE
    assert store.job("a1").ended_at == ended_at


def test_queues_older_than_the_retention_are_swept(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(store, "old")
    create(store, "new")
    assert store.sweep_stale_queues() == 0
    # A week and a day later, the job that nobody read has expired: its queue goes.
    later = time.time() + 8 * 86400
    monkeypatch.setattr("scheduler.fleet.job_store.time.time", lambda: later)
    assert store.sweep_stale_queues(keep="new") == 1
    assert store.queue_url("old") is None
    assert store.queue_url("new") is not None


def test_a_job_made_again_keeps_its_item_and_gets_its_queue_until_it_ends(
    store: JobStore,
) -> None:
    url = create(store, "a1")
    store.store("a1", [record("a1", 1)], [])
    assert create(store, "a1") == url  # a restarted scheduler, or a retried call
    assert store.job("a1").stored == 1  # the item kept, not made anew
    store.sqs.delete_queue(QueueUrl=url)  # failed half-way: the item, no queue
    assert create(store, "a1") == url
    store.end("a1")
    assert create(store, "a1") is None


def test_a_job_keeps_as_many_file_names_as_fit_and_their_count(store: JobStore) -> None:
    names = [f"workload-{n:05}.txt" for n in range(10_000)]  # 210 KB as JSON
    kept = job_store.files_within(names, job_store.MAX_FILES_BYTES)
    assert 0 < len(kept) < len(names)
    assert names[: len(kept)] == kept
    assert len(json.dumps(kept)) <= job_store.MAX_FILES_BYTES
    assert len(json.dumps(names[: len(kept) + 1])) > job_store.MAX_FILES_BYTES
    store.create(
        "j1",
        files=names,
        total=1,
        timeout=1.0,
        retries=0,
        submitted_by="arn:me",
        record_shards=1,
    )
    job = store.job("j1")
    assert (job.files, job.file_count) == (kept, 10_000)


def test_records_the_workers_store_on_the_jobs_shards_are_read_with_the_readers(
    store: JobStore,
) -> None:
    create(store, "a1", total=3, shards=4)
    states = JobStates(store.dynamodb, "jobs")
    place = record_items.RecordPlace(shards=4, expires_at=int(time.time()) + 3600)
    retried = msgspec.structs.replace(record("a1", 2), attempt=2)
    # The retry's record is stored first: its attempt, not its place, makes it the last.
    for results, report in (
        ([retried], ("i-2/x/1", Usage(sqs_requests=1))),
        ([record("a1", 1), record("a1", 2, Status.FAILED)], ("i-1/x/1", Usage(sqs_requests=2))),
    ):
        pieces = record_items.compressed_pieces(results)
        states.store(record_items.sent_items("a1", place, pieces, report))
    store.store("a1", [record("a1", 3, Status.FAILED)], [])  # a dead bundle's, by a reader
    partitions = {
        item[JobItem.PARTITION]["S"]
        for item in store.dynamodb.scan(TableName="jobs")["Items"]
        if item[JobItem.SORT]["S"].startswith(JobItem.RECORDS_PREFIX)
    }
    assert partitions <= {"a1", "a1#00", "a1#01", "a1#02", "a1#03"}
    assert "a1" in partitions
    assert len(partitions) >= 2
    records = store.read_all(store.job("a1"))
    statuses = {task: json.loads(line)["status"] for task, line in records.records.items()}
    assert statuses == {"a1:1:1": "succeeded", "a1:1:2": "succeeded", "a1:1:3": "failed"}
    assert records.usage == Usage(sqs_requests=3)
    assert set(records.read_to) == partitions
    assert store.read_all(store.job("a1"), records) == records  # nothing new: the same


def test_a_job_made_again_on_a_larger_fleet_is_read_over_its_new_shards(store: JobStore) -> None:
    create(store, "a1", shards=2)
    create(store, "a1", shards=8)
    assert store.job("a1").record_shards == 8
    create(store, "a1", shards=1)  # bundles of both still run: never fewer
    assert store.job("a1").record_shards == 8


def test_a_puts_cost_is_known_before_it_is_made(store: JobStore) -> None:
    meter = UsageMeter()
    states = JobStates(meter.watch(store.dynamodb), "jobs")
    place = record_items.RecordPlace(shards=1, expires_at=int(time.time()) + 3600)
    noise = [record("a1", n, stdout=secrets.token_hex(400)) for n in range(1, 30)]
    items = record_items.sent_items(
        "a1", place, record_items.compressed_pieces(noise), ("i-1/x/1", Usage(sqs_requests=7))
    )
    predicted = sum((record_items.put_cost("jobs", item) for item in items), Usage())
    assert predicted.dynamodb_writes > 1
    with meter.charged_to("a1"):
        states.store(items)
    assert meter.take("a1") == predicted


def test_a_reader_that_read_every_record_from_the_store_sets_the_count_as_it_ends_the_job(
    store: JobStore,
) -> None:
    create(store, "a1", total=3)
    store.count("a1", 1)  # what it collected; the workers stored the rest
    store.end("a1", records=3)
    job = store.job("a1")
    assert (job.stored, job.state) == (3, JobItem.DONE)


def test_stored_lines_that_are_no_record_of_a_task_of_the_job_are_skipped(
    store: JobStore,
) -> None:
    create(store, "a1", total=2)
    states = JobStates(store.dynamodb, "jobs")
    place = record_items.RecordPlace(shards=2, expires_at=int(time.time()) + 3600)
    other_job = msgspec.structs.replace(record("a1", 2), id="b7:1:2", job="b7")
    no_such_file = msgspec.structs.replace(record("a1", 2), id="a1:9:2")
    pieces = record_items.compressed_pieces([record("a1", 1), other_job, no_such_file])
    pieces.append((gzip.compress(b"not a record\n"), 1))
    states.store(record_items.sent_items("a1", place, pieces, ("i-1/x/1", Usage())))
    assert list(store.read_all(store.job("a1")).records) == ["a1:1:1"]


def test_an_item_that_lands_behind_a_key_already_read_is_found_within_late_seconds(
    store: JobStore,
) -> None:
    create(store, "a1", total=2, shards=1)
    place = record_items.RecordPlace(shards=1, expires_at=int(time.time()) + 3600)
    report = ("i-1/x/1", Usage())

    def item(line: int) -> dict[str, Any]:
        pieces = record_items.compressed_pieces([record("a1", line)])
        (made,) = record_items.sent_items("a1", place, pieces, report)
        return made

    late = item(2)  # its key made now, its put held up (a slow network)
    store.dynamodb.put_item(TableName="jobs", Item=item(1))
    first = store.read_all(store.job("a1"))
    assert list(first.records) == ["a1:1:1"]
    store.dynamodb.put_item(TableName="jobs", Item=late)
    assert store.read_all(store.job("a1"), first).records == first.records  # read on from its key
    due = first._replace(swept_at=first.swept_at - record_items.LATE_SECONDS)
    swept = store.read_all(store.job("a1"), due)
    assert sorted(swept.records) == ["a1:1:1", "a1:1:2"]
    assert len(swept.seen) == 2  # the first item read once


def test_a_reader_forgets_the_keys_of_items_no_sweep_reads_again(store: JobStore) -> None:
    create(store, "a1", total=2, shards=1)
    place = record_items.RecordPlace(shards=1, expires_at=int(time.time()) + 3600)
    report = ("i-1/x/1", Usage())
    (old, new) = (
        record_items.sent_items(
            "a1", place, record_items.compressed_pieces([record("a1", n)]), report
        )[0]
        for n in (1, 2)
    )
    # The first item's key made two minutes before the second's: a sweep, which
    # starts LATE_SECONDS behind the last key read, never reaches it again.
    made = time.time_ns() - int(2 * record_items.LATE_SECONDS * 1e9)
    old[JobItem.SORT] = {"S": f"{JobItem.RECORDS_PREFIX}{made:020d}-00000000"}
    for item in (old, new):
        store.dynamodb.put_item(TableName="jobs", Item=item)
    read = store.read_all(store.job("a1"))
    assert sorted(read.records) == ["a1:1:1", "a1:1:2"]
    assert [key for _, key in read.seen] == [new[JobItem.SORT]["S"]]
