"""The dashboard's sessions on a real scheduler process: each sign-in its own,
ended by sign-out, by time, and by a new token."""

import time

import httpx
import pytest

from scheduler.service.credentials import SESSION_COOKIE
from tests.conftest import StartScheduler, service_token
from tests.scheduler.service.test_security_e2e import task_lines

pytestmark = pytest.mark.e2e


def sign_in(url: str, token: str) -> str:
    """The session cookie a sign-in with ``token`` gets ("" if none)."""
    answer = httpx.post(url + "/login", data={"token": token}, headers={"Origin": url})
    assert answer.status_code == 303
    return answer.cookies.get(SESSION_COOKIE) or ""


def with_cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={session}"}


def lists_jobs(url: str, session: str) -> int:
    return httpx.get(url + "/jobs", headers=with_cookie(session)).status_code


def test_the_old_cookie_is_refused_after_sign_out(scheduler_service: StartScheduler) -> None:
    service = scheduler_service()
    first, second = sign_in(service.url, service_token()), sign_in(service.url, service_token())
    assert lists_jobs(service.url, first) == 200
    out = httpx.post(service.url + "/logout", headers={**with_cookie(first), "Origin": service.url})
    assert out.status_code == 303
    # The copied cookie is worth nothing now, for reading and for running commands.
    assert lists_jobs(service.url, first) == 401
    upload = httpx.post(
        service.url + "/jobs",
        content=task_lines("echo should-not-run"),
        headers={**with_cookie(first), "Content-Type": "application/x-ndjson"},
    )
    assert upload.status_code == 401
    session = httpx.get(service.url + "/session", headers=with_cookie(first)).json()
    assert session["signed_in"] is False
    # The other sign-in goes on: each has a session of its own, never the token.
    assert first != second
    assert service_token() not in first
    assert lists_jobs(service.url, second) == 200


def test_a_session_ends_when_idle_and_at_its_age(scheduler_service: StartScheduler) -> None:
    service = scheduler_service("--session-idle", "2", "--session-max", "5")
    idle = sign_in(service.url, service_token())
    busy = sign_in(service.url, service_token())
    began = time.monotonic()
    while time.monotonic() - began < 3:
        assert lists_jobs(service.url, busy) == 200  # used: it stays open
        time.sleep(0.5)
    assert lists_jobs(service.url, idle) == 401  # unused for 2 s: ended
    while time.monotonic() - began < 6:
        time.sleep(0.5)
        lists_jobs(service.url, busy)
    assert lists_jobs(service.url, busy) == 401  # 5 s after sign-in, used or not


def test_a_new_token_ends_every_session(scheduler_service: StartScheduler) -> None:
    service = scheduler_service()
    old_token = service_token()
    session = sign_in(service.url, old_token)
    assert lists_jobs(service.url, session) == 200
    assert service.process is not None
    service.process.terminate()
    service.process.wait(30)
    renewed = scheduler_service("--new-token")
    assert service_token() != old_token
    assert "new token" in renewed.log.read_text()
    assert lists_jobs(renewed.url, session) == 401
    bearer = httpx.get(renewed.url + "/jobs", headers={"Authorization": f"Bearer {old_token}"})
    assert bearer.status_code == 401
    assert lists_jobs(renewed.url, sign_in(renewed.url, service_token())) == 200
