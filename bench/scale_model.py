"""A model of the AWS requests a fleet job makes, from the code's own constants, and
where the design saturates.

    python -m bench.scale_model                        # the tables of docs/scale.md
    python -m bench.scale_model --round-trip-ms 10 --record-cpu-us 46

One accounting of a bundle's life (``BundleLife``: what a worker asks of the
request queue, the claim table and the job's queue while it runs one bundle)
serves two uses:

- ``job_requests``: every request of one finite job of built-in sleeps, by
  party (client, worker) and kind ("sqs ReceiveMessage"): what
  ``bench/fleet_requests.py --only model`` checks against the emulator;
- ``steady``: requests per second on each queue and table while one job keeps
  N instances of S slots busy with tasks of one length, and how much of each
  limit that uses (SQS in-flight messages, the job's DynamoDB partition, one
  reader's time).

The numbers come from the code: bundle sizes from ``BundleSizer`` itself, the
reporting rule from ``worker/bundle_run.py``, heartbeats from
``worker/remote.py``, cancellation checks from ``worker/jobs.py``, polls from
``worker/contracts.py`` and ``scheduler/fleet/aws.py``, record items from
``scheduler/fleet/job_store.py``. Two figures are not the code's and are
options: the round trip of one request from the reader (SQS and DynamoDB in
the same region) and the reader's CPU per record (measured by
``bench/fleet_requests.py``).
"""

import argparse
import functools
import gzip
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.fleet.bundle_sizing import BundleSizer
from scheduler.fleet.feeder import BUNDLES_PER_TURN
from scheduler.fleet.job_store import READER_LEASE_SECONDS, SWEEP_SHARE
from scheduler.fleet.link import MAX_RECEIVERS_PER_JOB, PROVISION_INTERVAL_SECONDS
from worker.bundle import MESSAGE_HEADROOM_BYTES
from worker.bundle_run import REPORT_BYTES, REPORT_INTERVAL_SECONDS, result_bytes
from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGE_BYTES, MAX_MESSAGES_PER_CALL, Default
from worker.jobs import CANCEL_CHECK_SECONDS
from worker.record_items import MAX_RECORD_ITEM_BYTES, shards_for
from worker.remote import HEARTBEATS_PER_TIMEOUT, REPORT_TICK_SECONDS
from worker.result import Outcome, Result, Status, encode_lines, make_result

#: SQS: most in-flight messages of a standard queue.
SQS_IN_FLIGHT_LIMIT = 120_000

#: DynamoDB: most write and read units a second on one partition.
PARTITION_WCU = 1_000
PARTITION_RCU = 3_000

#: DynamoDB: a table's default most write units a second (on-demand, account quota).
TABLE_WCU = 40_000

#: The reader's round trip per SQS or DynamoDB request, in seconds, and its CPU
#: per record (decoding, gzip, the journal, the output): the defaults of the
#: options. The CPU figure is what `bench/fleet_requests.py` measured on this VM.
ROUND_TRIP_SECONDS = 0.010
RECORD_CPU_SECONDS = 46e-6

#: Seconds of fleet work a steady-state job holds (it sizes the bundles).
STEADY_JOB_FLEET_SECONDS = 3600.0

#: Where a job's requests go, as the bench counts them: (party, "service Operation").
Requests = dict[str, Counter[str]]


@dataclass(frozen=True)
class Stack:
    """The stack's settings the requests depend on (the stack's defaults)."""

    slots: int = 2
    visibility_timeout: float = Default.VISIBILITY_TIMEOUT_SECONDS
    idle_timeout: float = Default.IDLE_TIMEOUT_SECONDS
    poll_seconds: float = LONG_POLL_SECONDS  # the workers' long poll
    # Seconds from a job's bundles sent to its first task started (instances
    # booting): not the code's, an assumption (the emulator's is measured).
    start_seconds: float = 60.0


