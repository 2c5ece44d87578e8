"""Files in and out of fleet jobs, beside the per-file transfers a user writes by hand.

    python -m bench.files_path            # 200 tasks, a 50 MB input (a few minutes)
    python -m bench.files_path --quick    # 40 tasks, a 10 MB input

It stands the stack up as `make local-aws-up` does (moto_server, the real CDK
CLI, the local fleet: one `taskfleet worker` per in-service instance, each in
a directory of its own), at most WORKERS instances of SLOTS slots, and runs
the same tasks twice on it, each time from a group at zero until the group is
back at zero. Every task reads slices of one shared input and writes
``small_files`` small files and one larger file.

- taskfleet: the real `taskfleet run --remote --upload input.bin --output-dir
  out`. The input travels once per job and is fetched once per instance; each
  task's files come back as one tar.
- by hand: the same tasks, each wrapped in bench/files_by_hand.py: the task
  downloads the input itself (one GET a task) and uploads each file it wrote
  (one PUT a file), with the credentials and endpoint its worker has (on the
  emulated fleet a task inherits its worker's environment; on real instances
  tasks run as the task user, without the instance role). The bench process
  plays the user around a plain `taskfleet run --remote`: one PUT of the
  input before, and after, a listing and one GET a file, 10 at a time as
  `aws s3 cp --recursive` does.

How each figure is derived (all measured in this run):

- wall: of the `taskfleet run --remote` process (started and waited for
  here, as /usr/bin/time would); by hand, the input's upload + that command
  + fetching the outputs.
- requests per task: every SQS, DynamoDB and S3 request of every process (the
  command, the workers, the tasks, the bench as the user by hand), counted
  with botocore's event hooks (bench/aws_calls.py) from just before the run
  until the fleet is back at zero (idle polls included), ÷ tasks. For
  taskfleet, the job's own usage (`--summary`: s3_reads, s3_writes, s3_bytes)
  is shown beside.
- input fetched: taskfleet, the input's blob in each instance's cache (each
  fetched once; the workers' GETs are counted); by hand, the bytes each task
  says it downloaded, by the record's worker.
- input throughput as an instance sees it: the rate of a download. taskfleet:
  the blob's size ÷ the time from its partial file's first sight (the bench
  looks every POLL_SECONDS) to its last write (its mtime): the body's
  transfer, hash and write, not the GET's first byte; by hand: each task's
  own timing of its GET over the same span (from the answer to the last
  write; with the request, in the JSON), summed per instance. The median
  over instances.
- task seconds: the median of the records' durations, and by hand, of the
  time the transfers took in each (the rest is the task's Python and boto3
  starting, and the work).
- output throughput: the bytes of the files on the user's disk at the end ÷
  the time from the first task's start (its record's started_at) to the last
  write of any of them (its mtime): taskfleet unpacks each task's tar as its
  record arrives; by hand, the user fetches the files once the command ends.
"""

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import boto3

from bench.aws_calls import COUNTED, count_by_party
from bench.emulated_stack import counted_stack
from bench.remote_path import Group
from client.benchmark.output import machine
from scripts import local_aws
from worker.contracts import Output

STACK = "Taskfleet"
TASKFLEET = str(Path(sys.executable).parent / "taskfleet")

#: The stack: instances at most, slots each, and the workers' idle timeout.
WORKERS = 4
SLOTS = 2
IDLE_TIMEOUT_SECONDS = 5

#: The shared input's name in each task's directory.
INPUT = "input.bin"

#: How often the bench looks for an instance's input fetch under way.
POLL_SECONDS = 0.01

#: Files fetched at once by the user by hand (`aws s3 cp --recursive`'s default).
FETCH_CONCURRENCY = 10

MB = 1_000_000


class Sizes(NamedTuple):
    """The job: tasks, the shared input, and what each task writes."""

    tasks: int
    input_bytes: int
    small_files: int
    small_bytes: int
    large_bytes: int

    @property
    def output_bytes_per_task(self) -> int:
        return self.small_files * self.small_bytes + self.large_bytes

    def describe(self) -> str:
        return (
            f"{self.tasks} tasks on at most {WORKERS} instances x {SLOTS} slots; a shared "
            f"input of {self.input_bytes / MB:g} MB; each task writes {self.small_files} files "
            f"of {self.small_bytes / 1024:g} KiB and one of {self.large_bytes / MB:g} MB"
        )


