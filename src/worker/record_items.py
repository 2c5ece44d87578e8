"""A fleet job's result records as items of the job table: gzipped JSON Lines.

Both ends write them: a worker stores the records it sends (the bundle says
where: ``RecordPlace``), and a reader stores what arrives that no worker
stored (a dead bundle's failures, say). A job's record items are spread over
partitions so that a job on a large fleet writes past one partition's
1,000 write units a second: the workers write to the job's shards
(``<job>#<k>``, one of ``RecordPlace.shards`` at random), the readers to the
job's own partition, beside its meta item; readers of the job query each.
"""

import gzip
import json
import math
import random
import secrets
import time
from typing import Annotated, Any

import msgspec

from worker.contracts import JobItem
from worker.result import Result, encode_lines
from worker.usage import DYNAMODB_WRITE_UNIT_BYTES, Usage

#: Largest record item written, in bytes: under DynamoDB's 400 KB item limit.
MAX_RECORD_ITEM_BYTES = 350 * 1024

#: Most shards a job's worker-stored records are spread over.
MAX_RECORD_SHARDS = 64

#: Slots of a fleet per shard: a slot of 1 ms tasks writes about 15 write units
#: a second of records, so 16 slots keep a shard under a quarter of a partition's
#: 1,000 (bench/scale_model.py).
SLOTS_PER_RECORD_SHARD = 16


class RecordPlace(msgspec.Struct, frozen=True, gc=False):
    """Where a bundle's worker stores its records: over how many shards, and
    when they expire (the job's retention, epoch seconds)."""

    shards: Annotated[int, msgspec.Meta(ge=1, le=MAX_RECORD_SHARDS)]
    expires_at: Annotated[int, msgspec.Meta(ge=0)]


def shards_for(fleet_slots: int) -> int:
    """How many shards a job's records get on a fleet of ``fleet_slots`` slots."""
    return min(MAX_RECORD_SHARDS, max(1, math.ceil(fleet_slots / SLOTS_PER_RECORD_SHARD)))


def shard_partition(job_id: str, shard: int) -> str:
    # Two digits for every shard: an item's size, and so its cost, is known
    # before its shard is picked.
    return f"{job_id}{JobItem.SHARD_SEPARATOR}{shard:02d}"


def record_partitions(job_id: str, shards: int) -> list[str]:
    """Every partition a job's records may be in: its own, then its shards'."""
    return [job_id, *(shard_partition(job_id, shard) for shard in range(shards))]


#: Seconds after its key's time by which a record item has landed, if ever: a
#: worker makes the key just before its put, whose one attempt takes seconds at
#: most (``worker.sqs.PROMPT_CALL_SECONDS`` twice), and clocks agree within
#: far less. A reader that reads on from the last key it saw reads this much
#: again, every half of it, for items that landed behind that key.
LATE_SECONDS = 60


def record_key() -> str:
    """A record item's sort key: after every key stored before it (clocks agreeing)."""
    return f"{JobItem.RECORDS_PREFIX}{time.time_ns():020d}-{secrets.token_hex(4)}"


def key_seconds_before(key: str, seconds: float) -> str:
    """The lowest key made ``seconds`` before ``key`` was."""
    made = int(key[len(JobItem.RECORDS_PREFIX) :].split("-", 1)[0])
    return f"{JobItem.RECORDS_PREFIX}{max(0, made - int(seconds * 1e9)):020d}"


def compressed_pieces(results: list[Result]) -> list[tuple[bytes, int]]:
    """Results as gzipped JSON Lines, with their counts, in as few pieces as fit
    an item each once compressed (records compress about tenfold)."""
    lines = encode_lines(results).splitlines(keepends=True)
    return _pieces_of(lines) if lines else []


def _pieces_of(lines: list[bytes]) -> list[tuple[bytes, int]]:
    compressed = gzip.compress(b"".join(lines))
    if len(compressed) <= MAX_RECORD_ITEM_BYTES or len(lines) == 1:
        return [(compressed, len(lines))]  # one record fits: its output is bounded
    half = len(lines) // 2
    return _pieces_of(lines[:half]) + _pieces_of(lines[half:])


#: A record item's attributes, all of them (the workers' grant names these alone).
RECORD_ATTRIBUTES = (JobItem.PARTITION, JobItem.SORT, JobItem.TTL, "records", "usage")


def record_item(
    partition: str, compressed: bytes, usage_reports: str, expires_at: int
) -> dict[str, Any]:
    """A record item: ``usage_reports`` is a JSON list of {"id", "usage"}."""
    return {
        JobItem.PARTITION: {"S": partition},
        JobItem.SORT: {"S": record_key()},
        JobItem.TTL: {"N": str(expires_at)},
        "records": {"B": compressed},
        "usage": {"S": usage_reports},
    }


def sent_items(
    job_id: str,
    place: RecordPlace,
    pieces: list[tuple[bytes, int]],
    report: tuple[str, Usage],
) -> list[dict[str, Any]]:
    """The record items a worker stores for results it sends (``compressed_pieces``),
    each on one of the job's shards at random; the first holds the send's usage
    report."""
    usage = usage_reports_json([report])
    return [
        record_item(
            shard_partition(job_id, random.randrange(place.shards)),
            compressed,
            usage if number == 0 else "[]",
            place.expires_at,
        )
        for number, (compressed, _) in enumerate(pieces)
    ]


_encoder = json.JSONEncoder(separators=(",", ":"))


def usage_reports_json(reports: list[tuple[str, Usage]]) -> str:
    """Usage reports, by id, as a record item keeps them."""
    return _encoder.encode(
        [{"id": report_id, "usage": msgspec.structs.asdict(usage)} for report_id, usage in reports]
    )


def put_cost(table: str, item: dict[str, Any]) -> Usage:
    """What storing ``item`` costs, as the usage meter counts it: a write unit
    per started KiB of the request (botocore's JSON, blobs in base64: 4 bytes
    for every 3, counted rather than encoded)."""
    blobs = {name: value["B"] for name, value in item.items() if "B" in value}
    rest = {name: {"B": ""} if name in blobs else value for name, value in item.items()}
    size = len(json.dumps({"TableName": table, "Item": rest}).encode()) + sum(
        4 * math.ceil(len(blob) / 3) for blob in blobs.values()
    )
    return Usage(
        dynamodb_writes=max(1, math.ceil(size / DYNAMODB_WRITE_UNIT_BYTES)), bytes_sent=size
    )