@dataclass(frozen=True)
class Reader:
    """What one reader of a job's queue (the client) spends per request and per record."""

    round_trip: float = ROUND_TRIP_SECONDS
    record_cpu: float = RECORD_CPU_SECONDS


def sleep_text(task_ms: float) -> str:
    return f"sleep {round(task_ms)}"


def task_seconds(task_ms: float) -> float:
    """What a built-in sleep costs, as the bundle sizer reckons it."""
    return BundleSizer().cost(sleep_text(task_ms))


def sample_results(task_ms: float, count: int) -> list[Result]:
    """Records like those of built-in sleeps on the fleet: a workload's full path,
    times to the microsecond, durations a little over the sleep (seeded: the
    same records every time)."""
    jitter = random.Random(0)
    started = 1.7e9
    results = []
    for line in range(1, count + 1):
        started += task_ms / 2000 + jitter.random() / 1000
        duration = task_ms + jitter.random() / 10
        outcome = Outcome(
            Status.SUCCEEDED, 0, round(started, 6), round(started + duration / 1000, 7),
            round(duration, 3),
        )  # fmt: skip
        results.append(
            make_result(f"0123abcd:1:{line}", "0123abcd", "/home/someone/work/workload.txt",
                        line, sleep_text(task_ms), "i-0123456789abcdef0", outcome)
        )  # fmt: skip
    return results


@dataclass(frozen=True)
class RecordSizes:
    """Bytes of one sleep record: in a result message, and gzipped in a record item."""

    message: float
    compressed: float
    report: int  # what it counts toward REPORT_BYTES

    @classmethod
    def of(cls, task_ms: float, per_item: int) -> "RecordSizes":
        return _record_sizes(task_ms, max(per_item, 1))


@functools.cache
def _record_sizes(task_ms: float, count: int) -> RecordSizes:
    results = sample_results(task_ms, count)
    lines = encode_lines(results)
    compressed = len(gzip.compress(lines))
    return RecordSizes(len(lines) / count, compressed / count, result_bytes(results[0]))


def bundle_sizes(
    tasks: int, task_ms: float, fleet_slots: int, *, first_only: bool = False
) -> list[int]:
    """The bundles a job of ``tasks`` sleeps is cut into, as the feeder cuts them."""
    sizer = BundleSizer()
    text = sleep_text(task_ms)
    sizes: list[int] = []
    remaining = tasks
    while remaining:
        view = min(sizer.view, remaining)
        taken = max(1, sizer.cut([text] * view, remaining, fleet_slots))
        sizes.append(taken)
        remaining -= taken
        if first_only:
            break
    return sizes


@dataclass(frozen=True)
class BundleLife:
    """What a worker of ``slots`` slots asks while it runs a bundle of ``tasks`` sleeps.

    The slots run the bundle's tasks together (a worker takes another bundle
    only when fewer tasks wait than it has slots), so its tasks end in waves
    of ``slots``. Results go out when the oldest waiting one has waited
    REPORT_INTERVAL_SECONDS (seen at the reporter's next tick: half a tick
    later on average), when REPORT_BYTES of them wait, and when the bundle
    ends; each send but the last records progress in the claim.
    """

    tasks: int
    task_ms: float
    slots: int
    visibility_timeout: float

    @property
    def seconds(self) -> float:
        """How long the worker holds it."""
        return math.ceil(self.tasks / self.slots) * task_seconds(self.task_ms)

    @property
    def results_per_send(self) -> int:
        waited = REPORT_INTERVAL_SECONDS + REPORT_TICK_SECONDS / 2
        waves = math.floor(waited / task_seconds(self.task_ms)) + 1
        by_bytes = math.ceil(REPORT_BYTES / RecordSizes.of(self.task_ms, 1).report)
        return max(1, min(by_bytes, waves * self.slots))

    @property
    def sends(self) -> int:
        return math.ceil(self.tasks / self.results_per_send)

    @property
    def messages_per_send(self) -> int:
        size = RecordSizes.of(self.task_ms, 1).message * min(self.results_per_send, self.tasks)
        return math.ceil(size / (MAX_MESSAGE_BYTES - MESSAGE_HEADROOM_BYTES))

    @property
    def heartbeats(self) -> int:
        return math.floor(self.seconds / (self.visibility_timeout / HEARTBEATS_PER_TIMEOUT))

    @property
    def items_per_send(self) -> int:
        """Record items the worker stores a send (cut by their gzipped size)."""
        return item_pieces(min(self.results_per_send, self.tasks), self.task_ms)

    def requests(self) -> Counter[str]:
        """The worker's requests for the bundle (its receive counted by the caller)."""
        return Counter({
            "sqs DeleteMessage": 1,
            "sqs ChangeMessageVisibility": self.heartbeats,
            # claim, progress after each send but the last, lease renewals, done
            "dynamodb UpdateItem": 1 + (self.sends - 1) + self.heartbeats + 1,
            # each send's records kept in the job's shards before they go
            "dynamodb PutItem": self.sends * self.items_per_send,
            "sqs SendMessageBatch": self.sends * math.ceil(
                self.messages_per_send / MAX_MESSAGES_PER_CALL
            ),
        })  # fmt: skip


