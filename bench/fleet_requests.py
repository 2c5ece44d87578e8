"""Every SQS, DynamoDB and S3 request of fleet jobs on the emulator, by party and kind,
beside what bench/scale_model.py predicts.

    python -m bench.fleet_requests                 # all (about 6 minutes)
    python -m bench.fleet_requests --only sleep0   # 1,000 and 10,000 x sleep 0
    python -m bench.fleet_requests --only idle     # a stack with no jobs, an hour's worth
    python -m bench.fleet_requests --only model    # the model against small jobs

It stands the stack up as `make local-aws-up` does (moto_server, the real CDK
CLI, the local fleet), with MODEL_INSTANCES instances of SLOTS slots and a
short idle timeout, and runs the real `taskfleet run --remote` command. Each
process counts its own requests with botocore's event hooks
(bench/aws_calls.py: the client, every worker the local fleet starts), from
the command's start until the fleet is back at zero (the workers' idle polls
and last reports included); the emulator's own record of the requests it was
sent is the cross-check of the total. Then:

- sleep0: requests per 1,000 tasks of 1,000 and 10,000 `sleep 0` (target:
  <= 20), and the client's CPU per record (the 10,000 run less the 1,000 run);
- idle: a stack with no jobs, the group at zero, over IDLE_WINDOW_SECONDS; one
  idle `taskfleet worker` (it long-polls the request queue until its idle
  timeout); an idle `taskfleet scheduler --stack` (the reader of the response
  and dead-letter queues): each as requests an hour;
- model: MODEL_JOBS on MODEL_INSTANCES x SLOTS, measured and predicted by kind
  (agreement target: within 20 %).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx

from bench.aws_calls import COUNTED, count_by_party, count_requests
from bench.emulated_stack import counted_stack
from bench.scale_model import Requests, Stack, job_requests
from scripts import local_aws
from worker.contracts import Output

STACK = "Taskfleet"
TASKFLEET = str(Path(sys.executable).parent / "taskfleet")

#: The stack: instances, slots each, and the workers' idle timeout in seconds.
MODEL_INSTANCES = 2
SLOTS = 2
IDLE_TIMEOUT_SECONDS = 5

#: The jobs the model is checked on: (tasks, milliseconds each).
MODEL_JOBS = ((400, 1), (120, 1000))

#: The sleep-0 jobs of the requests target.
SLEEP0_TASKS = (1_000, 10_000)

#: Seconds each idle figure is measured over.
IDLE_WINDOW_SECONDS = 60

#: Agreement asked of the model, as a fraction of the measured count.
AGREEMENT = 0.20


class Bench:
    """The stack on the emulator, and the folder every process counts into."""

    def __init__(self, directory: Path, requests: Path, state: Path, outputs: dict[str, str]):
        self.directory = directory
        self.requests = requests
        self.state = state
        self.outputs = outputs
        self.port = local_aws.emulator_of(state)["port"]
        self.environment = local_aws.environment(self.port)
        self.autoscaling: Any = boto3.client("autoscaling")
        self.recorder = f"http://localhost:{self.port}/moto-api/recorder"

    def wait_for_zero(self, timeout: float = 300) -> None:
        """Until the group is empty and no process sends requests any more."""
        deadline = time.monotonic() + timeout
        name = self.outputs[Output.GROUP_NAME]
        while True:
            (group,) = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
                "AutoScalingGroups"
            ]
            if not group["DesiredCapacity"] and not group["Instances"]:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the fleet did not return to zero: {group}")
            time.sleep(0.5)
        settled = count_requests(self.requests)
        while True:  # the last worker may still be on its way out
            time.sleep(2)
            now = count_requests(self.requests)
            if now == settled:
                return
            settled = now

    def record(self, start: bool) -> None:
        """Start (afresh) or stop the emulator's record of the requests it is sent."""
        if start:
            httpx.post(f"{self.recorder}/reset-recording", timeout=10).raise_for_status()
        verb = "start" if start else "stop"
        httpx.post(f"{self.recorder}/{verb}-recording", timeout=10).raise_for_status()

    def recorded(self) -> Counter[str]:
        """The recorded requests of the counted services, by service (from each
        request's signature: its credential scope names the service)."""
        counts: Counter[str] = Counter()
        path = self.state / "requests.jsonl"
        for request in json_objects(path.read_text() if path.exists() else ""):
            authorization = request["headers"].get("Authorization", "")
            scope = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
            if len(scope) >= 4 and scope[3] in COUNTED:
                counts[scope[3]] += 1
        return counts

    def measure(self, name: str, run: Callable[[], tuple[float, float]]) -> dict[str, Any]:
        """Requests by party and kind of ``run()`` until the fleet is back at zero,
        the emulator's count beside them, and what ``run()`` returned."""
        self.wait_for_zero()
        before = count_by_party(self.requests)
        self.record(start=True)
        value = run()
        self.wait_for_zero()
        self.record(start=False)
        after = count_by_party(self.requests)
        parties = {
            party: dict(sorted((counts - before.get(party, Counter())).items()))
            for party, counts in after.items()
        }
        parties = {party: counts for party, counts in parties.items() if counts}
        total = sum(sum(counts.values()) for counts in parties.values())
        server = self.recorded()
        if sum(server.values()) != total:
            print(f"  note: the emulator recorded {dict(server)}, the processes {total}")
        return {"name": name, "value": value, "requests": total, "by_party": parties,
                "emulator_recorded": dict(server)}  # fmt: skip

    def run_remote(self, tasks: int, task_ms: int) -> tuple[float, float]:
        """`taskfleet run --remote` of ``tasks`` sleeps; returns its CPU seconds and
        the seconds from its start to its first task's (the fleet starting)."""
        began = time.time()
        workload = self.directory / f"sleep{task_ms}x{tasks}.txt"
        workload.write_text(f"sleep {task_ms}\n" * tasks)
        output = self.directory / "results.jsonl"
        command = [TASKFLEET, "run", str(workload), "--remote", "--stack", STACK, "-o", str(output)]
        process = subprocess.Popen(command, env=self.environment, stderr=subprocess.PIPE)
        assert process.stderr is not None
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"taskfleet run failed: {stderr.decode(errors='replace')}")
        records = [json.loads(line) for line in output.read_text().splitlines()]
        if len({r["id"] for r in records}) != tasks or len(records) != tasks:
            raise SystemExit(f"{len(records)} records for {tasks} tasks")
        if any(r["status"] != "succeeded" for r in records):
            raise SystemExit("a task did not succeed")
        first = min(r["started_at"] for r in records)
        return usage.ru_utime + usage.ru_stime, first - began