FULL = Sizes(tasks=200, input_bytes=50 * MB, small_files=10, small_bytes=4096, large_bytes=MB)
QUICK = Sizes(tasks=40, input_bytes=10 * MB, small_files=10, small_bytes=4096, large_bytes=MB // 4)


def work_line(sizes: Sizes, line: int) -> str:
    """Task ``line``'s work: its large file and its small ones, slices of the input
    at an offset of its own (so that every task's files differ)."""
    small = sizes.small_files * sizes.small_bytes
    span = sizes.input_bytes - sizes.large_bytes - small
    if span <= 0:
        raise ValueError(f"{sizes}: the input is smaller than what a task writes")
    start = (line - 1) * sizes.large_bytes % span + 1  # tail -c +N counts from 1
    return (
        f"tail -c +{start} {INPUT} | head -c {sizes.large_bytes} > large.bin && "
        f"tail -c +{start + sizes.large_bytes} {INPUT} | head -c {small} "
        f"| split -b {sizes.small_bytes} -d -a 3 - small-"
    )


def by_hand_line(sizes: Sizes, line: int, bucket: str, prefix: str) -> str:
    """Task ``line`` by hand: the same work, moving its own files (bench/files_by_hand.py)."""
    return shlex.join(
        [sys.executable, "-m", "bench.files_by_hand", bucket, f"{prefix}/{INPUT}", INPUT,
         f"{prefix}/out/{line}", work_line(sizes, line)]
    )  # fmt: skip


def by_service(counts: Counter[str]) -> dict[str, int]:
    """Requests ("service operation": count) by service, every counted one named."""
    services = dict.fromkeys(COUNTED, 0)
    for kind, count in counts.items():
        service = kind.split(" ", 1)[0]
        services[service] = services.get(service, 0) + count
    return services


def per_task(services: dict[str, int], tasks: int) -> dict[str, float]:
    """Requests per task, by service and in all."""
    rates = {service: round(count / tasks, 2) for service, count in services.items()}
    rates["all"] = round(sum(services.values()) / tasks, 2)
    return rates


def mb_per_s(size: int, seconds: float | None) -> float | None:
    """Megabytes (10^6 bytes) a second; None when the time is unknown or nil."""
    if seconds is None or seconds <= 0:
        return None
    return round(size / MB / seconds, 1)


def rates_by_instance(transfers: list[tuple[str, int, float | None]]) -> dict[str, float | None]:
    """(instance, bytes, seconds) transfers as each instance's rate: its bytes ÷
    its seconds (unknown if any of its times is)."""
    sizes: Counter[str] = Counter()
    times: dict[str, float | None] = {}
    for instance, size, seconds in transfers:
        sizes[instance] += size
        before = times.get(instance, 0.0)
        times[instance] = None if before is None or seconds is None else before + seconds
    return {instance: mb_per_s(sizes[instance], times[instance]) for instance in sorted(sizes)}


def median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 1) if known else None


#: The table: label, the figure's key in a run's summary, its unit.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("wall", "wall_seconds", "s"),
    ("S3 requests per task", "s3_per_task", ""),
    ("SQS requests per task", "sqs_per_task", ""),
    ("DynamoDB requests per task", "dynamodb_per_task", ""),
    ("input fetched in total", "input_fetched_mb", "MB"),
    ("input fetched per instance", "input_fetched_per_instance_mb", "MB"),
    ("input MB/s as an instance sees it", "input_mb_per_s", ""),
    ("output brought back", "output_mb", "MB"),
    ("output MB/s, first start to on disk", "output_mb_per_s", ""),
)


def table(runs: dict[str, dict[str, Any]]) -> str:
    """The runs' summaries side by side, a row a figure."""
    width = max(len(f"{label} ({unit})" if unit else label) for label, _, unit in ROWS) + 2
    lines = [f"{'':<{width}}" + "".join(f"{name:>12}" for name in runs)]
    for label, key, unit in ROWS:
        name = f"{label} ({unit})" if unit else label
        cells = "".join(f"{_cell(run.get(key)):>12}" for run in runs.values())
        lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"
    return f"{value:,}"