def delivery_seconds(
    messages: float, records_per_message: float, reader: Reader, receivers: int = 1
) -> float:
    """The reader's seconds for one delivery of ``messages`` result messages: a
    receive and a delete (its round trips; the workers stored the records), and
    its CPU for the records (the receiver waits until they are journaled). With
    ``receivers`` side by side (a backed-up queue), their round trips overlap;
    the CPU is one process's."""  # fmt: skip
    records = messages * records_per_message
    requests = 1 + math.ceil(messages / MAX_MESSAGES_PER_CALL)
    return requests * reader.round_trip / receivers + records * reader.record_cpu


def reader_batch(messages_per_second: float, records_per_message: float, reader: Reader) -> float:
    """How many messages one receive of the job's queue brings: what arrived while
    the last delivery was stored, at least one, at most ten."""  # fmt: skip
    per_delivery = 1.0
    for _ in range(50):  # a fixed point: more arrive while a bigger delivery is stored
        seconds = delivery_seconds(per_delivery, records_per_message, reader)
        per_delivery = min(float(MAX_MESSAGES_PER_CALL), max(1.0, messages_per_second * seconds))
    return per_delivery


def item_pieces(records: float, task_ms: float) -> int:
    """Record items one delivery of ``records`` records is stored as: cut by their
    gzipped size."""
    compressed = RecordSizes.of(task_ms, max(1, round(records))).compressed * records
    return max(1, math.ceil(compressed / MAX_RECORD_ITEM_BYTES))


