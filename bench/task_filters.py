"""How a job's status answers while signed-in users list its tasks: 60 parallel
`GET /jobs/ID/tasks?status=failed` (and `?slowest=true`) on a job of 200,000
finished tasks, and the latency of `GET /jobs/ID` meanwhile.

    .venv/bin/python -m bench.task_filters [--source SRC_DIR] [--tasks N]

It starts `taskfleet scheduler` on a free loopback port (from SRC_DIR when
given, e.g. an older checkout's src/, to compare), runs the job to its end,
then fires the filters for a while and prints what GET /jobs/ID took.
"""

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.service_attacks import start

PARALLEL = 60
SECONDS = 20.0
FAILED_EVERY = 200  # one task in 200 fails


def upload(tasks: int) -> bytes:
    lines = (
        {"file": "w.txt", "line": n, "task": "false" if n % FAILED_EVERY == 0 else "sleep 0"}
        for n in range(1, tasks + 1)
    )
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def run_job(url: str, headers: dict[str, str], tasks: int) -> str:
    began = time.monotonic()
    answer = httpx.post(f"{url}/jobs", content=upload(tasks), headers=headers, timeout=600)
    answer.raise_for_status()
    job = str(answer.json()["job"])
    while httpx.get(f"{url}/jobs/{job}", headers=headers).json()["finished"] < tasks:
        time.sleep(1)
    print(f"job of {tasks:,} tasks ran in {time.monotonic() - began:.0f} s")
    return job


def under_filters(url: str, headers: dict[str, str], job: str, query: str) -> list[float]:
    """GET /jobs/ID latencies, in ms, while PARALLEL clients ask for ``query`` in a loop."""
    stopping = threading.Event()
    filters = 0

    def ask() -> None:
        nonlocal filters
        with httpx.Client(headers=headers, timeout=600) as client:
            while not stopping.is_set():
                client.get(f"{url}/jobs/{job}/tasks?{query}&limit=50").raise_for_status()
                filters += 1

    askers = [threading.Thread(target=ask) for _ in range(PARALLEL)]
    for asker in askers:
        asker.start()
    time.sleep(1)
    latencies = []
    deadline = time.monotonic() + SECONDS
    with httpx.Client(headers=headers, timeout=600) as client:
        while time.monotonic() < deadline:
            began = time.monotonic()
            client.get(f"{url}/jobs/{job}").raise_for_status()
            latencies.append((time.monotonic() - began) * 1000)
            time.sleep(0.2)
    stopping.set()
    for asker in askers:
        asker.join()
    print(f"{query}: {filters / SECONDS:.0f} filter answers/s", end="; ")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description="Task filters against job status.")
    parser.add_argument("--source", help="run the scheduler from this src/ folder")
    parser.add_argument("--tasks", type=int, default=200_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        process, url = start(folder, options.source)
        try:
            token = (folder / "state" / "taskfleet" / "token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
            job = run_job(url, headers, options.tasks)
            for query in ("status=failed", "slowest=true"):
                ms = sorted(under_filters(url, headers, job, query))
                print(
                    f"GET /jobs/ID while {PARALLEL} ask: median {statistics.median(ms):.0f} ms,"
                    f" 95th {ms[int(len(ms) * 0.95)]:.0f} ms, worst {ms[-1]:.0f} ms"
                    f" ({len(ms)} asked)"
                )
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