def summary(
    sizes: Sizes,
    wall: float,
    requests: dict[str, int],
    fetched: dict[str, int],
    input_rates: dict[str, float | None],
    output_bytes: int,
    output_seconds: float,
) -> dict[str, Any]:
    """A run's figures for the table: ``fetched`` is the input's bytes fetched
    by instance, ``input_rates`` each instance's download rate."""
    rates = per_task(requests, sizes.tasks)
    total = sum(fetched.values())
    return {
        "wall_seconds": round(wall, 1),
        "s3_per_task": rates["s3"],
        "sqs_per_task": rates["sqs"],
        "dynamodb_per_task": rates["dynamodb"],
        "all_per_task": rates["all"],
        "instances": len(fetched),
        "input_fetched_mb": round(total / MB, 1),
        "input_fetched_per_instance_mb": round(total / MB / len(fetched), 1) if fetched else None,
        "input_mb_per_s": median(list(input_rates.values())),
        "output_mb": round(output_bytes / MB, 1),
        "output_mb_per_s": mb_per_s(output_bytes, output_seconds),
    }


class FetchWatcher(threading.Thread):
    """Notes when each instance of the local fleet began fetching a blob: when
    its partial file (worker/instance_inputs.py) is first seen."""

    def __init__(self, state: Path, sha256: str) -> None:
        super().__init__(daemon=True)
        self.state = state
        self.sha256 = sha256
        self.began: dict[str, float] = {}
        self._done = threading.Event()

    def _blobs(self) -> dict[str, Path]:
        return {
            path.parents[2].name.removesuffix(".state"): path
            for path in self.state.glob("*.state/files/inputs/blobs")
        }

    def run(self) -> None:
        while not self._done.is_set():
            for instance, blobs in self._blobs().items():
                if instance not in self.began and (blobs / f".{self.sha256}.partial").exists():
                    self.began[instance] = time.time()
            self._done.wait(POLL_SECONDS)

    def stop(self) -> dict[str, tuple[int, float | None]]:
        """Each instance's fetch of the blob: its size, and seconds from its
        partial file's first sight to its last write (None if never seen)."""
        self._done.set()
        self.join()
        fetches: dict[str, tuple[int, float | None]] = {}
        for instance, blobs in self._blobs().items():
            blob = blobs / self.sha256
            if blob.exists():
                status = blob.stat()
                began = self.began.get(instance)
                seconds = None if began is None else status.st_mtime - began
                fetches[instance] = (status.st_size, seconds)
        return fetches


class Bench:
    """The stack on the emulator, the user's folder, and the requests' count."""

    def __init__(self, directory: Path, state: Path, outputs: dict[str, str]) -> None:
        self.directory = directory
        self.requests = directory / "requests"
        self.state = state
        self.bucket = outputs[Output.JOB_FILES_BUCKET]
        self.group = Group(outputs[Output.GROUP_NAME])
        self.environment = local_aws.environment(local_aws.emulator_of(state)["port"])

    def counted(self) -> dict[str, Counter[str]]:
        return count_by_party(self.requests)

    def spent(self, before: dict[str, Counter[str]]) -> dict[str, Counter[str]]:
        """Requests by party since ``before``."""
        after = self.counted()
        spent = {party: counts - before.get(party, Counter()) for party, counts in after.items()}
        return {party: counts for party, counts in spent.items() if counts}

    def run(self, cwd: Path, *args: str) -> tuple[float, float, list[dict[str, Any]]]:
        """`taskfleet run ARGS --remote`: its wall seconds, when it ended (epoch)
        and its records, every one of them a success."""
        output = cwd / "results.jsonl"
        command = [TASKFLEET, "run", *args, "--remote", "--stack", STACK, "-o", str(output)]
        began = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=self.environment, capture_output=True)
        wall, ended = time.perf_counter() - began, time.time()
        if done.returncode != 0:
            raise SystemExit(f"taskfleet run failed:\n{done.stderr.decode(errors='replace')}")
        records = [json.loads(line) for line in output.read_text().splitlines()]
        if any(record["status"] != "succeeded" for record in records):
            raise SystemExit("a task did not succeed")
        return wall, ended, records


def check_records(records: list[dict[str, Any]], sizes: Sizes) -> None:
    lines = sorted(record["line"] for record in records)
    if lines != list(range(1, sizes.tasks + 1)):
        raise SystemExit(f"{len(records)} records for {sizes.tasks} tasks")


def task_seconds(records: list[dict[str, Any]]) -> float:
    """The median of the records' durations."""
    durations: list[float] = [record["duration_ms"] for record in records]
    return round(statistics.median(durations) / 1000, 3)


def on_disk(folder: Path) -> tuple[int, int, float]:
    """Files and bytes under ``folder``, and when the last of them was written."""
    files = [path.stat() for path in folder.rglob("*") if path.is_file()]
    return len(files), sum(f.st_size for f in files), max((f.st_mtime for f in files), default=0)