def job_requests(
    tasks: int, task_ms: float, instances: int, stack: Stack, reader: Reader = Reader()
) -> Requests:
    """Every SQS, DynamoDB and S3 request of one `taskfleet run --remote` of ``tasks``
    built-in sleeps of ``task_ms`` on a stack of ``instances`` x ``stack.slots``,
    from the first request until the fleet is back at zero: by party and kind."""
    slots = stack.slots
    sizes = bundle_sizes(tasks, task_ms, instances * slots)
    used = min(instances, math.ceil(len(sizes) / slots))
    lives = [BundleLife(size, task_ms, slots, stack.visibility_timeout) for size in sizes]
    seconds = sum(life.seconds for life in lives) / used  # the job on the fleet
    worker: Counter[str] = Counter()
    for life in lives:
        worker.update(life.requests())
    # A worker's first receive takes a bundle per free slot; later ones, one each.
    first = min(slots, math.ceil(len(sizes) / used))
    worker["sqs ReceiveMessage"] += len(sizes) - used * (first - 1)
    # Once the queue is empty, each worker long-polls until it has been idle
    # for the idle timeout, counted from the end of its last bundle.
    tail = lives[-1].seconds + stack.idle_timeout
    worker["sqs ReceiveMessage"] += used * math.ceil(tail / stack.poll_seconds)
    # Per worker and job: the job's state read when a bundle is taken and every
    # CANCEL_CHECK_SECONDS while one is held (the job's queue is named, not
    # looked up; a bundle's ending calls and its last send are counted in its
    # last, final, report); as it leaves, what it used for no job (its idle
    # tail, its empty polls) charged to the job's meta item, in one write.
    worker["dynamodb GetItem"] += used * (math.floor(seconds / CANCEL_CHECK_SECONDS) + 1)
    worker["dynamodb UpdateItem"] += used

    messages = sum(life.sends * life.messages_per_send for life in lives)
    per_message = tasks / messages
    per_delivery = reader_batch(messages / max(seconds, 1.0), per_message, reader)
    deliveries = math.ceil(messages / per_delivery)
    client = Counter({
        # the job kept (meta item, the reader lease with it), its queue made,
        # stale queues looked for at one submission in ten (SWEEP_SHARE)
        "dynamodb PutItem": 1,
        "sqs CreateQueue": 1,
        "sqs ListQueues": SWEEP_SHARE,
        "sqs SendMessageBatch": send_calls(len(sizes)),
        # each delivery: received, journaled, deleted (its workers stored it);
        # the reader lease renewed every third of it, with the count of the
        # records stored since, and the job marked done (the last count with it)
        "sqs ReceiveMessage": deliveries,
        "dynamodb UpdateItem": math.floor(seconds / (READER_LEASE_SECONDS / 3)) + 1,
        "sqs DeleteMessageBatch": deliveries,
        "sqs DeleteQueue": 1,  # by the URL its reader knows
    })  # fmt: skip
    # The group sized from the request queue's depth as the bundles go, then
    # every PROVISION_INTERVAL_SECONDS while bundles are open.
    open_seconds = stack.start_seconds + seconds
    client["sqs GetQueueAttributes"] = math.ceil(len(sizes) / BUNDLES_PER_TURN) + math.floor(
        open_seconds / PROVISION_INTERVAL_SECONDS
    )
    # The dead-letter queue's long poll, per LONG_POLL_SECONDS the client runs
    # (a `run --remote` reads no response queue: its results come on its job's).
    client["sqs ReceiveMessage"] += math.ceil(seconds / LONG_POLL_SECONDS)
    return {"client": client, "worker": worker}


def send_calls(bundles: int) -> int:
    """SendMessageBatch calls for a job's bundles: cut BUNDLES_PER_TURN at a time,
    sent ten to a call."""
    turns, rest = divmod(bundles, BUNDLES_PER_TURN)
    return turns * math.ceil(BUNDLES_PER_TURN / MAX_MESSAGES_PER_CALL) + math.ceil(
        rest / MAX_MESSAGES_PER_CALL
    )


@dataclass
class Steady:
    """One job keeping ``instances`` x ``slots`` busy: requests a second by place,
    and each limit's use (1.0: reached)."""

    instances: int
    task_ms: float
    bundle_tasks: int
    records_per_second: float
    rates: dict[str, float] = field(default_factory=dict)
    uses: dict[str, float] = field(default_factory=dict)
    reader_requests_per_record: float = 0.0
    reader_seconds_per_record: float = 0.0
    shards: int = 1


#: One reader's time: a limit of that client's copy of the records, not the stack's.
READER = "one reader's time (1 s a second)"

#: The limits, as ``Steady.uses`` names them.
LIMITS = (
    "job table: a record shard's writes (1,000 WCU/s a partition)",
    "job table: writes (40,000 WCU/s a table, on demand)",
    "job table: the job's partition, reads (3,000 RCU/s)",
    READER,
    "request queue: in-flight messages (120,000)",
    "claim table: writes (40,000 WCU/s a table, on demand)",
)


