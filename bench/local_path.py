"""Benchmarks of the local path, each beside a peer measured in the same run.

    python bench/local_path.py            # the full run (a few minutes)
    python bench/local_path.py --quick    # smaller workloads, same shape

Figures:
- throughput: `sleep 0` tasks, 2 workers, `taskfleet run` end to end with
  results written, against multiprocessing.Pool(2).imap_unordered(chunksize=1)
  running the same per-task work (parse the line, run the built-in sleep);
  also through the scheduler service (`taskfleet submit`);
- efficiency: `sleep 10` tasks, 1,000 per worker, 1-16 workers: ideal time
  over measured time, against a plain Pool on the same tasks;
- memory: the scheduler's peak RSS for 1,000,000 against 10,000 tasks, for
  `taskfleet run` and for the scheduler service.

Throughput is the median of 5 runs, efficiency of 3, taskfleet and its peer
taking turns. Each taskfleet figure comes from a real `taskfleet` process; time is taken
from the first task dispatched to the last result written (the summary's
wall time), and the whole command's wall time is printed beside it.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from client.benchmark import output, runners
from client.benchmark.runners import Workload

TASKFLEET = str(Path(sys.executable).parent / "taskfleet")


def write_workload(directory: Path, name: str, line: str, count: int) -> str:
    path = directory / name
    with path.open("w") as handle:
        for _ in range(count):
            handle.write(line + "\n")
    return str(path)


def taskfleet(directory: Path, *args: str) -> dict[str, Any]:
    """Run a taskfleet command that writes results and a summary; return its figures."""
    summary = directory / "summary.json"
    output = directory / "results.jsonl"
    began = time.perf_counter()
    done = subprocess.run(
        [TASKFLEET, *args, "-o", str(output), "--summary", str(summary)],
        capture_output=True,
        text=True,
        check=False,
    )
    command_seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"taskfleet {args[0]} failed: {done.stderr}")
    figures: dict[str, Any] = json.loads(summary.read_text())
    lines = sum(1 for _ in output.open("rb"))
    assert lines == figures["tasks"], f"{lines} results for {figures['tasks']} tasks"
    figures["command_seconds"] = command_seconds
    return figures


def taskfleet_run(path: str, workers: int, directory: Path) -> dict[str, Any]:
    return taskfleet(directory, "run", path, "--workers", str(workers))


class Service(runners.Service):
    """A `taskfleet scheduler` process for the benchmark, whose memory is read too."""

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert match, "no VmHWM in /proc"
        return int(match.group(1))

    def submit_figures(self, path: str, directory: Path) -> dict[str, Any]:
        return taskfleet(directory, "submit", path, "--scheduler", self.url)


def pool_seconds(tasks: int, line: str, workers: int) -> float:
    """Pool(workers).imap_unordered(chunksize=1) over the same task lines, first in to last out."""
    return runners.pool_seconds(Workload(line, tasks, workers), 1)


def throughput(directory: Path, tasks: int, repeats: int) -> dict[str, float]:
    path = write_workload(directory, "throughput.txt", "sleep 0", tasks)
    # taskfleet and the peer take turns, so a change in the machine's load
    # (it is shared) falls on both alike.
    runs = []
    pool_runs = []
    for _ in range(repeats):
        runs.append(taskfleet_run(path, 2, directory))
        pool_runs.append(pool_seconds(tasks, "sleep 0", 2))
    run_rate = statistics.median(r["throughput"] for r in runs)
    command = statistics.median(r["command_seconds"] for r in runs)
    peer = tasks / statistics.median(pool_runs)
    service = Service(2, directory)
    try:
        submits = [service.submit_figures(path, directory) for _ in range(repeats)]
    finally:
        service.stop()
    submit_rate = statistics.median(s["throughput"] for s in submits)
    return {
        "tasks": tasks,
        "run_tasks_per_s": run_rate,
        "run_command_seconds": command,
        "pool_chunksize1_tasks_per_s": peer,
        "run_over_pool": run_rate / peer,
        "submit_tasks_per_s": submit_rate,
        "submit_over_pool": submit_rate / peer,
    }


def efficiency(
    directory: Path, per_worker: int, workers_list: list[int], repeats: int
) -> list[dict[str, float]]:
    rows = []
    for workers in workers_list:
        tasks = per_worker * workers
        path = write_workload(directory, f"sleep10-{workers}.txt", "sleep 10", tasks)
        ideal = per_worker * 0.010
        walls = []
        peers = []
        for _ in range(repeats):  # taking turns, as in throughput()
            walls.append(taskfleet_run(path, workers, directory)["wall_seconds"])
            peers.append(pool_seconds(tasks, "sleep 10", workers))
        wall = statistics.median(walls)
        peer = statistics.median(peers)
        rows.append(
            {
                "workers": workers,
                "tasks": tasks,
                "ideal_s": ideal,
                "taskfleet_s": wall,
                "taskfleet_efficiency": ideal / wall,
                "pool_s": peer,
                "pool_efficiency": ideal / peer,
            }
        )
        print(
            f"  efficiency, {workers:2d} workers: taskfleet {rows[-1]['taskfleet_efficiency']:.4f},"
            f" Pool {rows[-1]['pool_efficiency']:.4f}",
            flush=True,
        )
    return rows


def memory(directory: Path, small: int, large: int) -> dict[str, float]:
    figures: dict[str, float] = {"small_tasks": small, "large_tasks": large}
    for label, count in (("small", small), ("large", large)):
        path = write_workload(directory, f"memory-{count}.txt", "sleep 0", count)
        figures[f"run_{label}_rss_kib"] = taskfleet_run(path, 2, directory)["peak_rss_kib"]
        service = Service(2, directory)
        try:
            service.submit_figures(path, directory)
            figures[f"service_{label}_rss_kib"] = service.peak_rss_kib()
        finally:
            service.stop()
    figures["run_ratio"] = figures["run_large_rss_kib"] / figures["run_small_rss_kib"]
    figures["service_ratio"] = figures["service_large_rss_kib"] / figures["service_small_rss_kib"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    quick = args.quick
    results: dict[str, object] = {"machine": output.machine(), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="taskfleet-bench-") as temporary:
        directory = Path(temporary)
        print("throughput ...", flush=True)
        tp = throughput(directory, 20_000 if quick else 100_000, 1 if quick else 5)
        results["throughput"] = tp
        print("efficiency ...", flush=True)
        eff = efficiency(
            directory,
            100 if quick else 1000,
            [1, 2, 4] if quick else [1, 2, 4, 8, 16],
            1 if quick else 3,
        )
        results["efficiency"] = eff
        print("memory ...", flush=True)
        mem = memory(directory, 10_000, 100_000 if quick else 1_000_000)
        results["memory"] = mem

    print()
    print(f"machine: {results['machine']}")
    print(f"throughput, {tp['tasks']:,} sleep-0 tasks, 2 workers (target: run >= 15x Pool):")
    print(
        f"  taskfleet run      {tp['run_tasks_per_s']:>10,.0f} tasks/s  "
        f"{tp['run_over_pool']:5.1f}x Pool  (whole command {tp['run_command_seconds']:.2f} s)"
    )
    print(
        f"  taskfleet submit   {tp['submit_tasks_per_s']:>10,.0f} tasks/s  "
        f"{tp['submit_over_pool']:5.1f}x Pool"
    )
    print(f"  Pool chunksize=1   {tp['pool_chunksize1_tasks_per_s']:>10,.0f} tasks/s")
    print("efficiency, sleep 10 tasks, ideal / measured (target: taskfleet >= 0.99):")
    for row in eff:
        print(
            f"  {row['workers']:2d} workers, {row['tasks']:6,} tasks: taskfleet "
            f"{row['taskfleet_efficiency']:.4f}  Pool {row['pool_efficiency']:.4f}"
        )
    print(
        f"memory, scheduler peak RSS, {mem['large_tasks']:,} vs {mem['small_tasks']:,} tasks"
        " (target: <= 1.5x):"
    )
    print(
        f"  taskfleet run      {mem['run_large_rss_kib'] / 1024:6.1f} MiB vs "
        f"{mem['run_small_rss_kib'] / 1024:6.1f} MiB  = {mem['run_ratio']:.2f}x"
    )
    print(
        f"  scheduler service  {mem['service_large_rss_kib'] / 1024:6.1f} MiB vs "
        f"{mem['service_small_rss_kib'] / 1024:6.1f} MiB  = {mem['service_ratio']:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
