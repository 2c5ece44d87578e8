"""Provisioning by work: what the group asks for and lives, beside a job's cost line.

    python -m bench.provisioning                        # this checkout
    python -m bench.provisioning --before ../old-tree   # an earlier checkout first, side by side
    python -m bench.provisioning --only 20              # one workload (20 or 100 tasks)

For each checkout (its own .venv: `make install` there) it stands the stack up
on the emulator with that checkout's own `scripts.local_aws up` (moto_server,
the CDK CLI, the local fleet: one worker process per in-service instance),
with at most 16 instances of 2 slots and an idle timeout of 60 s (the stack's
default is 300 s: shorter here to keep the bench short), and runs that
checkout's `taskfleet run --remote` of 100 x `sleep 20000` and of
20 x `sleep 20000`, each from a group at zero until the group is back at zero.
For each job it gives:

- the group's desired capacity, sampled every second, and its peak;
- the group's instance-seconds by the local fleet's clock (how long each
  instance's worker ran, from scripts/local_fleet.py's log), beside the same
  from the 1 s samples of in-service instances; and the idle tail: in-service
  instance-seconds after the job's last task finished (samples);
- the job's cost line: `taskfleet status JOB --stack` once the group is back
  at zero (instance-seconds with its idle tail); an older CLI that prints no
  job id has no `status --stack`, and its `--summary` JSON's instance_seconds
  is its cost line; and the job's task-seconds (its records' durations);
- from the job's first start to its last finish: busy slot-seconds over
  provisioned slot-seconds (in-service instances x slots, from the samples);
- the instances that never ran a task: seen in service (samples, and the
  fleet's log) against the `worker` of every record.

The issue's targets: the cost line within 10 % of the group's instance-seconds,
busy ÷ provisioned at least 0.7, no instance that never runs a task.
"""

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import boto3

from client.benchmark.output import machine
from worker.contracts import Output

REPOSITORY = Path(__file__).resolve().parent.parent
STACK = "Taskfleet"
MAX_WORKERS = 16
SLOTS_PER_INSTANCE = 2
IDLE_TIMEOUT_SECONDS = 60
CONTEXT = {
    "taskfleet:maxWorkers": MAX_WORKERS,
    "taskfleet:slotsPerInstance": SLOTS_PER_INSTANCE,
    "taskfleet:idleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
}
SLEEP_MS = 20_000
WORKLOADS = (100, 20)

#: Seconds between two looks at the group.
SAMPLE_SECONDS = 1.0

#: Longest a job may take, and the group to come back to zero after it.
JOB_TIMEOUT_SECONDS = 1200
ZERO_TIMEOUT_SECONDS = IDLE_TIMEOUT_SECONDS + 300

#: The issue's targets.
COST_LINE_TOLERANCE = 0.10
BUSY_TARGET = 0.7

WORKER_RAN = re.compile(r"^(\S+): worker ran ([0-9.]+) s$", re.MULTILINE)
JOB_ID = re.compile(r"^job (\S+) on stack ", re.MULTILINE)
COST_LINE = re.compile(r"used ([0-9.]+) instance-seconds \(([0-9.]+) of them")


class Checkout(NamedTuple):
    """A taskfleet checkout with its own .venv, and what to call it in the table."""

    label: str
    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / ".venv" / "bin" / name)


class Sample(NamedTuple):
    at: float  # epoch seconds, as the records' started_at and finished_at
    desired: int
    in_service: tuple[str, ...]


def emulator_environment(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://localhost:{port}",
    }


class Sampler(threading.Thread):
    """The group's desired capacity and in-service instances, every second."""

    def __init__(self, autoscaling: Any, group: str) -> None:
        super().__init__(daemon=True)
        self.autoscaling = autoscaling
        self.group = group
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def look(self) -> Sample:
        (group,) = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.group]
        )["AutoScalingGroups"]
        in_service = sorted(
            i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"
        )
        return Sample(time.time(), int(group["DesiredCapacity"]), tuple(in_service))

    def at_zero(self) -> bool:
        sample = self.samples[-1] if self.samples else self.look()
        return sample.desired == 0 and not sample.in_service

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append(self.look())
            self._done.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append(self.look())