def steady(
    instances: int, task_ms: float, stack: Stack = Stack(), reader: Reader = Reader()
) -> Steady:
    slots = stack.slots
    c = task_seconds(task_ms)
    tasks = math.ceil(STEADY_JOB_FLEET_SECONDS * instances * slots / c)
    (size,) = bundle_sizes(tasks, task_ms, instances * slots, first_only=True)
    life = BundleLife(size, task_ms, slots, stack.visibility_timeout)
    bundles_per_second = instances * slots / (size * c)
    records_per_second = instances * slots / c
    model = Steady(instances, task_ms, size, records_per_second)
    worker = {k: v * bundles_per_second for k, v in life.requests().items()}
    messages = life.sends * life.messages_per_send * bundles_per_second
    per_message = size / (life.sends * life.messages_per_send)
    per_delivery = reader_batch(messages, per_message, reader)
    # The reader keeps up while full receives (ten messages) would take less than
    # a second for the messages of a second: the most one reader can journal.
    full = delivery_seconds(MAX_MESSAGES_PER_CALL, per_message, reader, MAX_RECEIVERS_PER_JOB)
    deliveries = messages / per_delivery
    # The workers store each send's records, in items on the job's shards.
    per_item = min(life.results_per_send, size) / life.items_per_send
    sizes = RecordSizes.of(task_ms, min(round(per_item), 10_000))
    item_kb = math.ceil((per_item * sizes.compressed + 100) / 1024)
    shards = shards_for(instances * slots)
    polls = 1 / LONG_POLL_SECONDS  # a reader's idle long poll of a queue
    renewals = 1 / (READER_LEASE_SECONDS / 3)  # the reader lease, with the count
    state_reads = instances / CANCEL_CHECK_SECONDS  # each instance's look at the job
    model.shards = shards
    model.rates = {
        "request queue": bundles_per_second * (1 + 1 / MAX_MESSAGES_PER_CALL)  # received, sent
        + 1 / PROVISION_INTERVAL_SECONDS  # its depth, read to size the group
        + worker["sqs DeleteMessage"]
        + worker["sqs ChangeMessageVisibility"],
        "the job's queue": worker["sqs SendMessageBatch"]
        + deliveries * (1 + math.ceil(per_delivery / MAX_MESSAGES_PER_CALL)),
        "response queue": 0.0,  # read by a scheduler service only: its long poll
        "dead-letter queue": polls,
        "job's partition": renewals + state_reads,
        "record shards": worker["dynamodb PutItem"],
        "claim table": worker["dynamodb UpdateItem"],
        "S3": 0.0,
    }
    record_units = worker["dynamodb PutItem"] * item_kb
    read_units = state_reads * 0.5  # eventually consistent, under 4 KB
    held = instances * min(slots, 2)  # at most a bundle running and the next, per instance
    model.uses = dict(zip(LIMITS, (
        record_units / shards / PARTITION_WCU,
        (record_units + renewals) / TABLE_WCU,
        read_units / PARTITION_RCU,
        messages / MAX_MESSAGES_PER_CALL * full,
        held / SQS_IN_FLIGHT_LIMIT,
        worker["dynamodb UpdateItem"] / TABLE_WCU,
    ), strict=True))  # fmt: skip
    reader_requests = deliveries * 2 + polls + renewals
    model.reader_requests_per_record = reader_requests / records_per_second
    model.reader_seconds_per_record = delivery_seconds(per_delivery, per_message, reader) / (
        per_delivery * per_message
    )
    return model


def instances_at(
    limit: str, task_ms: float, stack: Stack, reader: Reader, most: int = 1_000_000
) -> int | None:
    """The fewest instances at which ``limit`` is reached (None: not below ``most``)."""
    use: Callable[[int], float] = lambda n: steady(n, task_ms, stack, reader).uses[limit]  # noqa: E731
    if use(most) < 1:
        return None
    low, high = 1, most
    while low < high:
        middle = (low + high) // 2
        if use(middle) >= 1:
            high = middle
        else:
            low = middle + 1
    return low