def taskfleet_run(bench: Bench, sizes: Sizes, data: bytes) -> dict[str, Any]:
    user = bench.directory / "taskfleet"
    user.mkdir()
    (user / INPUT).write_bytes(data)
    workload = user / "w.txt"
    workload.write_text("".join(work_line(sizes, n) + "\n" for n in range(1, sizes.tasks + 1)))
    print(f"taskfleet: run --remote --upload {INPUT} --output-dir out ...", flush=True)
    bench.group.wait_for_zero(bench.requests)
    before = bench.counted()
    watcher = FetchWatcher(bench.state, hashlib.sha256(data).hexdigest())
    watcher.start()
    wall, ended, records = bench.run(
        user, str(workload), "--upload", INPUT, "--output-dir", "out", "--summary", "summary.json"
    )
    bench.group.wait_for_zero(bench.requests)
    fetches = watcher.stop()
    spent = bench.spent(before)
    check_records(records, sizes)
    files = [file for record in records for file in record["files"]]
    if len(files) != sizes.tasks * (sizes.small_files + 1):
        raise SystemExit(f"{len(files)} files came back")
    output_bytes = sum(file["size"] for file in files)
    *found, landed = on_disk(user / "out")
    if found != [len(files), output_bytes]:
        raise SystemExit(f"out/ holds {found} files and bytes, the records say otherwise")
    ran_on = Counter(record["worker"] for record in records)
    fetches = {instance: fetches[instance] for instance in ran_on if instance in fetches}
    if sorted(fetches) != sorted(ran_on):
        raise SystemExit(f"input fetched by {sorted(fetches)}, tasks ran on {sorted(ran_on)}")
    first = min(record["started_at"] for record in records)
    input_rates = rates_by_instance([(i, size, seconds) for i, (size, seconds) in fetches.items()])
    usage = json.loads((user / "summary.json").read_text())["usage"]
    everyone: Counter[str] = sum(spent.values(), Counter())
    figures = summary(
        sizes, wall, by_service(everyone), {i: size for i, (size, _) in fetches.items()},
        input_rates, output_bytes, landed - first,
    )  # fmt: skip
    return {
        "summary": figures,
        "tasks_by_instance": dict(sorted(ran_on.items())),
        "input_fetch_by_instance": {
            i: {"bytes": size, "seconds": None if s is None else round(s, 3)}
            for i, (size, s) in sorted(fetches.items())
        },
        "input_mb_per_s_by_instance": input_rates,
        "worker_input_gets": spent.get("worker", Counter())["s3 GetObject"],
        "job_usage": {key: usage.get(key) for key in ("s3_reads", "s3_writes", "s3_bytes")},
        "requests_by_party": {party: dict(sorted(c.items())) for party, c in spent.items()},
        "output_files": len(files),
        "task_seconds_median": task_seconds(records),
        "first_start_to_last_file_seconds": round(landed - first, 2),
        "first_start_to_exit_seconds": round(ended - first, 2),
    }


