"""The scale model's arithmetic on cases worked out by hand."""

import pytest
from bench.scale_model import (
    LIMITS,
    BundleLife,
    Reader,
    Stack,
    bundle_sizes,
    job_requests,
    send_calls,
    steady,
)

MINUTE_MS = 60_000
MINUTE = 60.0002  # a built-in sleep of a minute, as the bundle sizer costs it


def test_a_bundle_of_minute_tasks_on_two_slots() -> None:
    life = BundleLife(tasks=15, task_ms=MINUTE_MS, slots=2, visibility_timeout=60)
    # Eight waves of two; each wave's two results go out together, a second
    # after they end; a heartbeat every 20 s of the 480 s it is held.
    assert life.seconds == pytest.approx(8 * MINUTE)
    assert life.results_per_send == 2
    assert life.sends == 8
    assert life.heartbeats == 24
    assert life.requests() == {
        "sqs DeleteMessage": 1,
        "sqs ChangeMessageVisibility": 24,
        "dynamodb UpdateItem": 1 + 7 + 24 + 1,  # claim, progress, leases, done
        "dynamodb PutItem": 8,  # each send's records kept in the job's shards
        "sqs SendMessageBatch": 8,
    }


def test_quick_tasks_report_by_bytes() -> None:
    # 256 bytes a sleep's result toward REPORT_BYTES (768 KiB): 3,072 a send.
    life = BundleLife(tasks=10_000, task_ms=0, slots=2, visibility_timeout=60)
    assert life.results_per_send == 3072
    assert life.sends == 4


def test_bundles_are_cut_as_the_feeder_cuts_them() -> None:
    # 1,000 sleep 0: 0.2 s of work, under the 2 s a bundle holds at least.
    assert bundle_sizes(1_000, 0, 4) == [1_000]
    # A long job of minute tasks: bundles of 900 s at the most.
    assert bundle_sizes(10_000, MINUTE_MS, 4, first_only=True) == [15]


def test_bundles_are_sent_ten_to_a_call_fifty_cut_at_a_time() -> None:
    assert send_calls(1) == 1
    assert send_calls(50) == 5
    assert send_calls(51) == 6


def test_the_workers_of_a_one_bundle_job() -> None:
    worker = job_requests(1_000, 0, 2, Stack(slots=2, idle_timeout=5))["worker"]
    assert worker == {
        "sqs ReceiveMessage": 2,  # the bundle, then one empty poll (idle after 5 s)
        "sqs DeleteMessage": 1,
        "sqs ChangeMessageVisibility": 0,
        # claim, done, and what it used for no job (its idle tail, its empty
        # poll) charged to the job as it leaves
        "dynamodb UpdateItem": 3,
        # the results, their final report counting their own send, the claim's
        # done and the delete ahead; the job's queue is named, not looked up
        "sqs SendMessageBatch": 1,
        "dynamodb PutItem": 1,  # the results kept as they go
        "dynamodb GetItem": 1,
    }


def test_steady_rates_of_minute_tasks_on_ten_instances() -> None:
    model = steady(10, MINUTE_MS, Stack(slots=2), Reader(round_trip=0.01, record_cpu=0.0))
    bundles = 20 / (15 * MINUTE)  # a second
    assert model.bundle_tasks == 15
    assert model.records_per_second == pytest.approx(20 / MINUTE)
    # Each bundle: received, deleted, 24 visibility changes, a tenth of a send;
    # and the client reads the queue's depth every 10 s to size the group.
    assert model.rates["request queue"] == pytest.approx(bundles * (1 + 0.1 + 1 + 24) + 0.1)
    assert model.rates["claim table"] == pytest.approx(bundles * 33)
    # Eight messages a bundle, each received alone: a send, a receive, a delete.
    assert model.rates["the job's queue"] == pytest.approx(bundles * 8 * 3)
    # A record item a send, by the workers, on the job's shards (20 slots: two);
    # the job's partition: the reader lease (and the count) every 20 s, each
    # instance's state read every 5 s.
    assert model.shards == 2
    assert model.rates["record shards"] == pytest.approx(bundles * 8)
    assert model.rates["job's partition"] == pytest.approx(1 / 20 + 2)
    uses = dict(zip(LIMITS, model.uses.values(), strict=True))
    assert uses[LIMITS[2]] == pytest.approx(10 / 5 * 0.5 / 3000)
    # Two results' records gzipped are well under a KiB: a write unit an item.
    assert uses[LIMITS[0]] == pytest.approx(bundles * 8 / 2 / 1000)
    # The reader: a receive and a delete a delivery, its idle long poll of the
    # dead-letter queue and its lease every 20 s.
    reader = bundles * 8 * 2 + 1 / 20 + 1 / 20
    assert model.reader_requests_per_record == pytest.approx(reader / (20 / MINUTE))


def test_the_client_reads_the_request_queues_depth_while_bundles_are_open() -> None:
    # Once as the bundle goes, then every 10 s: the fleet's 12 s start and the 0.2 s of work.
    stack = Stack(slots=2, idle_timeout=5, start_seconds=12)
    assert job_requests(1_000, 0, 2, stack)["client"]["sqs GetQueueAttributes"] == 2