def sleep0_experiment(bench: Bench) -> dict[str, Any]:
    rows = []
    for tasks in SLEEP0_TASKS:
        print(f"sleep0: {tasks:,} x sleep 0 ...", flush=True)
        row = bench.measure(f"{tasks} x sleep 0", partial(bench.run_remote, tasks, 0))
        row["per_1000_tasks"] = round(row["requests"] * 1000 / tasks, 2)
        predicted = job_requests(tasks, 0, MODEL_INSTANCES, model_stack(row["value"][1]))
        row["predicted"] = _plain(predicted)
        rows.append(row)
        print(f"  {row['requests']} requests: {row['per_1000_tasks']} per 1,000 tasks"
              f" (target <= 20); client CPU {row['value'][0]:.2f} s", flush=True)  # fmt: skip
        print(_by_party(row["by_party"]), flush=True)
        print(compare(row["by_party"], predicted), flush=True)
    small, large = rows
    per_record = (large["value"][0] - small["value"][0]) / (SLEEP0_TASKS[1] - SLEEP0_TASKS[0])
    print(f"  the client's CPU per record (10,000 less 1,000): {per_record * 1e6:.1f} us")
    return {"runs": rows, "client_cpu_per_record_us": round(per_record * 1e6, 1)}


def idle_experiment(bench: Bench) -> dict[str, Any]:
    window = IDLE_WINDOW_SECONDS
    figures: dict[str, Any] = {}
    print(f"idle: the stack with no jobs and the group at zero, {window} s ...", flush=True)
    bench.wait_for_zero()
    before = count_requests(bench.requests)
    bench.record(start=True)
    time.sleep(window)
    bench.record(start=False)
    quiet = sum((count_requests(bench.requests) - before).values())
    figures["group_at_zero_per_hour"] = round(quiet * 3600 / window, 1)
    figures["group_at_zero_emulator_recorded"] = dict(bench.recorded())
    print(f"  {quiet} requests ({dict(bench.recorded())} at the emulator)", flush=True)

    outputs = bench.outputs
    print(f"idle: one `taskfleet worker` idle for {window} s ...", flush=True)
    worker = [
        TASKFLEET, "worker", "--request-queue-url", outputs[Output.REQUEST_QUEUE_URL],
        "--response-queue-url", outputs[Output.RESPONSE_QUEUE_URL],
        "--claim-table", outputs[Output.CLAIM_TABLE_NAME],
        "--job-table", outputs[Output.JOB_TABLE_NAME],
        "--job-queue-prefix", outputs[Output.JOB_QUEUE_PREFIX],
        "--region", outputs[Output.REGION], "--instance-id", "i-idle-bench",
        "--idle-timeout", str(window), "--concurrency", str(SLOTS),
    ]  # fmt: skip
    figures["idle_worker"] = _per_hour(bench, worker, "worker")

    print(f"idle: one `taskfleet scheduler --stack` with no jobs for {window} s ...", flush=True)
    home = bench.directory / "scheduler-home"
    home.mkdir(exist_ok=True)
    scheduler = [
        TASKFLEET, "scheduler", "--port", "0", "--workers", "1", "--stack", STACK,
        "--journal", str(home / "journal.sqlite3"), "--exit-when-idle", str(window),
    ]  # fmt: skip
    figures["idle_scheduler"] = _per_hour(
        bench, scheduler, "client", {"HOME": str(home), "XDG_STATE_HOME": str(home)}
    )
    return figures


