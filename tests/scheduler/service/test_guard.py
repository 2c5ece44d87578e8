"""The service's guard: which requests pass, and the time limits on slow peers.

The rules are checked as a function; the time limits on the real app, served
by uvicorn with the service's protocol on a loopback socket, with the limits
shortened so a test does not wait out the real ones.
"""

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scheduler.service import guard, http_protocol
from scheduler.service.guard import AccessGuard, AccessRules
from scheduler.service.journal import Journal
from tests.conftest import IN_PROCESS_TOKEN, InProcessService, in_process_service

TOKEN = "a-token-of-the-test-1234"


def scope(path: str = "/jobs", **headers: str) -> dict[str, Any]:
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "scheme": "http", "path": path, "headers": raw}


@pytest.fixture
def loopback_guard() -> AccessGuard:
    return AccessGuard(app=None, rules=AccessRules.for_address("127.0.0.1", 8750, TOKEN))  # type: ignore[arg-type]


def test_a_request_from_this_machine_with_the_token_passes(loopback_guard: AccessGuard) -> None:
    bearer = f"Bearer {TOKEN}"
    for host in ("127.0.0.1:8750", "localhost:8750", "[::1]:8750", "LOCALHOST:8750"):
        assert loopback_guard.refusal(scope(host=host, authorization=bearer)) is None
    same_origin = scope(
        host="127.0.0.1:8750",
        origin="http://127.0.0.1:8750",
        sec_fetch_site="same-origin",
        authorization=bearer,
    )
    assert loopback_guard.refusal(same_origin) is None
    assert loopback_guard.refusal(scope("/health", host="localhost:8750")) is None


def test_rebound_names_other_ports_and_cross_site_requests_are_refused(
    loopback_guard: AccessGuard,
) -> None:
    bearer = f"Bearer {TOKEN}"
    refused = {
        "rebinding name": scope(host="rebind.evil.example:8750", authorization=bearer),
        "no port": scope(host="127.0.0.1", authorization=bearer),
        "other port": scope(host="127.0.0.1:9999", authorization=bearer),
        "no host": scope(authorization=bearer),
        "garbage host": scope(host="[::1:8750", authorization=bearer),
        "other origin": scope(
            host="127.0.0.1:8750", origin="http://evil.example", authorization=bearer
        ),
        "null origin": scope(host="127.0.0.1:8750", origin="null", authorization=bearer),
        "other scheme": scope(
            host="127.0.0.1:8750", origin="https://127.0.0.1:8750", authorization=bearer
        ),
        "cross-site fetch": scope(
            host="127.0.0.1:8750", sec_fetch_site="cross-site", authorization=bearer
        ),
        "same-site fetch": scope(
            host="127.0.0.1:8750", sec_fetch_site="same-site", authorization=bearer
        ),
        "no token": scope(host="127.0.0.1:8750"),
        "token prefix": scope(host="127.0.0.1:8750", authorization=bearer[:-1]),
        "token longer": scope(host="127.0.0.1:8750", authorization=bearer + "x"),
    }
    for name, request in refused.items():
        answer = loopback_guard.refusal(request)
        assert answer is not None, name
    assert loopback_guard.refusal(refused["rebinding name"]) == (
        421,
        "Host is not this service's address",
    )
    assert loopback_guard.refusal(refused["other origin"]) == (
        403,
        "cross-site requests are refused",
    )
    assert loopback_guard.refusal(refused["no token"])[0] == 401  # type: ignore[index]


def test_a_wildcard_address_accepts_any_name_but_still_wants_the_token() -> None:
    rules = AccessRules.for_address("0.0.0.0", 8750, TOKEN)
    wildcard = AccessGuard(app=None, rules=rules)  # type: ignore[arg-type]
    assert wildcard.refusal(scope(host="build-7.internal:8750")) == (
        401,
        "missing or wrong token (Authorization: Bearer TOKEN)",
    )
    bearer = f"Bearer {TOKEN}"
    assert wildcard.refusal(scope(host="build-7.internal:8750", authorization=bearer)) is None
    named = AccessRules.for_address("192.0.2.7", 8750, TOKEN)
    assert named.hosts == frozenset({"192.0.2.7"})


# -- the time limits, on a real server ------------------------------------------------


@pytest.fixture
def short_limits_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessService]:
    """The service in this process, with one-second header and body timeouts."""
    monkeypatch.setattr(http_protocol, "HEADER_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(guard, "BODY_READ_TIMEOUT_SECONDS", 1.0)
    with in_process_service() as service:
        yield service


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(1024):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_headers_that_never_finish_are_cut_off(short_limits_service: InProcessService) -> None:
    silent = socket.create_connection(("127.0.0.1", short_limits_service.port))
    partial = socket.create_connection(("127.0.0.1", short_limits_service.port))
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    with silent, partial:
        assert closed_by_peer(silent, within=5)
        assert closed_by_peer(partial, within=5)
    # A whole request is served as ever.
    health = httpx.get(f"{short_limits_service.url}/health", timeout=5)
    assert health.status_code == 200


def test_a_body_that_stops_arriving_ends_the_upload(short_limits_service: InProcessService) -> None:
    sock = socket.create_connection(("127.0.0.1", short_limits_service.port))
    head = (
        f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1:{short_limits_service.port}\r\n"
        f"Authorization: Bearer {IN_PROCESS_TOKEN}\r\nContent-Type: application/x-ndjson\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"file": "w.txt", "line": 1, "task": "echo hi"}\n')
    sock.settimeout(10)
    with sock:
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    journal = Journal(short_limits_service.journal)
    try:
        assert journal.jobs() == []  # the half upload was discarded whole
        assert journal.db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    finally:
        journal.close()


def test_idle_connections_give_way_to_new_ones(
    short_limits_service: InProcessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_protocol, "HEADER_TIMEOUT_SECONDS", 60.0)
    monkeypatch.setattr(http_protocol, "MAX_CONNECTIONS", 20)
    idle = [socket.create_connection(("127.0.0.1", short_limits_service.port)) for _ in range(40)]
    try:
        for _ in range(5):
            health = httpx.get(f"{short_limits_service.url}/health", timeout=5)
            assert health.status_code == 200
        still_open = 0
        for sock in idle:
            sock.settimeout(0.2)
            try:
                still_open += sock.recv(1) != b""
            except TimeoutError:
                still_open += 1
            except ConnectionResetError:
                pass
        assert still_open <= 20
    finally:
        for sock in idle:
            sock.close()
