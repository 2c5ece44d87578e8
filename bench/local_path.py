"""Benchmarks of the local path, each beside a peer measured in the same run.

    python bench/local_path.py            # the full run (a few minutes)
    python bench/local_path.py --quick    # smaller workloads, same shape

Figures:
- start-up: a one-task file, `taskfleet run -w N` as a whole process beside
  a Python process doing one task on multiprocessing.Pool(N), N = 2 and 16;
- throughput: `sleep 0` tasks, 2 workers, `taskfleet run` end to end with
  results written, against multiprocessing.Pool(2).imap_unordered(chunksize=1)
  running the same per-task work (parse the line, run the built-in sleep):
  in-run (first task to last result) and whole process; also through the
  scheduler service (`taskfleet submit`);
- commands: 2,000 `true` on 1, 2, 4 and 8 workers, whole process, beside
  `xargs -P N` and GNU `parallel -j N` (each line through the shell; a peer
  that is not installed is shown as absent);
- heterogeneous workloads: a sorted one (short tasks first) and a heavy-tailed
  one (Pareto), 2 workers, makespan efficiency (ideal / measured) beside
  Pool(2) with chunksize 1;
- efficiency: `sleep 10` tasks, 1,000 per worker, 1-16 workers: ideal time
  over measured time, against a plain Pool on the same tasks;
- memory: the scheduler's peak RSS for 1,000,000 against 10,000 tasks, for
  `taskfleet run` and for the scheduler service.

Throughput and commands are the median of 5 runs, efficiency of 3, taskfleet and its peer
taking turns. Each taskfleet figure comes from a real `taskfleet` process; time is taken
from the first task dispatched to the last result written (the summary's
wall time), and the whole command's wall time is printed beside it.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from client.benchmark import output, runners
from client.benchmark.runners import Workload, command_seconds, taskfleet_figures
from client.benchmark.workloads import repeated, uneven_workloads
from client.cli.app import high_water_kib

TASKFLEET = str(Path(sys.executable).parent / "taskfleet")


def taskfleet_run(path: str, workers: int, directory: Path) -> dict[str, Any]:
    return taskfleet_figures(directory, "run", path, "--workers", str(workers))


class Service(runners.Service):
    """A `taskfleet scheduler` process for the benchmark, whose memory is read too."""

    def peak_rss_kib(self) -> int:
        kib = high_water_kib(self.process.pid)
        assert kib is not None, "no VmHWM in /proc"
        return kib

    def submit_figures(self, path: str, directory: Path) -> dict[str, Any]:
        return taskfleet_figures(directory, "submit", path, "--scheduler", self.url)


#: A whole Python process doing what a Pool user writes: the peer of a whole
#: `taskfleet run`. It parses each line and runs the built-in sleep, as a worker does.
POOL_SCRIPT = """
import sys, time
from multiprocessing import Pool

def task(line):
    time.sleep(int(line.split()[1]) / 1000)

if __name__ == "__main__":
    with open(sys.argv[1]) as lines, Pool(int(sys.argv[2])) as pool:
        for _ in pool.imap_unordered(task, lines.read().splitlines(), chunksize=1):
            pass