#: The grid of docs/scale.md.
INSTANCES = (10, 100, 1_000)
TASKS_MS = (1, 1_000, 60_000)


def report(stack: Stack, reader: Reader) -> str:
    grid = [
        (task_ms, n, steady(n, task_ms, stack, reader)) for task_ms in TASKS_MS for n in INSTANCES
    ]
    places = list(grid[0][2].rates)
    lines = [
        f"One job of built-in sleeps keeping N instances of {stack.slots} slots busy; the reader's"
        f" round trip {reader.round_trip * 1000:g} ms a request,"
        f" its CPU {reader.record_cpu * 1e6:g} us a record.",
        "",
        "Requests a second:",
        f"{'task':>6} {'N':>5} {'bundle':>6} {'shards':>6} "
        + " ".join(f"{SHORT[p]:>11}" for p in places),
    ]
    for task_ms, n, model in grid:
        cells = " ".join(f"{model.rates[p]:>11,.1f}" for p in places)
        lines.append(f"{_ms(task_ms):>6} {n:>5} {model.bundle_tasks:>6} {model.shards:>6} {cells}")
    lines += [
        "",
        "Each limit's use (1.00: reached), and the reader's work per result:",
        f"{'task':>6} {'N':>5} {'records/s':>10} "
        + " ".join(f"{SHORT[name]:>11}" for name in LIMITS)
        + f" {'req/record':>10} {'us/record':>10}",
    ]
    for task_ms, n, model in grid:
        uses = " ".join(f"{model.uses[name]:>11.2f}" for name in LIMITS)
        lines.append(
            f"{_ms(task_ms):>6} {n:>5} {model.records_per_second:>10,.0f} {uses}"
            f" {model.reader_requests_per_record:>10.4f}"
            f" {model.reader_seconds_per_record * 1e6:>10,.0f}"
        )
    lines += [
        "",
        f"Instances of {stack.slots} slots at which each limit is reached (the stack's, and"
        " one reader's: past it, that client's copy lags; the records are kept already):",
    ]
    for task_ms in TASKS_MS:
        reached = {name: instances_at(name, task_ms, stack, reader) for name in LIMITS}
        found = sorted((n, name) for name, n in reached.items() if n is not None and name != READER)
        cells = ", ".join(f"{SHORT[name]} {_count(n)}" for name, n in reached.items())
        first = f"the stack's first: {SHORT[found[0][1]]} at {found[0][0]:,}" if found else "none"
        lines.append(f"{_ms(task_ms):>6}: {first}; {cells}")
    return "\n".join(lines)


#: Column names.
SHORT = {
    "request queue": "request q",
    "the job's queue": "job's q",
    "response queue": "response q",
    "dead-letter queue": "dead-letter",
    "job's partition": "job's part",
    "record shards": "rec shards",
    "claim table": "claim table",
    "S3": "S3",
    LIMITS[0]: "shard W",
    LIMITS[1]: "jobs W",
    LIMITS[2]: "partition R",
    LIMITS[3]: "reader",
    LIMITS[4]: "in flight",
    LIMITS[5]: "claims W",
}


def _ms(task_ms: float) -> str:
    return f"{task_ms / 1000:g} s" if task_ms >= 1000 else f"{task_ms:g} ms"


def _count(n: int | None) -> str:
    return "not below 1,000,000" if n is None else f"{n:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=Stack.slots)
    parser.add_argument("--round-trip-ms", type=float, default=ROUND_TRIP_SECONDS * 1000)
    parser.add_argument("--record-cpu-us", type=float, default=RECORD_CPU_SECONDS * 1e6)
    args = parser.parse_args()
    if args.slots < 1 or args.round_trip_ms <= 0 or args.record_cpu_us < 0:
        parser.error("--slots and --round-trip-ms must be positive, --record-cpu-us not negative")
    reader = Reader(args.round_trip_ms / 1000, args.record_cpu_us / 1e6)
    print(report(Stack(slots=args.slots), reader))


if __name__ == "__main__":
    main()
