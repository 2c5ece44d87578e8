"""Benchmarks of the remote path, through the local emulator, beside peers measured in the same run.

    python -m bench.remote_path            # the full run (several minutes)
    python -m bench.remote_path --quick    # 1,000 tasks instead of 10,000
    python -m bench.remote_path --only kill   # one experiment (repeat --only for more)

It stands the whole cloud path up as `make local-aws-up` does (moto_server,
the real CDK CLI deploying the stack, the local fleet: one `taskfleet worker`
process per in-service instance), then measures:

- AWS requests per 1,000 `sleep 0` tasks (every SQS and DynamoDB request of
  the scheduler and of every worker, counted with botocore's event hooks,
  from the first task sent until the fleet is back at zero: idle polls
  included), 10,000 tasks with 4 and 16 workers: taskfleet's bundles against
  one-task-per-message dispatch through the same workers and queues (on
  1,000 tasks: its cost per task is constant, and it is slow);
- the time from the first task queued to a desired capacity above zero, as
  an observer polling the group every 20 ms sees it;
- efficiency of `sleep 1000` tasks, 10 per fleet slot, 4 workers, from the
  first task queued (the fleet at zero) to the last result, beside the same
  tasks on a local multiprocessing.Pool with as many processes as slots;
- makespan efficiency (ideal / measured) on 4 workers of a sorted workload
  (short tasks first, long ones last) and a heavy-tailed one (Pareto task
  times), beside one bundle per fleet slot (the old packing) and one task per
  message; and for taskfleet, the time from a task's end to its record in
  the output (median and 95th percentile);
- the extra time a job takes when one worker is SIGKILLed mid-job (the local
  fleet restarts it, as systemd does on an instance) beside the same job
  undisturbed.
"""

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import boto3

from bench.aws_calls import count_requests
from bench.emulated_stack import counted_stack
from bench.fleet_peers import run_packed
from client.benchmark import output, runners
from client.benchmark.runners import Workload
from client.benchmark.workloads import repeated, uneven_workloads
from scheduler.fleet.aws import RemoteFleet, StackResources
from scheduler.fleet.run import run_remote
from scripts import local_aws
from worker.contracts import Output
from worker.workload import check_workload

STACK = "Taskfleet"

#: Seconds a fleet worker waits idle before it ends its instance, in this run.
IDLE_TIMEOUT_SECONDS = 5

#: Most tasks the one-task-per-message peer runs.
PEER_TASKS = 1_000

#: How often the observer looks at the group's desired capacity.
OBSERVE_SECONDS = 0.02


