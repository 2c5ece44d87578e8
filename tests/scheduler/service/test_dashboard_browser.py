"""The dashboard in a real browser: Debian's chromium, headless, driven by
Selenium through chromium-driver, against a real scheduler process."""

import http.server
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    StartScheduler,
    WriteWorkload,
    run_cli,
    service_headers,
    service_token,
    wait_for,
)
from tests.scheduler.conftest import console_errors, sign_in, visible

pytestmark = pytest.mark.e2e


def job_status(url: str, job: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/jobs/{job}", headers=service_headers()).json()
    return answer


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_jobs(
    browser: Any, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service()
    sign_in(browser, service.url, "not-the-token-at-all")
    wait_for(lambda: "login=refused" in browser.current_url, timeout=15)
    wait_for(lambda: visible(browser, "login-refused"), timeout=15)
    assert not visible(browser, "jobs")
    assert browser.get_cookies() == []

    sign_in(browser, service.url, service_token())
    wait_for(lambda: visible(browser, "jobs"), timeout=15)
    (cookie,) = browser.get_cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "taskfleet_session",
        True,
        "Strict",
    )
    assert service_token() not in cookie["value"]
    # The script cannot read it.
    assert browser.execute_script("return document.cookie") == ""
    wait_for(lambda: browser.find_element("id", "connection").text == "live", timeout=15)
    assert console_errors(browser) == []


def test_a_job_moves_live_and_ends_with_the_counts_status_gives(
    browser: Any, scheduler_service: StartScheduler, workload: WriteWorkload
) -> None:
    service = scheduler_service("--workers", "1")
    sign_in(browser, service.url, service_token())
    wait_for(lambda: visible(browser, "jobs"), timeout=15)
    path = workload(
        *(["sleep 300"] * 12), "echo 'it broke here' >&2; exit 7", "echo fine", name="w.txt"
    )
    submit = run_cli("submit", path, "--scheduler", service.url, timeout=120)
    assert submit.returncode == 1, submit.stderr
    job = json.loads(submit.stdout.splitlines()[0])["job"]

    # Seen while it ran: the jobs table and, on the job's page, the final counts.
    browser.get(f"{service.url}/#job={job}")
    wait_for(lambda: visible(browser, "job"), timeout=15)
    wait_for(lambda: browser.find_element("id", "job-state").text == "done", timeout=30)
    counts = [c.text for c in browser.find_elements("css selector", "#job-counts td")]
    status = job_status(service.url, job)
    by_status = status["by_status"]
    assert counts == [
        str(by_status["succeeded"]),
        str(by_status["failed"]),
        str(by_status["timed_out"]),
        str(by_status["lost"]),
        str(by_status["cancelled"]),
        "0",
    ]
    assert counts[:2] == ["13", "1"]
    listing = run_cli("status", job, "--scheduler", service.url)
    assert listing.stdout.split()[8:15] == [job, "done", "local", "14", "13", "1", "0"]
    # The failed task, its exit code and its stderr.
    wait_for(lambda: "it broke here" in browser.find_element("id", "task-rows").text, timeout=15)
    row = browser.find_element("css selector", "#task-rows tr")
    assert "7" in row.text
    row.click()
    record = json.loads(browser.find_element("id", "task-record").text)
    assert (record["line"], record["exit_code"]) == (13, 7)
    if folder := os.environ.get("TASKFLEET_SCREENSHOTS"):
        browser.save_screenshot(str(Path(folder) / "dashboard-job.png"))
    assert console_errors(browser) == []


def test_progress_moves_and_a_cancel_from_the_page_cancels(
    browser: Any, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service("--workers", "1")
    sign_in(browser, service.url, service_token())
    wait_for(lambda: visible(browser, "jobs"), timeout=15)
    upload = "".join(
        json.dumps({"file": "slow.txt", "line": n, "task": "sleep 400"}) + "\n"
        for n in range(1, 41)
    )
    job = httpx.post(f"{service.url}/jobs", content=upload, headers=service_headers()).json()["job"]
    browser.get(f"{service.url}/#job={job}")
    wait_for(lambda: visible(browser, "job"), timeout=15)

    def finished_shown() -> int:
        text = browser.find_element("id", "job-summary").text
        return int(text.split(" of ", 1)[0]) if " of " in text else -1

    wait_for(lambda: finished_shown() >= 1, timeout=30)
    first = finished_shown()
    wait_for(lambda: finished_shown() > first, timeout=30)  # it moves by itself
    if folder := os.environ.get("TASKFLEET_SCREENSHOTS"):
        browser.get(f"{service.url}/#")
        wait_for(lambda: visible(browser, "jobs"), timeout=15)
        time.sleep(1.5)  # two updates: a rate to show
        browser.save_screenshot(str(Path(folder) / "dashboard-jobs.png"))
        browser.get(f"{service.url}/#job={job}")
        wait_for(lambda: visible(browser, "job"), timeout=15)
    browser.find_element("id", "job-cancel").click()
    wait_for(lambda: job_status(service.url, job)["state"] == "cancelled", timeout=30)
    wait_for(lambda: browser.find_element("id", "job-state").text == "cancelled", timeout=15)
    assert job_status(service.url, job)["cancelled"] > 0
    assert console_errors(browser) == []


class HostilePage(http.server.BaseHTTPRequestHandler):
    """A page on another origin that tries to read the jobs and cancel one."""

    target = ""
    job = ""

    def do_GET(self) -> None:
        script = f"""
        const out = [];
        async function attempt(what, request) {{
          try {{
            const r = await request();
            out.push(what + ':' + r.status + ':' + (await r.text()).length);
          }}
          catch (e) {{ out.push(what + ':blocked'); }}
        }}
        (async () => {{
          await attempt('read', () => fetch('{self.target}/jobs', {{credentials: 'include'}}));
          await attempt('cancel', () => fetch('{self.target}/jobs/{self.job}/cancel',
            {{method: 'POST', credentials: 'include', mode: 'no-cors'}}));
          document.title = 'done ' + out.join(' ');
        }})();
        """
        body = f"<!doctype html><title>hostile</title><script>{script}</script>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_cross_site_page_cannot_read_or_act(
    browser: Any, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service("--workers", "1")
    upload = json.dumps({"file": "w.txt", "line": 1, "task": "sleep 60000"}) + "\n"
    job = httpx.post(f"{service.url}/jobs", content=upload, headers=service_headers()).json()["job"]
    sign_in(browser, service.url, service_token())  # the victim is signed in
    wait_for(lambda: visible(browser, "jobs"), timeout=15)

    HostilePage.target, HostilePage.job = service.url, job
    hostile = http.server.ThreadingHTTPServer(("127.0.0.2", 0), HostilePage)
    thread = threading.Thread(target=hostile.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.2:{hostile.server_address[1]}/")
        wait_for(lambda: browser.title.startswith("done"), timeout=20)
        outcome = browser.title
    finally:
        hostile.shutdown()
        hostile.server_close()
    assert "read:blocked" in outcome  # no CORS: the page reads nothing
    assert job_status(service.url, job)["state"] in ("queued", "running")  # not cancelled


def test_the_page_says_when_its_session_has_ended_and_asks_again(
    browser: Any, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service()
    sign_in(browser, service.url, service_token())
    wait_for(lambda: browser.find_element("id", "connection").text == "live", timeout=15)
    (cookie,) = browser.get_cookies()
    # Signed out elsewhere (a copy of the cookie, as another tab would): the
    # page's event stream ends with the session, and the page asks for the token.
    out = httpx.post(
        service.url + "/logout",
        headers={"Cookie": f"{cookie['name']}={cookie['value']}", "Origin": service.url},
    )
    assert out.status_code == 303
    wait_for(lambda: visible(browser, "session-ended"), timeout=15)
    assert visible(browser, "login")
    assert not visible(browser, "jobs")
    assert browser.find_element("id", "connection").text == "signed out"
    sign_in(browser, service.url, service_token())
    wait_for(lambda: browser.find_element("id", "connection").text == "live", timeout=15)
