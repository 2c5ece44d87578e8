"""The service's guard: which requests pass, and the time limits on slow peers.

The rules are checked as a function; the time limits on the real app, served
by uvicorn with the service's protocol on a loopback socket, with the limits
shortened so a test does not wait out the real ones.
"""

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scheduler.jobs.journal import Journal
from scheduler.service import guard, http_protocol
from scheduler.service.guard import AccessGuard, AccessRules, split_host
from tests.conftest import IN_PROCESS_TOKEN, InProcessService, in_process_service, wait_for

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
        "user before the host": scope(host="evil.example@127.0.0.1:8750", authorization=bearer),
        "empty user": scope(host="@127.0.0.1:8750", authorization=bearer),
        "a path after the port": scope(host="127.0.0.1:8750/x", authorization=bearer),
        "port out of range": scope(host="127.0.0.1:108750", authorization=bearer),
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


def test_a_host_is_a_name_or_address_and_a_port_and_nothing_else() -> None:
    assert split_host("127.0.0.1:8750", 80) == ("127.0.0.1", 8750)
    assert split_host("LocalHost", 80) == ("localhost", 80)
    assert split_host("[::1]:8750", 80) == ("::1", 8750)
    for malformed in (
        "evil.example@127.0.0.1:8750",
        "a:b@127.0.0.1:8750",
        "127.0.0.1:8750 ",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "::1:8750",
        "[::1]x",
        "",
    ):
        assert split_host(malformed, 80) is None, malformed


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
    monkeypatch.setattr(http_protocol, "LOGIN_DEADLINE_SECONDS", 1.0)
    with in_process_service() as service:
        yield service


def slow_login(port: int, length: int = 4000) -> socket.socket:
    """A sign-in that declares ``length`` bytes and sends one."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\nt".encode()
    )
    return sock


def answer_of(sock: socket.socket, within: float = 10) -> bytes:
    """All the server sends until it closes ``sock``."""
    sock.settimeout(within)
    answer = b""
    with sock:
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


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


def test_a_host_with_a_user_before_it_is_refused(short_limits_service: InProcessService) -> None:
    port = short_limits_service.port
    for route in ("/health", "/jobs"):
        answer = httpx.get(
            short_limits_service.url + route,
            headers={**short_limits_service.headers, "Host": f"evil.example@127.0.0.1:{port}"},
        )
        assert answer.status_code == 421, route


def test_a_sign_in_that_does_not_arrive_in_time_is_cut_off(
    short_limits_service: InProcessService, caplog: pytest.LogCaptureFixture
) -> None:
    began = time.monotonic()
    answer = answer_of(slow_login(short_limits_service.port))
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - began < 8  # its 1 s deadline, not the 30 s body timeout
    cut = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert len(cut) == 1
    assert "POST /login" in cut[0]
    assert not [r for r in caplog.records if r.exc_info]  # one line, no traceback


def test_requests_without_the_token_have_a_budget_of_their_own(
    short_limits_service: InProcessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_protocol, "LOGIN_DEADLINE_SECONDS", 30.0)
    monkeypatch.setattr(guard, "MAX_OPEN_PUBLIC_REQUESTS_PER_ADDRESS", 3)
    service = short_limits_service
    held = [slow_login(service.port) for _ in range(3)]
    try:
        time.sleep(0.5)  # all three in
        # Answered at once; its connection closes once the rest of its body,
        # which no one reads, has had ANSWERED_BODY_SECONDS to come.
        over = answer_of(slow_login(service.port), within=http_protocol.ANSWERED_BODY_SECONDS + 5)
        assert over.startswith(b"HTTP/1.1 503"), over[:200]
        assert httpx.get(service.url + "/health", timeout=5).status_code == 200
        jobs = httpx.get(service.url + "/jobs", headers=service.headers, timeout=5)
        assert jobs.status_code == 200
    finally:
        for sock in held:
            sock.close()
    # Once they end, a sign-in gets in again (the wrong token here: sent back to the page).
    wait_for(lambda: httpx.post(service.url + "/login", data={"token": "x"}).status_code == 303)


def test_a_chunked_upload_that_keeps_coming_is_not_cut_off(
    short_limits_service: InProcessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_protocol, "DEADLINE_FLOOR_SECONDS", 1.0)
    monkeypatch.setattr(http_protocol, "SLOWEST_BYTES_PER_SECOND", 100)

    def body() -> Iterator[bytes]:
        for n in range(1, 16):  # 3 s, at about 400 bytes a second
            yield json.dumps({"file": "w.txt", "line": n, "task": "sleep 0"}).encode() + b"\n"
            time.sleep(0.2)

    service = short_limits_service
    upload = httpx.post(service.url + "/jobs", content=body(), headers=service.headers)
    assert upload.status_code == 201, upload.text
    assert upload.json()["tasks"] == 15


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
