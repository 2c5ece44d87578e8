"""Record items as both ends make them: shards, keys, pieces, and their cost."""

import gzip
import secrets
import time

from worker import record_items
from worker.contracts import JobItem
from worker.result import Outcome, Result, Status, make_result
from worker.usage import Usage


def record(line: int, stdout: str = "") -> Result:
    now = time.time()
    outcome = Outcome(Status.SUCCEEDED, 0, now, now, 1.0, stdout=stdout, stderr="")
    return make_result(f"j1:1:{line}", "j1", "w.txt", line, "echo", "i-1", outcome)


def test_a_fleet_gets_a_shard_per_16_slots_and_64_at_the_most() -> None:
    assert [record_items.shards_for(n) for n in (0, 1, 16, 17, 32, 2000, 10**6)] == [
        1, 1, 1, 2, 2, 64, 64,
    ]  # fmt: skip
    assert record_items.record_partitions("j1", 2) == ["j1", "j1#00", "j1#01"]


def test_an_item_holds_the_attributes_the_workers_grant_names_and_no_other() -> None:
    item = record_items.record_item("j1#00", gzip.compress(b""), "[]", 1)
    assert tuple(item) == record_items.RECORD_ATTRIBUTES


def test_the_items_of_a_send_are_on_the_jobs_shards_the_report_on_the_first() -> None:
    place = record_items.RecordPlace(shards=3, expires_at=2_000_000_000)
    noise = [record(n, secrets.token_hex(3000)) for n in range(1, 200)]  # about 1.2 MB
    pieces = record_items.compressed_pieces(noise)
    assert len(pieces) > 1
    assert sum(count for _, count in pieces) == 199
    items = record_items.sent_items("j1", place, pieces, ("i-1/x/1", Usage(sqs_requests=2)))
    assert {item[JobItem.PARTITION]["S"] for item in items} <= {"j1#00", "j1#01", "j1#02"}
    assert [item["usage"]["S"] != "[]" for item in items] == [True] + [False] * (len(items) - 1)
    assert all(item[JobItem.TTL]["N"] == "2000000000" for item in items)


def test_a_key_so_many_seconds_before_another_sorts_before_it() -> None:
    key = record_items.record_key()
    earlier = record_items.key_seconds_before(key, record_items.LATE_SECONDS)
    assert earlier < key
    made = int(key[len(JobItem.RECORDS_PREFIX) :].split("-")[0])
    assert int(earlier[len(JobItem.RECORDS_PREFIX) :]) == made - 60 * 10**9