class Group:
    """The stack's Auto Scaling group, as the benchmark looks at it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.autoscaling: Any = boto3.client("autoscaling")

    def describe(self) -> dict[str, Any]:
        (group,) = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])[
            "AutoScalingGroups"
        ]
        return dict(group)

    def resize(self, maximum: int) -> None:
        self.autoscaling.update_auto_scaling_group(AutoScalingGroupName=self.name, MaxSize=maximum)

    def wait_for_zero(self, requests: Path, timeout: float = 300) -> None:
        """Until the group is empty and no worker process sends requests any more."""
        deadline = time.monotonic() + timeout
        while True:
            group = self.describe()
            if not group["DesiredCapacity"] and not group["Instances"]:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the fleet did not return to zero: {group}")
            time.sleep(0.5)
        settled = count_requests(requests)
        while True:  # the last worker may still be on its way out
            time.sleep(2)
            now = count_requests(requests)
            if now == settled:
                return
            settled = now


class CapacityObserver(threading.Thread):
    """Notes when the group's desired capacity first goes above zero."""

    def __init__(self, group: Group) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.seen_at: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set() and self.seen_at is None:
            if self.group.describe()["DesiredCapacity"] > 0:
                self.seen_at = time.monotonic()
            time.sleep(OBSERVE_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self.join()


class FirstQueued:
    """When the scheduler's first SendMessageBatch came back: the first task queued."""

    EVENT = "after-call.sqs.SendMessageBatch"

    def __init__(self) -> None:
        self.at: float | None = None
        assert boto3.DEFAULT_SESSION is not None
        self.events = boto3.DEFAULT_SESSION.events
        self.events.register(self.EVENT, self._sent, unique_id="bench-first-queued")

    def _sent(self, **_: Any) -> None:
        if self.at is None:
            self.at = time.monotonic()

    def close(self) -> None:
        self.events.unregister(self.EVENT, unique_id="bench-first-queued")


class ArrivalStamps:
    """An output that notes when each write arrived, for the records it holds."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.writes: list[tuple[float, bytes]] = []

    def write(self, data: bytes) -> int:
        self.writes.append((time.time(), data))
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()

    def delays(self) -> list[float]:
        """Seconds from each task's end to its record's arrival."""
        return [
            arrived - json.loads(line)["finished_at"]
            for arrived, data in self.writes
            for line in data.splitlines()
        ]


def run_job(
    path: str,
    resources: StackResources,
    slots: int,
    directory: Path,
    group: Group,
    per_bundle: int | None = None,
    disturb: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """One job through the fleet from zero; its figures once the fleet is back at zero.

    ``per_bundle``: run it with a peer's packing (that many tasks a bundle)
    instead of taskfleet's. ``disturb``: called in a thread of its own with the
    results file as the job starts (a fault to inject)."""
    requests = directory / "requests"
    group.wait_for_zero(requests)
    before = count_requests(requests)
    counts = check_workload([path])
    first_queued = FirstQueued()
    observer = CapacityObserver(group)
    observer.start()
    output = directory / "results.jsonl"
    began = time.perf_counter()
    with output.open("wb") as stream:
        if disturb is not None:
            threading.Thread(target=disturb, args=(output,), daemon=True).start()
        stamped = ArrivalStamps(stream)
        fleet = RemoteFleet(resources)
        if per_bundle is None:
            run_remote([path], counts=counts, fleet=fleet, slots=slots, output=stamped)  # type: ignore[arg-type]
        else:
            run_packed(path, fleet, per_bundle, stamped)  # type: ignore[arg-type]
    job_seconds = time.perf_counter() - began
    observer.stop()
    first_queued.close()
    records = [json.loads(line) for line in output.read_bytes().splitlines()]
    ids = Counter(record["id"] for record in records)
    if len(ids) != counts.total or max(ids.values()) != 1:
        raise SystemExit(f"{len(records)} results for {counts.total} tasks")
    failed = sum(1 for record in records if record["status"] != "succeeded")
    if failed:
        raise SystemExit(f"{failed} tasks failed")
    group.wait_for_zero(requests)
    spent = count_requests(requests) - before
    total = sum(spent.values())
    queued = first_queued.at
    capacity_after = (
        None if queued is None or observer.seen_at is None else observer.seen_at - queued
    )
    running = max(r["finished_at"] for r in records) - min(r["started_at"] for r in records)
    delays = sorted(stamped.delays())
    return {
        "tasks": counts.total,
        "requests": total,
        "requests_per_1000_tasks": round(total * 1000 / counts.total, 2),
        "requests_by_operation": dict(sorted(spent.items())),
        "job_seconds": round(job_seconds, 3),
        "running_seconds": round(running, 3),
        "capacity_after_first_queued_seconds": (
            None if capacity_after is None else round(capacity_after, 3)
        ),
        "task_work_seconds": round(sum(r["duration_ms"] for r in records) / 1000, 3),
        "longest_task_seconds": round(max(r["duration_ms"] for r in records) / 1000, 3),
        "record_delay_median_seconds": round(statistics.median(delays), 3),
        "record_delay_p95_seconds": round(delays[int(0.95 * (len(delays) - 1))], 3),
    }


def requests_experiment(
    tasks: int, directory: Path, resources: StackResources, group: Group
) -> list[dict[str, Any]]:
    # One task per message costs the same handful of requests for every task
    # (and runs at a few dozen tasks a second on the emulator): it is measured
    # on at most PEER_TASKS tasks, and compared per 1,000.
    peer_tasks = min(tasks, PEER_TASKS)
    runs = [
        ("taskfleet bundles", tasks, repeated(directory, "bundles.txt", "sleep 0", tasks)),
        (
            "one task per message",
            peer_tasks,
            repeated(directory, "one-per-message.txt", "sleep 0", peer_tasks),
        ),
    ]
    rows = []
    for workers in (4, 16):
        group.resize(workers)
        fleet = resources._replace(max_workers=workers)
        for dispatch, count, path in runs:
            per_bundle = None if dispatch == "taskfleet bundles" else 1
            print(f"requests: {count} tasks, {workers} workers, {dispatch} ...", flush=True)
            figures = run_job(path, fleet, fleet.slots, directory, group, per_bundle)
            rows.append({"workers": workers, "dispatch": dispatch, **figures})
            print(
                f"  {figures['requests']} requests = {figures['requests_per_1000_tasks']} "
                f"per 1,000 tasks; capacity {figures['capacity_after_first_queued_seconds']} s "
                "after the first task was queued",
                flush=True,
            )
    return rows


def efficiency_experiment(
    directory: Path, resources: StackResources, group: Group
) -> dict[str, Any]:
    workers, per_slot, sleep_ms = 4, 10, 1000
    fleet = resources._replace(max_workers=workers)
    tasks = fleet.slots * per_slot
    ideal = per_slot * sleep_ms / 1000
    path = repeated(directory, "sleep1000.txt", f"sleep {sleep_ms}", tasks)
    group.resize(workers)
    print(f"efficiency: {tasks} x sleep {sleep_ms}, {fleet.slots} slots ...", flush=True)
    figures = run_job(path, fleet, fleet.slots, directory, group)
    pool_seconds = runners.pool_seconds(Workload(f"sleep {sleep_ms}", tasks, fleet.slots), 1)
    row = {
        "workers": workers,
        "slots": fleet.slots,
        "tasks": tasks,
        "ideal_seconds": ideal,
        "taskfleet_seconds": figures["job_seconds"],
        "efficiency": round(ideal / figures["job_seconds"], 4),
        "efficiency_once_running": round(ideal / figures["running_seconds"], 4),
        "capacity_after_first_queued_seconds": figures["capacity_after_first_queued_seconds"],
        "pool_seconds": round(pool_seconds, 3),
        "pool_efficiency": round(ideal / pool_seconds, 4),
    }
    print(
        f"  taskfleet (fleet from zero) {row['efficiency']}, once running "
        f"{row['efficiency_once_running']}; local Pool({fleet.slots}) {row['pool_efficiency']}",
        flush=True,
    )
    return row


def fleet_workers(fleet_pid: int) -> list[int]:
    """The local fleet's worker processes (its children), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == fleet_pid:
            found.append(int(entry.name))
    return sorted(found)


def kill_a_worker(
    fleet_pid: int, after_records: int, forget_state: Path | None = None
) -> Callable[[Path], None]:
    """A fault: once ``after_records`` results are out, SIGKILL one fleet worker (the
    local fleet restarts it on its instance, as systemd would). With
    ``forget_state`` (the fleet's folder), its state folder goes too: the restart
    knows nothing of what it held, as before workers kept one."""

    def disturb(output: Path) -> None:
        while output.read_bytes().count(b"\n") < after_records:
            time.sleep(0.05)
        victim = fleet_workers(fleet_pid)[0]
        os.kill(victim, signal.SIGKILL)
        if forget_state is not None:
            arguments = (Path("/proc") / str(victim) / "cmdline").read_bytes().split(b"\0")
            instance = arguments[arguments.index(b"--instance-id") + 1].decode()
            shutil.rmtree(forget_state / f"{instance}.state")

    return disturb


#: Times each run of the kill experiment is repeated (its figures are medians).
KILL_REPEATS = 3


def kill_experiment(
    directory: Path,
    resources: StackResources,
    group: Group,
    fleet_pid: int,
    state: Path,
    visibility_timeout: int,
) -> dict[str, Any]:
    """The same job undisturbed, with a worker SIGKILLed a few bundles in and
    restarted, and the same without the state a restart takes its bundles back
    from; median time once running (the fleet's start-up varies more than this)."""
    workers, per_slot, sleep_ms = 4, 10, 1000
    fleet = resources._replace(max_workers=workers)
    tasks = fleet.slots * per_slot
    path = repeated(directory, "kill.txt", f"sleep {sleep_ms}", tasks)
    group.resize(workers)
    after = 2 * per_slot
    cases: list[tuple[str, Callable[[Path], None] | None, int]] = [
        ("undisturbed", None, KILL_REPEATS),
        ("worker killed, restarted", kill_a_worker(fleet_pid, after), KILL_REPEATS),
        ("worker killed, restarted without its state", kill_a_worker(fleet_pid, after, state), 1),
    ]
    row: dict[str, Any] = {"workers": workers, "slots": fleet.slots, "tasks": tasks}
    for case, disturb, repeats in cases:
        print(f"kill: {tasks} x sleep {sleep_ms}, {fleet.slots} slots, {case} ...", flush=True)
        runs = [
            run_job(path, fleet, fleet.slots, directory, group, disturb=disturb)
            for _ in range(repeats)
        ]
        row[case] = statistics.median(r["running_seconds"] for r in runs)
        print(f"  {row[case]} s once running (median of {repeats})", flush=True)
    undisturbed = row["undisturbed"]
    row["extra_seconds"] = round(row["worker killed, restarted"] - undisturbed, 3)
    row["extra_seconds_without_state"] = round(
        row["worker killed, restarted without its state"] - undisturbed, 3
    )
    row["visibility_timeout_seconds"] = visibility_timeout
    print(
        f"  extra time after a kill: {row['extra_seconds']} s; without the state "
        f"{row['extra_seconds_without_state']} s (visibility timeout {visibility_timeout} s)",
        flush=True,
    )
    return row


#: Workers in the balance experiment.
BALANCE_WORKERS = 4


def balance_workloads(directory: Path) -> dict[str, str]:
    return uneven_workloads(
        directory, short=400, long=32, long_ms=500, tailed=120, scale_ms=40, cap_ms=4000
    )


def balance_experiment(
    directory: Path, resources: StackResources, group: Group
) -> list[dict[str, Any]]:
    group.resize(BALANCE_WORKERS)
    fleet = resources._replace(max_workers=BALANCE_WORKERS)
    rows = []
    for name, path in balance_workloads(directory).items():
        total = len(Path(path).read_text().splitlines())
        packings: list[tuple[str, int | None]] = [
            ("taskfleet", None),
            ("one bundle per slot", math.ceil(total / fleet.slots)),
            ("one task per message", 1),
        ]
        for packing, per_bundle in packings:
            print(f"balance: {name}, {packing}, {fleet.slots} slots ...", flush=True)
            figures = run_job(path, fleet, fleet.slots, directory, group, per_bundle)
            ideal = max(figures["task_work_seconds"] / fleet.slots, figures["longest_task_seconds"])
            row = {
                "workload": name,
                "packing": packing,
                "slots": fleet.slots,
                "ideal_seconds": round(ideal, 3),
                "efficiency_once_running": round(ideal / figures["running_seconds"], 4),
                "efficiency_from_queued": round(ideal / figures["job_seconds"], 4),
                **figures,
            }
            rows.append(row)
            print(
                f"  ideal {row['ideal_seconds']} s, running {figures['running_seconds']} s: "
                f"{row['efficiency_once_running']} ({row['efficiency_from_queued']} from "
                f"queued); record delay median {figures['record_delay_median_seconds']} s, "
                f"p95 {figures['record_delay_p95_seconds']} s; {figures['requests']} requests",
                flush=True,
            )
    return rows


def machine() -> dict[str, object]:
    return {**output.machine(), "boto3": boto3.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 tasks instead of 10,000")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--only",
        action="append",
        choices=["requests", "efficiency", "balance", "kill"],
        help="run this experiment (again for more); default: all",
    )
    args = parser.parse_args()
    tasks = 1_000 if args.quick else 10_000
    context = {
        "taskfleet:maxWorkers": "16",
        "taskfleet:idleTimeoutSeconds": str(IDLE_TIMEOUT_SECONDS),
    }
    with counted_stack("taskfleet-bench-", context, count_here=True) as stack:
        directory, state, outputs = stack.directory, stack.state, stack.outputs
        resources = StackResources.lookup(STACK)
        group = Group(outputs[Output.GROUP_NAME])
        experiments: dict[str, Callable[[], Any]] = {
            "requests": lambda: requests_experiment(tasks, directory, resources, group),
            "efficiency": lambda: efficiency_experiment(directory, resources, group),
            "balance": lambda: balance_experiment(directory, resources, group),
            "kill": lambda: kill_experiment(
                directory,
                resources,
                group,
                local_aws.emulator_of(state)["fleet"],
                state,
                int(outputs[Output.VISIBILITY_TIMEOUT_SECONDS]),
            ),
        }
        report = {"machine": machine()}
        for name, experiment in experiments.items():
            if args.only is None or name in args.only:
                report[name] = experiment()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
