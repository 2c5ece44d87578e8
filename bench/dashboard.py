"""What watching costs: a scheduler's throughput with a dashboard open and
without, and the server time of one dashboard update beside a job of 1,000
tasks and one of 1,000,000.

    .venv/bin/python bench/dashboard.py [--tasks 100000] [--repeat 3]

It starts `taskfleet scheduler` (2 workers) in a state folder of its own. A
"dashboard open" is a reader of `GET /events`, as the page keeps one. Runs with
and without it take turns, so a change in the machine's load falls on both.
"""

import argparse
import json
import os
import statistics
import tempfile
import threading
from pathlib import Path

import httpx

from client.benchmark.runners import Service, taskfleet_figures
from client.benchmark.workloads import repeated


class Watcher(threading.Thread):
    """A dashboard: it reads the event stream and keeps each update's server time."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.server_ms: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = httpx.Timeout(10.0, read=None)
        with httpx.stream("GET", f"{self.url}/events", headers=headers, timeout=timeout) as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    self.server_ms.append(json.loads(line[6:])["server_ms"])
                if self.stop.is_set():
                    return


def updates(url: str, token: str, count: int) -> list[float]:
    """Server milliseconds of the next ``count`` updates."""
    watcher = Watcher(url, token)
    watcher.start()
    while len(watcher.server_ms) < count:
        watcher.join(0.2)
    watcher.stop.set()
    return watcher.server_ms[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="throughput job's tasks")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskfleet-dashboard-") as scratch:
        folder = Path(scratch)
        os.environ["XDG_STATE_HOME"] = str(folder / "state")  # a token of its own
        service = Service(2, folder)
        try:
            token = (folder / "state" / "taskfleet" / "token").read_text().strip()
            # Per case: (in-run tasks/s, whole `taskfleet submit` seconds) of each run.
            figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            path = repeated(folder, "throughput.txt", "sleep 0", args.tasks)
            for _ in range(args.repeat):
                for watched in (False, True):
                    watcher = Watcher(service.url, token) if watched else None
                    if watcher is not None:
                        watcher.start()
                    run = taskfleet_figures(folder, "submit", path, "--scheduler", service.url)
                    if watcher is not None:
                        watcher.stop.set()
                    figures[watched].append((run["throughput"], run["command_seconds"]))
            runs = f"median of {args.repeat}"
            print(f"service throughput, {args.tasks:,} sleep-0 tasks, 2 workers, {runs}:")
            rate = {case: statistics.median(r for r, _ in runs_) for case, runs_ in figures.items()}
            whole = {
                case: statistics.median(s for _, s in runs_) for case, runs_ in figures.items()
            }
            for case, label in ((False, "no dashboard  "), (True, "dashboard open")):
                print(
                    f"  {label} {rate[case]:10,.0f} tasks/s in-run"
                    f" ({rate[case] / rate[False]:.3f}x); whole submit {whole[case]:.2f} s"
                )

            print("one dashboard update's server time (median of 10), beside a job of:")
            for tasks in (1_000, 1_000_000):
                job = repeated(folder, f"job-{tasks}.txt", "sleep 0", tasks)
                taskfleet_figures(folder, "submit", job, "--scheduler", service.url)
                server_ms = statistics.median(updates(service.url, token, 10))
                print(f"  {tasks:>9,} tasks: {server_ms:.3f} ms")
        finally:
            service.stop()


if __name__ == "__main__":
    main()