"""


def pool_whole_seconds(directory: Path, path: str, workers: int) -> float:
    script = directory / "pool_peer.py"
    script.write_text(POOL_SCRIPT)
    return command_seconds([sys.executable, str(script), path, str(workers)])


def run_whole_seconds(path: str, workers: int, directory: Path) -> float:
    output = directory / "results.jsonl"
    return command_seconds([TASKFLEET, "run", path, "-w", str(workers), "-o", str(output)])


def startup(directory: Path, repeats: int) -> list[dict[str, float]]:
    """One task, whole process: taskfleet run beside a Pool doing the same, taking turns."""
    path = repeated(directory, "one.txt", "sleep 0", 1)
    rows = []
    for workers in (2, 16):
        runs, peers = [], []
        for _ in range(repeats):
            runs.append(run_whole_seconds(path, workers, directory))
            peers.append(pool_whole_seconds(directory, path, workers))
        run, peer = statistics.median(runs), statistics.median(peers)
        rows.append({"workers": workers, "run_s": run, "pool_s": peer, "ratio": run / peer})
        print(f"  start-up, {workers} workers: run {run:.3f} s, Pool {peer:.3f} s", flush=True)
    return rows


#: Workers of the commands experiment.
COMMAND_WORKERS = (1, 2, 4, 8)


def commands(directory: Path, count: int, repeats: int) -> list[dict[str, float | None]]:
    """`true` lines, whole process: taskfleet run beside xargs -P and GNU parallel."""
    path = Path(repeated(directory, "true.txt", "true", count))
    has_parallel = shutil.which("parallel") is not None
    rows: list[dict[str, float | None]] = []
    for workers in COMMAND_WORKERS:
        runs, xargs, parallel = [], [], []
        for _ in range(repeats):
            runs.append(run_whole_seconds(str(path), workers, directory))
            xargs.append(
                command_seconds(["xargs", "-P", str(workers), "-I{}", "sh", "-c", "{}"], path)
            )
            if has_parallel:
                parallel.append(command_seconds(["parallel", "-j", str(workers)], path))
        row: dict[str, float | None] = {
            "workers": workers,
            "tasks": count,
            "run_s": statistics.median(runs),
            "xargs_s": statistics.median(xargs),
            "parallel_s": statistics.median(parallel) if parallel else None,
        }
        rows.append(row)
        print(f"  commands, {workers} workers: {row}", flush=True)
    return rows


def heterogeneous_workloads(directory: Path) -> dict[str, str]:
    return uneven_workloads(
        directory, short=4000, long=40, long_ms=200, tailed=400, scale_ms=10, cap_ms=2000
    )


def heterogeneous(directory: Path, repeats: int) -> list[dict[str, Any]]:
    """Makespan efficiency, 2 workers: ideal (work / workers, or the longest task) over
    first task to last result, taskfleet run beside Pool(2) chunksize 1."""
    rows = []
    for name, path in heterogeneous_workloads(directory).items():
        milliseconds = [int(line.split()[1]) for line in Path(path).read_text().splitlines()]
        ideal = max(sum(milliseconds) / 2, max(milliseconds)) / 1000
        runs, peers = [], []
        for _ in range(repeats):
            runs.append(taskfleet_run(path, 2, directory)["wall_seconds"])
            peers.append(runners.pool_lines_seconds(Path(path).read_text().splitlines(), 2))
        run, peer = statistics.median(runs), statistics.median(peers)
        rows.append(
            {
                "workload": name,
                "ideal_s": ideal,
                "run_s": run,
                "run_efficiency": ideal / run,
                "pool_s": peer,
                "pool_efficiency": ideal / peer,
            }
        )
        print(f"  {name}: taskfleet {ideal / run:.3f}, Pool {ideal / peer:.3f}", flush=True)
    return rows


def pool_seconds(tasks: int, line: str, workers: int) -> float:
    """Pool(workers).imap_unordered(chunksize=1) over the same task lines, first in to last out."""
    return runners.pool_seconds(Workload(line, tasks, workers), 1)


def throughput(directory: Path, tasks: int, repeats: int) -> dict[str, float]:
    path = repeated(directory, "throughput.txt", "sleep 0", tasks)
    # taskfleet and the peer take turns, so a change in the machine's load
    # (it is shared) falls on both alike.
    runs = []
    pool_runs = []
    pool_wholes = []
    for _ in range(repeats):
        runs.append(taskfleet_run(path, 2, directory))
        pool_runs.append(pool_seconds(tasks, "sleep 0", 2))
        pool_wholes.append(pool_whole_seconds(directory, path, 2))
    run_rate = statistics.median(r["throughput"] for r in runs)
    command = statistics.median(r["command_seconds"] for r in runs)
    peer = tasks / statistics.median(pool_runs)
    pool_whole = statistics.median(pool_wholes)
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
        "pool_whole_seconds": pool_whole,
        "whole_run_over_whole_pool": pool_whole / command,
        "submit_tasks_per_s": submit_rate,
        "submit_over_pool": submit_rate / peer,
    }


def efficiency(
    directory: Path, per_worker: int, workers_list: list[int], repeats: int
) -> list[dict[str, float]]:
    rows = []
    for workers in workers_list:
        tasks = per_worker * workers
        path = repeated(directory, f"sleep10-{workers}.txt", "sleep 10", tasks)
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
        path = repeated(directory, f"memory-{count}.txt", "sleep 0", count)
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
        print("start-up ...", flush=True)
        starts = startup(directory, 3 if quick else 7)
        results["startup"] = starts
        print("throughput ...", flush=True)
        tp = throughput(directory, 20_000 if quick else 300_000, 1 if quick else 5)
        results["throughput"] = tp
        print("commands ...", flush=True)
        cmds = commands(directory, 2000, 1 if quick else 5)
        results["commands"] = cmds
        print("heterogeneous workloads ...", flush=True)
        mixed = heterogeneous(directory, 1 if quick else 3)
        results["heterogeneous"] = mixed
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
    print("start-up, a one-task file, whole process (target: run <= 3x Pool):")
    for start in starts:
        print(
            f"  {start['workers']:2d} workers: taskfleet run {start['run_s']:.3f} s, "
            f"Pool({start['workers']}) {start['pool_s']:.3f} s = {start['ratio']:.2f}x"
        )
    print(
        f"throughput, {tp['tasks']:,} sleep-0 tasks, 2 workers (targets: in-run >= 15x Pool,"
        " whole process >= 10x Pool's whole process):"
    )
    print(
        f"  taskfleet run      {tp['run_tasks_per_s']:>10,.0f} tasks/s  "
        f"{tp['run_over_pool']:5.1f}x Pool in-run;  whole command {tp['run_command_seconds']:.2f} s"
        f" vs Pool's whole process {tp['pool_whole_seconds']:.2f} s ="
        f" {tp['whole_run_over_whole_pool']:.1f}x"
    )
    print(
        f"  taskfleet submit   {tp['submit_tasks_per_s']:>10,.0f} tasks/s  "
        f"{tp['submit_over_pool']:5.1f}x Pool"
    )
    print(f"  Pool chunksize=1   {tp['pool_chunksize1_tasks_per_s']:>10,.0f} tasks/s")
    print("commands, 2,000 `true`, whole process (target: taskfleet <= xargs, << parallel):")
    for cmd in cmds:
        parallel = "absent" if cmd["parallel_s"] is None else f"{cmd['parallel_s']:.2f} s"
        print(
            f"  {cmd['workers']} workers: taskfleet run {cmd['run_s']:.2f} s, "
            f"xargs -P {cmd['xargs_s']:.2f} s, parallel -j {parallel}"
        )
    print("heterogeneous workloads, 2 workers, makespan efficiency (ideal / measured):")
    for row in mixed:
        print(
            f"  {row['workload']:12}: taskfleet {row['run_efficiency']:.3f} "
            f"({row['run_s']:.2f} s), Pool(2) chunksize 1 {row['pool_efficiency']:.3f}"
            f" ({row['pool_s']:.2f} s); ideal {row['ideal_s']:.2f} s"
        )
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