def by_hand_run(bench: Bench, sizes: Sizes, data: bytes) -> dict[str, Any]:
    user = bench.directory / "by-hand"
    user.mkdir()
    prefix = f"by-hand/{uuid.uuid4().hex[:12]}"
    workload = user / "w.txt"
    lines = (by_hand_line(sizes, n, bench.bucket, prefix) + "\n" for n in range(1, sizes.tasks + 1))
    workload.write_text("".join(lines))
    s3: Any = boto3.client("s3")  # the default session's: its requests are counted
    print("by hand: PUT the input, run --remote (a GET and a PUT a file in each task), "
          "GET each file ...", flush=True)  # fmt: skip
    bench.group.wait_for_zero(bench.requests)
    before = bench.counted()
    began = time.perf_counter()
    s3.put_object(Bucket=bench.bucket, Key=f"{prefix}/{INPUT}", Body=data)
    uploaded = time.perf_counter() - began
    command_wall, _, records = bench.run(user, str(workload))
    began = time.perf_counter()
    fetched_files = fetch_prefix(s3, bench.bucket, f"{prefix}/out/", user / "out")
    fetching = time.perf_counter() - began
    bench.group.wait_for_zero(bench.requests)
    spent = bench.spent(before)
    check_records(records, sizes)
    moved = {record["line"]: json.loads(record["stdout"]) for record in records}
    files, output_bytes, landed = on_disk(user / "out")
    if files != sizes.tasks * (sizes.small_files + 1) or fetched_files != files:
        raise SystemExit(f"{files} files came back")
    if output_bytes != sizes.tasks * sizes.output_bytes_per_task:
        raise SystemExit(f"{output_bytes} bytes came back")
    by_instance: Counter[str] = Counter()
    downloads, uploads = [], []
    for record in records:
        task = moved[record["line"]]
        by_instance[record["worker"]] += task["input_bytes"]
        downloads.append((record["worker"], task["input_bytes"], task["input_seconds"]))
        uploads.append((record["worker"], task["output_bytes"], task["output_seconds"]))
    first = min(record["started_at"] for record in records)
    input_rates = rates_by_instance(downloads)
    everyone: Counter[str] = sum(spent.values(), Counter())
    wall = uploaded + command_wall + fetching
    figures = summary(
        sizes, wall, by_service(everyone), dict(by_instance), input_rates, output_bytes,
        landed - first,
    )  # fmt: skip
    return {
        "summary": figures,
        "input_upload_seconds": round(uploaded, 2),
        "command_wall_seconds": round(command_wall, 1),
        "output_fetch_seconds": round(fetching, 2),
        "tasks_by_instance": dict(sorted(Counter(r["worker"] for r in records).items())),
        "input_mb_per_s_by_instance": input_rates,
        "task_put_mb_per_s_by_instance": rates_by_instance(uploads),
        "requests_by_party": {party: dict(sorted(c.items())) for party, c in spent.items()},
        "output_files": files,
        "task_seconds_median": task_seconds(records),
        "task_transfer_seconds_median": round(
            statistics.median(
                t["input_request_seconds"] + t["output_seconds"] for t in moved.values()
            ),
            3,
        ),
        "task_download_with_request_mb_per_s_median": median(
            [mb_per_s(t["input_bytes"], t["input_request_seconds"]) for t in moved.values()]
        ),
        "first_start_to_last_file_seconds": round(landed - first, 2),
    }


def fetch_prefix(s3: Any, bucket: str, prefix: str, into: Path) -> int:
    """Every object under ``prefix`` into ``into`` (a GET each, FETCH_CONCURRENCY at
    a time, as `aws s3 cp --recursive`); how many."""
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]

    def fetch(key: str) -> None:
        target = into / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    with ThreadPoolExecutor(FETCH_CONCURRENCY) as pool:
        list(pool.map(fetch, keys))
    return len(keys)


def report_run(name: str, run: dict[str, Any]) -> None:
    figures = run["summary"]
    print(
        f"  {name}: wall {figures['wall_seconds']} s; {figures['all_per_task']} requests a task "
        f"(S3 {figures['s3_per_task']}, SQS {figures['sqs_per_task']}, DynamoDB "
        f"{figures['dynamodb_per_task']}); tasks by instance {run['tasks_by_instance']}; input "
        f"MB/s by instance {run['input_mb_per_s_by_instance']}",
        flush=True,
    )
    for key in (
        "input_fetch_by_instance", "worker_input_gets", "job_usage", "input_upload_seconds",
        "command_wall_seconds", "output_fetch_seconds", "task_put_mb_per_s_by_instance",
        "first_start_to_last_file_seconds", "first_start_to_exit_seconds",
        "task_seconds_median", "task_transfer_seconds_median",
        "task_download_with_request_mb_per_s_median",
    ):  # fmt: skip
        if key in run:
            print(f"    {key}: {run[key]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 tasks and a 10 MB input")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    print(sizes.describe(), flush=True)
    context = {
        "taskfleet:maxWorkers": str(WORKERS),
        "taskfleet:slotsPerInstance": str(SLOTS),
        "taskfleet:idleTimeoutSeconds": str(IDLE_TIMEOUT_SECONDS),
    }
    # This process counts too: the user's own transfers, by hand.
    with counted_stack("taskfleet-files-", context, count_here=True) as stack:
        bench = Bench(stack.directory, stack.state, stack.outputs)
        data = os.urandom(sizes.input_bytes)  # new content: the upload really goes up
        runs = {"taskfleet": taskfleet_run(bench, sizes, data)}
        report_run("taskfleet", runs["taskfleet"])
        runs["by hand"] = by_hand_run(bench, sizes, data)
        report_run("by hand", runs["by hand"])
    print(sizes.describe())
    print(table({name: run["summary"] for name, run in runs.items()}))
    report = {
        "machine": {**machine(), "boto3": boto3.__version__},
        "sizes": sizes._asdict(),
        "settings": {**context, "poll_seconds": POLL_SECONDS},
        "runs": runs,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