class Stack:
    """A checkout's stack on its own emulator, stood up and taken down by its own script."""

    def __init__(self, checkout: Checkout, state: Path, keep_logs: Path | None) -> None:
        self.checkout = checkout
        self.state = state
        self.keep_logs = keep_logs
        self.port = 0

    def __enter__(self) -> "Stack":
        settings = [arg for key, value in CONTEXT.items() for arg in ("-c", f"{key}={value}")]
        command = [self.checkout.bin("python"), "-m", "scripts.local_aws"]
        print(f"[{self.checkout.label}] standing the stack up ({self.checkout.path}) ...")
        done = subprocess.run(
            [*command, "up", "--state", str(self.state), *settings],
            cwd=self.checkout.path,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"local_aws up failed:\n{done.stdout}\n{done.stderr}")
        self.port = json.loads((self.state / "emulator.json").read_text())["port"]
        return self

    def __exit__(self, *_: object) -> None:
        if self.keep_logs is not None:  # `down` removes the state folder
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.state.glob("*.log"):
                shutil.copy(log, self.keep_logs)
        command = [self.checkout.bin("python"), "-m", "scripts.local_aws"]
        subprocess.run(
            [*command, "down", "--state", str(self.state)],
            cwd=self.checkout.path,
            capture_output=True,
            check=False,
        )

    @property
    def outputs(self) -> dict[str, str]:
        stacks: dict[str, dict[str, str]] = json.loads((self.state / "outputs.json").read_text())
        (outputs,) = stacks.values()
        return outputs

    @property
    def fleet_log(self) -> Path:
        return self.state / "fleet.log"

    def taskfleet(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.checkout.bin("taskfleet"), *args],
            env=emulator_environment(self.port),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(SAMPLE_SECONDS)


def integrate(samples: list[Sample], start: float, end: float) -> float:
    """In-service instance-seconds between ``start`` and ``end``: each sample's count
    held until the next sample."""
    total = 0.0
    for sample, following in itertools.pairwise(samples):
        low, high = max(sample.at, start), min(following.at, end)
        if high > low:
            total += len(sample.in_service) * (high - low)
    return total


def capacity_changes(samples: list[Sample], began: float) -> list[tuple[int, int, int]]:
    """(seconds from the run's start, desired, in service) at each change."""
    changes: list[tuple[int, int, int]] = []
    for sample in samples:
        point = (round(sample.at - began), sample.desired, len(sample.in_service))
        if not changes or changes[-1][1:] != point[1:]:
            changes.append(point)
    return changes


def cost_line(stack: Stack, stderr: str, summary: Path) -> dict[str, Any]:
    """The job's instance-seconds as the checkout's CLI states them, the group at zero."""
    found = JOB_ID.search(stderr)
    if found is None:  # an older CLI: no job store, no `status --stack`
        figures = json.loads(summary.read_text())
        return {
            "source": "run --summary instance_seconds (no status --stack in this CLI)",
            "instance_seconds": round(float(figures["instance_seconds"]), 1),
            "tail_seconds": None,
        }
    job = found.group(1)
    done = stack.taskfleet("status", job, "--stack", STACK, timeout=120)
    line = COST_LINE.search(done.stdout)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"taskfleet status {job} failed:\n{done.stdout}\n{done.stderr}")
    return {
        "source": f"taskfleet status {job} --stack {STACK}",
        "job": job,
        "instance_seconds": float(line.group(1)),
        "tail_seconds": float(line.group(2)),
    }


