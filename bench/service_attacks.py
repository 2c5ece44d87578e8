"""Attacks on a scheduler service process, and what each got: a web page's
cross-site POST, a DNS-rebinding Host, 300 slow connections, and a job of
400 tasks with long distinct file names (its owner's token in hand).

    .venv/bin/python bench/service_attacks.py [--source SRC_DIR]

It starts `taskfleet scheduler` on a free loopback port (from SRC_DIR when
given, e.g. an older checkout's src/, to compare), in a state folder of its
own, attacks it without the token (a page has none) and prints the outcome.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from client.cli.app import high_water_kib

SLOW_CONNECTIONS = 300
PROBE_SECONDS = 12  # past the service's 10 s header timeout
LONG_NAMES = 400
LONG_NAME_CHARS = 50_000
STATUS_CALLS = 10


def start(folder: Path, source: str | None) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "XDG_STATE_HOME": str(folder / "state")}
    if source:
        env["PYTHONPATH"] = source
    log = folder / "scheduler.log"
    command = [sys.executable, "-c", "from client.cli import main; main()", "scheduler"]
    with log.open("wb") as err:
        process = subprocess.Popen(
            [*command, "--port", "0", "--workers", "1", "--journal", str(folder / "j.db")],
            stderr=err,
            env=env,
        )
    deadline = time.monotonic() + 60
    while not (found := re.search(r"(http://\S+)", log.read_text())):
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"the scheduler did not start: {log.read_text()}")
        time.sleep(0.1)
    return process, found.group(1)


def peak_rss_mib(pid: int) -> float:
    kib = high_water_kib(pid)
    assert kib is not None, "no VmHWM in /proc"
    return kib / 1024


def amplify(url: str, token: str, pid: int) -> dict[str, object]:
    """A 20 MB upload of long file names, then status calls: the memory it costs."""
    lines = b"".join(
        json.dumps(
            {"file": f"{n:03d}" + "x" * LONG_NAME_CHARS, "line": 1, "task": "sleep 0"}
        ).encode()
        + b"\n"
        for n in range(LONG_NAMES)
    )
    headers = {"Content-Type": "application/x-ndjson"}
    if token:  # a scheduler from before tokens by default has none
        headers["Authorization"] = f"Bearer {token}"
    before = peak_rss_mib(pid)
    began = time.monotonic()
    upload = httpx.post(f"{url}/jobs", content=lines, headers=headers, timeout=600)
    if upload.status_code == 201:
        job = upload.json()["job"]
        for _ in range(STATUS_CALLS):
            httpx.get(f"{url}/jobs/{job}", headers=headers, timeout=600)
    return {
        f"upload of {LONG_NAMES} names of {LONG_NAME_CHARS:,} chars": upload.status_code,
        f"scheduler peak RSS before -> after {STATUS_CALLS} status calls, MiB": (
            f"{before:.0f} -> {peak_rss_mib(pid):.0f} in {time.monotonic() - began:.1f} s"
        ),
    }


def attack(url: str, marker: Path) -> dict[str, object]:
    port = int(url.rsplit(":", 1)[1])
    task = json.dumps({"file": "w.txt", "line": 1, "task": f"touch {marker}"}).encode()
    page = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    cross_site = httpx.post(f"{url}/jobs", content=task, headers=page).status_code
    rebound = {"Host": f"rebind.evil.example:{port}"}
    rebinding = httpx.get(f"{url}/health", headers=rebound).status_code
    slow = []
    for n in range(SLOW_CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port))
        if n % 2:  # half send part of their headers, half nothing at all
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-a: ".encode())
        slow.append(sock)
    answers: set[str] = set()
    worst = 0.0
    deadline = time.monotonic() + PROBE_SECONDS
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            answers.add(str(httpx.get(f"{url}/health", timeout=5).status_code))
        except httpx.HTTPError as error:
            answers.add(type(error).__name__)
        worst = max(worst, time.monotonic() - began)
        time.sleep(0.5)
    for sock in slow:
        sock.close()
    time.sleep(1)  # a job the page got in would have run by now
    return {
        "cross-site text/plain POST": cross_site,
        "the page's command ran": marker.exists(),
        "rebinding Host on /health": rebinding,
        f"/health under {SLOW_CONNECTIONS} slow connections": sorted(answers),
        "slowest /health answer, s": round(worst, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Attacks on a scheduler service process.")
    parser.add_argument("--source", help="run the scheduler from this src/ folder")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        process, url = start(folder, options.source)
        try:
            outcome = attack(url, folder / "pwned")
            token_file = folder / "state" / "taskfleet" / "token"
            token = token_file.read_text().strip() if token_file.exists() else ""
            outcome.update(amplify(url, token, process.pid))
        finally:
            process.kill()
            process.wait()
    for what, got in outcome.items():
        print(f"{what:45} {got}")


if __name__ == "__main__":
    main()
