"""Where the time of a quick command and of start-up goes, on the local path.

    python bench/command_costs.py            # 3,000 `true`, best of 7 start-ups
    python bench/command_costs.py --quick

Figures:
- start-up, whole process (best of 7): the interpreter, then what each import
  adds (typer, the CLI, the local path's modules), then a one-task `taskfleet
  run -w 1`;
- a command, `true` on 1 worker: from a real `taskfleet run -o FILE`, its
  records' mean duration and the mean gap between one command's end and the
  next one's start; beside it, a bare loop of `os.posix_spawn` and `waitpid`
  (the least a command can cost from Python) and `xargs -P 1 -I{} sh -c {}`
  per command, over the same file;
- the worker's own steps for a command, timed one by one in a loop of its
  functions: the pidfd and the wait, the spools and the outcome, the task-log
  entry, the program lookup and the clock.
"""

import argparse
import itertools
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker.execute import ShellRunner, _finished, _read_spool
from worker.result import Status
from worker.task_log import TaskLog, new_ring

PYTHON = sys.executable
TASKFLEET = str(Path(PYTHON).parent / "taskfleet")


def best_seconds(command: list[str], repeats: int) -> float:
    """The shortest whole-process time of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - began)
    return min(times)


def startup(directory: Path, repeats: int) -> list[tuple[str, float]]:
    one = directory / "one.txt"
    one.write_text("sleep 0\n")
    steps = [
        ("interpreter", [PYTHON, "-c", "pass"]),
        ("+ typer", [PYTHON, "-c", "import typer"]),
        ("+ the CLI", [PYTHON, "-c", "import client.cli"]),
        ("+ the local path", [PYTHON, "-c", "import client.cli, scheduler.local.run"]),
        ("taskfleet run, one task", [TASKFLEET, "run", str(one), "-w", "1", "-o", os.devnull]),
    ]
    return [(name, best_seconds(command, repeats)) for name, command in steps]


def run_records(directory: Path, path: Path) -> tuple[float, float, float]:
    """Mean duration and mean gap between commands (µs), and the whole run (s)."""
    output = directory / "records.jsonl"
    began = time.perf_counter()
    command = [TASKFLEET, "run", str(path), "-w", "1", "-o", str(output)]
    subprocess.run(command, stderr=subprocess.DEVNULL, check=True)
    whole = time.perf_counter() - began
    records = sorted(
        (json.loads(line) for line in output.read_text().splitlines()),
        key=lambda r: r["started_at"],
    )
    duration = sum(r["duration_ms"] for r in records) / len(records) * 1000
    gaps = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(records)]
    return duration, sum(gaps) / len(gaps) * 1e6, whole


def bare_spawn_us(count: int) -> float:
    environment = dict(os.environb)
    began = time.perf_counter()
    for _ in range(count):
        os.waitpid(os.posix_spawn("/usr/bin/true", ["true"], environment), 0)
    return (time.perf_counter() - began) / count * 1e6


def worker_steps_us(count: int, directory: Path) -> dict[str, float]:
    """The worker's steps around each command, as ShellRunner.run takes them."""
    runner = ShellRunner()
    log = TaskLog(directory / "task.log", new_ring())
    spent = dict.fromkeys(
        ["pidfd and wait", "spools and outcome", "task log", "lookup and clock"], 0
    )
    clock = time.perf_counter_ns
    for index in range(count):
        t0 = clock()
        started_at, began = time.time(), time.perf_counter()
        program, arguments = runner.argv("true")
        t1 = clock()
        command = runner._start(program, arguments)
        t2 = clock()
        pidfd = os.pidfd_open(command.pid)
        watch = select.poll()
        watch.register(pidfd, select.POLLIN)
        t3 = clock()
        watch.poll(500)
        t4 = clock()
        os.close(pidfd)
        code = command.wait()
        t5 = clock()
        out, _ = _read_spool(runner._stdout.fileno())
        err, _ = _read_spool(runner._stderr.fileno())
        outcome = _finished(Status.SUCCEEDED, code, started_at, began, stdout=out, stderr=err)
        t6 = clock()
        log.outcome(1, index, outcome)
        t7 = clock()
        spent["lookup and clock"] += t1 - t0
        spent["pidfd and wait"] += (t3 - t2) + (t5 - t4)
        spent["spools and outcome"] += t6 - t5
        spent["task log"] += t7 - t6
    runner.close()
    log.close()
    return {name: ns / count / 1000 for name, ns in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer commands and start-ups")
    quick = parser.parse_args().quick
    count = 500 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="taskfleet-costs-") as temporary:
        directory = Path(temporary)
        print("start-up, whole process (best of runs):")
        rows = startup(directory, 3 if quick else 7)
        for n, (name, seconds) in enumerate(rows):
            # Each import row adds to the one before it.
            added = f"  (+{(seconds - rows[n - 1][1]) * 1000:.1f} ms)" if 0 < n < 4 else ""
            print(f"  {name:26} {seconds * 1000:6.1f} ms{added}")
        path = directory / "true.txt"
        path.write_text("true\n" * count)
        duration, gap, whole = run_records(directory, path)
        began = time.perf_counter()
        with path.open("rb") as lines:
            xargs = ["xargs", "-P", "1", "-I{}", "sh", "-c", "{}"]
            subprocess.run(xargs, stdin=lines, check=True)
        xargs_whole = time.perf_counter() - began
        print(f"a command, {count:,} `true` on 1 worker:")
        print(f"  taskfleet run: {duration:.0f} us a command + {gap:.0f} us between two;")
        print(f"    whole command {whole:.2f} s")
        per_command = xargs_whole / count * 1e6
        print(f"  xargs -P 1: whole command {xargs_whole:.2f} s ({per_command:.0f} us a command)")
        print(f"  bare posix_spawn + waitpid loop: {bare_spawn_us(count):.0f} us a command")
        print("the worker's own steps, a command:")
        steps = worker_steps_us(count, directory)
        for name, micros in steps.items():
            print(f"  {name:20} {micros:5.1f} us")
        print(f"  {'in all':20} {sum(steps.values()):5.1f} us")


if __name__ == "__main__":
    main()