def _per_hour(
    bench: Bench, command: list[str], party: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """A process's requests over its life (it ends itself once idle long enough),
    and as a rate an hour."""
    before = count_by_party(bench.requests).get(party, Counter())
    began = time.monotonic()
    done = subprocess.run(
        command, env={**bench.environment, **(extra or {})}, capture_output=True, timeout=300,
        check=False,
    )  # fmt: skip
    lived = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{command[1]} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    spent = count_by_party(bench.requests).get(party, Counter()) - before
    total = sum(spent.values())
    row = {"seconds": round(lived, 1), "requests": dict(sorted(spent.items())),
           "per_hour": round(total * 3600 / lived, 1)}  # fmt: skip
    print(f"  {total} requests in {lived:.1f} s = {row['per_hour']} an hour: {dict(spent)}")
    return row


def model_stack(start_seconds: float) -> Stack:
    """The bench's stack, as the model takes it (with the fleet's start measured)."""
    return Stack(slots=SLOTS, idle_timeout=IDLE_TIMEOUT_SECONDS, start_seconds=start_seconds)


def model_experiment(bench: Bench) -> list[dict[str, Any]]:
    rows = []
    for tasks, task_ms in MODEL_JOBS:
        print(f"model: {tasks} x sleep {task_ms} on {MODEL_INSTANCES} x {SLOTS} ...", flush=True)
        row = bench.measure(f"{tasks} x sleep {task_ms}", partial(bench.run_remote, tasks, task_ms))
        started = row["value"][1]
        print(f"  the fleet started its first task {started:.1f} s after the command", flush=True)
        predicted = job_requests(tasks, task_ms, MODEL_INSTANCES, model_stack(started))
        row["predicted"] = _plain(predicted)
        print(compare(row["by_party"], predicted), flush=True)
        rows.append(row)
    return rows


def compare(measured: dict[str, dict[str, int]], predicted: Requests) -> str:
    """Measured beside predicted, by kind (all parties) and in all."""
    kinds: Counter[str] = Counter()
    for counts in measured.values():
        kinds.update(counts)
    guess: Counter[str] = Counter()
    for counts in predicted.values():
        guess.update(counts)
    lines = [f"  {'kind':<32} {'measured':>9} {'predicted':>9}  off"]
    for kind in sorted(set(kinds) | set(guess)):
        lines.append(_row(kind, kinds[kind], guess[kind]))
    lines.append(_row("all", sum(kinds.values()), sum(guess.values())))
    return "\n".join(lines)


def _row(kind: str, measured: int, predicted: int) -> str:
    off = (predicted - measured) / measured if measured else (0.0 if not predicted else 1.0)
    mark = "" if abs(off) <= AGREEMENT else "  (beyond 20 %)"
    return f"  {kind:<32} {measured:>9} {predicted:>9g} {off:+5.0%}{mark}"


def _by_party(parties: dict[str, dict[str, int]]) -> str:
    return "\n".join(
        f"    {party}: " + ", ".join(f"{kind} {n}" for kind, n in counts.items())
        for party, counts in sorted(parties.items())
    )


def _plain(requests: Requests) -> dict[str, dict[str, int]]:
    return {party: dict(sorted(counts.items())) for party, counts in requests.items()}


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a file the emulator appends to from several threads:
    one a line as a rule, though two may share a line."""
    decoder = json.JSONDecoder()
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        request, at = decoder.raw_decode(text, at)
        yield request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--only", action="append", choices=["sleep0", "idle", "model"],
                        help="run this experiment (again for more); default: all")  # fmt: skip
    args = parser.parse_args()
    report: dict[str, Any] = {}
    context = {
        "taskfleet:maxWorkers": str(MODEL_INSTANCES),
        "taskfleet:slotsPerInstance": str(SLOTS),
        "taskfleet:idleTimeoutSeconds": str(IDLE_TIMEOUT_SECONDS),
    }
    with counted_stack("taskfleet-requests-", context) as stack:
        bench = Bench(stack.directory, stack.requests, stack.state, stack.outputs)
        experiments = {
            "sleep0": sleep0_experiment,
            "model": model_experiment,
            "idle": idle_experiment,
        }
        for name, experiment in experiments.items():
            if args.only is None or name in args.only:
                report[name] = experiment(bench)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