def run_workload(stack: Stack, tasks: int, directory: Path) -> dict[str, Any]:
    """One `run --remote` of ``tasks`` x sleep from a group at zero until the group
    is back at zero; its figures."""
    label = f"{tasks} x sleep {SLEEP_MS}"
    print(f"[{stack.checkout.label}] {label} ...", flush=True)
    workload = directory / f"sleep-{tasks}.txt"
    workload.write_text(f"sleep {SLEEP_MS}\n" * tasks)
    output, summary = directory / f"results-{tasks}.jsonl", directory / f"summary-{tasks}.json"
    emulator = emulator_environment(stack.port)
    autoscaling = boto3.client(
        "autoscaling",
        endpoint_url=emulator["AWS_ENDPOINT_URL"],
        region_name=emulator["AWS_REGION"],
        aws_access_key_id=emulator["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=emulator["AWS_SECRET_ACCESS_KEY"],
    )
    sampler = Sampler(autoscaling, stack.outputs[Output.GROUP_NAME])
    wait_until(sampler.at_zero, ZERO_TIMEOUT_SECONDS, "the group at zero before the job")
    log_offset = stack.fleet_log.stat().st_size
    began = time.time()
    sampler.start()
    command = ["run", str(workload), "--remote", "--stack", STACK, "-o", str(output)]
    done = stack.taskfleet(*command, "--summary", str(summary), timeout=JOB_TIMEOUT_SECONDS)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    succeeded = sum(1 for r in records if r["status"] == "succeeded")
    if done.returncode != 0 or succeeded != tasks or len(records) != tasks:
        sampler.stop()
        raise SystemExit(f"{label}: exit {done.returncode}, {succeeded}/{tasks}:\n{done.stderr}")
    ran = time.time() - began
    wait_until(sampler.at_zero, ZERO_TIMEOUT_SECONDS, "the group back at zero")
    seen = {i for s in sampler.samples for i in s.in_service}
    # The fleet says how long a worker ran once it has seen its instance go.
    wait_until(
        lambda: seen <= set(worker_times(stack, log_offset)), 30, "the fleet's clock of each worker"
    )
    sampler.stop()
    at_zero = time.time() - began
    clock = worker_times(stack, log_offset)
    seen |= clock.keys()
    samples = sampler.samples
    first_start = min(r["started_at"] for r in records)
    last_finish = max(r["finished_at"] for r in records)
    task_seconds = sum(r["duration_ms"] for r in records) / 1000
    provisioned = SLOTS_PER_INSTANCE * integrate(samples, first_start, last_finish)
    group_seconds = sum(clock.values())
    cost = cost_line(stack, done.stderr, summary)
    changes = capacity_changes(samples, began)
    workers = {r["worker"] for r in records}
    idle = sorted(seen - workers)
    return {
        "tasks": tasks,
        "task": f"sleep {SLEEP_MS}",
        "run_seconds": round(ran, 1),
        "back_at_zero_seconds": round(at_zero, 1),
        "desired_capacity_changes": changes,  # [seconds from start, desired, in service]
        "peak_desired": max(desired for _, desired, _ in changes),
        "instances_seen": len(seen),
        "group_instance_seconds": round(group_seconds, 1),
        "group_instance_seconds_from_samples": round(integrate(samples, began, time.time()), 1),
        "idle_tail_instance_seconds": round(integrate(samples, last_finish, time.time()), 1),
        "cost_line": cost,
        "cost_line_over_group": round(cost["instance_seconds"] / group_seconds, 3),
        "task_seconds": round(task_seconds, 1),
        "window_seconds": round(last_finish - first_start, 1),
        "busy_slot_seconds": round(task_seconds, 1),
        "provisioned_slot_seconds": round(provisioned, 1),
        "busy_over_provisioned": round(task_seconds / provisioned, 3) if provisioned else None,
        "instances_without_a_task": idle,
    }


def worker_times(stack: Stack, offset: int) -> dict[str, float]:
    """Seconds each instance's worker ran, by the local fleet's log since ``offset``."""
    with stack.fleet_log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    times: dict[str, float] = {}
    for instance, seconds in WORKER_RAN.findall(text):
        times[instance] = times.get(instance, 0.0) + float(seconds)
    return times


def report_run(label: str, figures: dict[str, Any]) -> None:
    cost = figures["cost_line"]
    steps = ", ".join(f"+{t}s {d}/{n}" for t, d, n in figures["desired_capacity_changes"])
    print(f"  desired/in service at each change: {steps}")
    print(f"  peak desired {figures['peak_desired']}, {figures['instances_seen']} instances")
    print(
        f"  group: {figures['group_instance_seconds']} instance-seconds (fleet's clock; "
        f"{figures['group_instance_seconds_from_samples']} from 1 s samples), idle tail after "
        f"the last finish {figures['idle_tail_instance_seconds']}"
    )
    print(
        f"  cost line: {cost['instance_seconds']} instance-seconds ({cost['source']}) = "
        f"{figures['cost_line_over_group']} of the group's; task-seconds "
        f"{figures['task_seconds']}"
    )
    print(
        f"  busy/provisioned slot-seconds over {figures['window_seconds']} s: "
        f"{figures['busy_slot_seconds']}/{figures['provisioned_slot_seconds']} = "
        f"{figures['busy_over_provisioned']}; instances without a task: "
        f"{len(figures['instances_without_a_task'])} [{label}]",
        flush=True,
    )


def verdicts(figures: dict[str, Any]) -> dict[str, bool]:
    busy = figures["busy_over_provisioned"]
    return {
        "cost line within 10 %": abs(figures["cost_line_over_group"] - 1) <= COST_LINE_TOLERANCE,
        "busy/provisioned >= 0.7": busy is not None and busy >= BUSY_TARGET,
        "every instance ran a task": not figures["instances_without_a_task"],
    }


ROWS: list[tuple[str, Any]] = [
    ("peak instances asked for", lambda f: f["peak_desired"]),
    ("instances in service", lambda f: f["instances_seen"]),
    ("group instance-seconds", lambda f: f["group_instance_seconds"]),
    ("  idle tail after last finish", lambda f: f["idle_tail_instance_seconds"]),
    ("cost line instance-seconds", lambda f: f["cost_line"]["instance_seconds"]),
    ("  cost line / group", lambda f: f["cost_line_over_group"]),
    ("task-seconds", lambda f: f["task_seconds"]),
    ("busy / provisioned slot-s", lambda f: f["busy_over_provisioned"]),
    ("instances without a task", lambda f: len(f["instances_without_a_task"])),
]


def table(runs: dict[str, dict[str, dict[str, Any]]]) -> str:
    labels = list(runs)
    workloads = [w for w in next(iter(runs.values())) if all(w in r for r in runs.values())]
    head = "".join(
        f"{f'{w} x sleep {SLEEP_MS} ' + label:>30}" for w in workloads for label in labels
    )
    lines = [f"{'':<30}{head}"]
    for name, value in ROWS:
        cells = "".join(f"{value(runs[label][w])!s:>30}" for w in workloads for label in labels)
        lines.append(f"{name:<30}{cells}")
    for target in verdicts(next(iter(next(iter(runs.values())).values()))):
        cells = "".join(
            f"{'met' if verdicts(runs[label][w])[target] else 'MISSED':>30}"
            for w in workloads
            for label in labels
        )
        lines.append(f"{target:<30}{cells}")
    return "\n".join(lines)


def bench(checkout: Checkout, workloads: list[int], keep: Path | None) -> dict[str, Any]:
    """The workloads on a checkout's stack; with ``keep``, its state folder (the
    workers' logs, the fleet's log) is left there under the checkout's label."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taskfleet-provisioning-") as temporary:
        directory = Path(temporary) if keep is None else keep / checkout.label.replace(" ", "-")
        directory.mkdir(parents=True, exist_ok=True)
        logs = None if keep is None else directory / "logs"
        with Stack(checkout, directory / "local-aws", logs) as stack:
            for tasks in workloads:
                figures = run_workload(stack, tasks, directory)
                report_run(checkout.label, figures)
                results[str(tasks)] = figures
    return results


def earlier_run(path: Path) -> tuple[str, dict[str, Any]]:
    """The checkout and figures of an earlier run of this bench (its --json), of one
    checkout alone."""
    report: dict[str, Any] = json.loads(path.read_text())
    ((_, checkout),) = report["checkouts"].items()
    ((_, runs),) = report["runs"].items()
    return checkout, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkout",
        type=Path,
        default=REPOSITORY,
        help="the checkout to measure, with its .venv (default: this one)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="an earlier checkout (with its .venv) to run first, or the --json of an earlier"
        " run of one checkout, whose figures are shown as before",
    )
    parser.add_argument("--only", type=int, action="append", choices=WORKLOADS)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--keep", type=Path, help="keep each stack's state folder (workers' logs) under here"
    )
    args = parser.parse_args()
    checkouts = [Checkout("after" if args.before else "this checkout", args.checkout.resolve())]
    runs: dict[str, dict[str, Any]] = {}
    paths = {}
    if args.before is not None and args.before.is_file():
        paths["before"], runs["before"] = earlier_run(args.before)
    elif args.before is not None:
        checkouts.insert(0, Checkout("before", args.before.resolve()))
    for checkout in checkouts:
        if not Path(checkout.bin("taskfleet")).exists():
            parser.error(f"{checkout.path}: no .venv/bin/taskfleet (run `make install` there)")
    print(
        f"at most {MAX_WORKERS} instances of {SLOTS_PER_INSTANCE} slots; idle timeout "
        f"{IDLE_TIMEOUT_SECONDS} s (the stack's default is 300 s: shorter to keep this short)",
        flush=True,
    )
    workloads = args.only or list(WORKLOADS)
    for checkout in checkouts:
        runs[checkout.label] = bench(checkout, workloads, args.keep)
        paths[checkout.label] = str(checkout.path)
    print(table(runs))
    report = {
        "machine": machine(),
        "settings": {**CONTEXT, "sleep_ms": SLEEP_MS, "sample_seconds": SAMPLE_SECONDS},
        "checkouts": paths,
        "runs": runs,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
