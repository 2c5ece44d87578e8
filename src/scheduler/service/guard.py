"""Who may talk to the scheduler service: the checks every request passes first.

A browser is assumed hostile: any page the user visits can send requests to
a loopback port, and a DNS-rebound name can make them look same-origin. So

- the ``Host`` must be this service's own address (a loopback name or the
  address it listens on) with its port, and nothing else (no ``user@``): a
  rebound name is refused (421);
- a request a browser marks as cross-site (``Origin`` of another origin, or
  ``Sec-Fetch-Site`` other than same-origin or none) is refused (403);
- every route but ``/health`` and the dashboard's page, files and login
  needs the token (``Authorization: Bearer``, compared in constant time), or
  an open session's cookie (``scheduler.service.sessions``), else 401.

A neighbour without the token, and a signed-in user, are assumed hostile too,
so each request counts toward limits on what is open at once (``limits_of``):
requests without the token or a session have a budget of their own, in all and
per client address, apart from that of the token's holders; event streams,
followed results and inputs' contents on their way have bounds of their own;
``/health`` counts toward none, so it answers while the others are full. Past
a limit the answer is 503 (429 for streams and uploads). A request body that stops arriving for
``BODY_READ_TIMEOUT_SECONDS`` ends the request (408); the deadline for a whole
request is the connection's (``scheduler.service.http_protocol``).
"""

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.service.credentials import Credentials
from scheduler.service.http_protocol import CUT_OFF
from scheduler.service.sessions import Sessions
from scheduler.tokens import is_loopback
from worker.errors import TaskfleetError

log = logging.getLogger("taskfleet.service")

#: Requests of the token's holders (and signed-in sessions) served at once.
MAX_OPEN_REQUESTS = 256

#: Requests without the token or a session (the sign-in, the page and its
#: files) served at once: in all, and from one client address.
MAX_OPEN_PUBLIC_REQUESTS = 64
MAX_OPEN_PUBLIC_REQUESTS_PER_ADDRESS = 16

#: Dashboard event streams (``/events``) open at once: per session (every
#: token holder together counts as one), and in all.
MAX_EVENT_STREAMS_PER_HOLDER = 6
MAX_EVENT_STREAMS = 32

#: Results streams that follow a job (``?follow=true``) open at once.
MAX_FOLLOWING = 128

#: Contents of inputs (``PUT /blobs/...``) arriving at once: each holds a file
#: open and its bytes on their way to disk.
MAX_BLOB_UPLOADS = 16

#: Seconds a request body may pause between two pieces before the request ends.
BODY_READ_TIMEOUT_SECONDS = 30.0

#: Host names by which this machine's loopback interface is reached.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

#: Routes anyone who passes the Host and origin checks may reach: they hold no
#: job's data (the dashboard's page and files fetch everything else with the token).
PUBLIC_PATHS = frozenset({"/health", "/", "/session", "/login", "/logout"})
PUBLIC_PREFIX = "/static/"

#: A Host header or an origin's authority: a name or an address, and a port.
AUTHORITY = re.compile(
    r"(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?"
)

#: The key in a request's ``scope["state"]`` that names who sent it (see
#: ``Credentials.holder``; None without credentials) for the routes to read.
HOLDER = "holder"


class BodyTimeoutError(TaskfleetError):
    """A request body stopped arriving."""


class AccessRules(NamedTuple):
    """What a request must show."""

    hosts: frozenset[str] | None  # accepted Host names (lower case); None: any
    port: int
    token: str | None

    @classmethod
    def for_address(cls, host: str, port: int, token: str | None) -> "AccessRules":
        """Rules for a service listening on ``host``:``port``.

        A wildcard address (0.0.0.0, ::) may be reached by any of the machine's
        names, so any Host passes: the token, required off loopback, guards it.
        """
        if host in ("", "0.0.0.0", "::"):
            return cls(None, port, token)
        names = {host.lower().strip("[]")}
        if is_loopback(host):
            names |= LOOPBACK_NAMES
        return cls(frozenset(names), port, token)


def split_host(value: str, default_port: int) -> tuple[str, int] | None:
    """(name, port) of a Host header or an origin's authority; None if malformed.

    Only a host and a port: ``user@host`` (which a URL parser would take for
    ``host``), paths, spaces and out-of-range ports are malformed.
    """
    found = AUTHORITY.fullmatch(value)
    if found is None:
        return None
    name = found["ip6"] or found["name"]
    port = int(found["port"]) if found["port"] else default_port
    if not 0 < port < 65536:
        return None
    return name.lower(), port


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or (path.startswith(PUBLIC_PREFIX) and ".." not in path)


class Limit(NamedTuple):
    """A bound on the requests of one kind open at once."""

    key: str  # what is counted
    most: int
    status: int  # the answer past it
    reason: str


def limits_of(scope: Scope, holder: str | None) -> list[Limit]:
    """The limits a request counts toward, given who sent it (None: no credentials)."""
    path = str(scope["path"])
    if path == "/health":
        return []  # answered at once, from memory: never refused for load
    if holder is None:
        client = scope.get("client")
        address = client[0] if client else "?"
        busy = "too many requests without the token at once; try again shortly"
        return [
            Limit(f"public {address}", MAX_OPEN_PUBLIC_REQUESTS_PER_ADDRESS, 503, busy),
            Limit("public", MAX_OPEN_PUBLIC_REQUESTS, 503, busy),
        ]
    limits = [
        Limit("signed in", MAX_OPEN_REQUESTS, 503, "too many requests at once; try again shortly")
    ]
    if path == "/events":
        limits += [
            Limit(
                f"events {holder}",
                MAX_EVENT_STREAMS_PER_HOLDER,
                429,
                f"at most {MAX_EVENT_STREAMS_PER_HOLDER} event streams per session; close one",
            ),
            Limit("events", MAX_EVENT_STREAMS, 429, "too many event streams open; try again later"),
        ]
    elif path.startswith("/blobs/"):
        limits.append(
            Limit("blobs", MAX_BLOB_UPLOADS, 429, "too many inputs arriving at once; try again")
        )
    elif path.startswith("/jobs/") and path.endswith("/results") and follows(scope):
        limits.append(
            Limit("following", MAX_FOLLOWING, 429, "too many results streams open; try again later")
        )
    return limits


def follows(scope: Scope) -> bool:
    """Whether a results request asks to follow the job (as the API reads ?follow=)."""
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    return query.get("follow", ["false"])[-1].lower() in ("1", "true", "yes")


class AccessGuard:
    """ASGI middleware applying ``AccessRules`` and the request limits."""

    def __init__(
        self,
        app: ASGIApp,
        rules: AccessRules,
        sessions: Sessions | None = None,
        counter: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.rules = rules
        sessions = sessions if sessions is not None else Sessions()
        self.credentials = Credentials(rules.token, sessions) if rules.token else None
        self.open: Counter[str] = Counter()  # requests open, by Limit.key
        self.open_requests = 0
        self.counter = counter  # told of each change in open requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, holder = self.admission(scope)
        limits = limits_of(scope, holder) if refusal is None else []
        for limit in limits:
            if self.open[limit.key] >= limit.most:
                refusal = limit.status, limit.reason
                break
        if refusal is not None:
            await refuse(refusal, scope, receive, send)
            return
        scope.setdefault("state", {})[HOLDER] = holder
        self._count(limits, +1)
        try:
            await self._serve(scope, receive, send)
        finally:
            self._count(limits, -1)

    def _count(self, limits: list[Limit], change: int) -> None:
        for limit in limits:
            self.open[limit.key] += change
            if not self.open[limit.key]:
                del self.open[limit.key]  # no key per address stays behind
        self.open_requests += change
        if self.counter is not None:
            self.counter(self.open_requests)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) when the request may not be served, else None."""
        return self.admission(scope)[0]

    def admission(self, scope: Scope) -> tuple[tuple[int, str] | None, str | None]:
        """(status, reason) when the request may not be served (else None), and
        who sent it (``Credentials.holder``; None for no credentials)."""
        headers = headers_of(scope)
        scheme = str(scope.get("scheme", "http"))
        default_port = 443 if scheme == "https" else 80
        host = split_host(headers.get(b"host", b"").decode("latin-1"), default_port)
        if (
            host is None
            or host[1] != self.rules.port
            or (self.rules.hosts is not None and host[0] not in self.rules.hosts)
        ):
            return (421, "Host is not this service's address"), None
        origin = headers.get(b"origin")
        if origin is not None:
            parts = urlsplit(origin.decode("latin-1"))
            if parts.scheme != scheme or split_host(parts.netloc, default_port) != host:
                return (403, "cross-site requests are refused"), None
        fetch_site = headers.get(b"sec-fetch-site")
        if fetch_site is not None and fetch_site not in (b"same-origin", b"none"):
            return (403, "cross-site requests are refused"), None
        if self.credentials is None:
            return None, None
        holder = self.credentials.holder(headers)
        if holder is None and not is_public(str(scope["path"])):
            return (401, "missing or wrong token (Authorization: Bearer TOKEN)"), None
        return None, holder

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with a time limit on each piece of the request body."""
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), BODY_READ_TIMEOUT_SECONDS)
            except TimeoutError:
                raise BodyTimeoutError from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except ClientDisconnect:
            # The client went away, or the connection cut the request off (and said so).
            if not scope["state"].get(CUT_OFF):
                log.warning(
                    "request ended: %s went away before its %s %s arrived whole",
                    client_of(scope),
                    scope["method"],
                    scope["path"],
                )
        except BodyTimeoutError:
            if started:
                raise
            timeout = f"no request data for {BODY_READ_TIMEOUT_SECONDS:g} s"
            log.warning("request cut off: %s %s from %s: %s", scope["method"], scope["path"],
                        client_of(scope), timeout)  # fmt: skip
            response = JSONResponse({"error": timeout}, status_code=408)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)


async def refuse(refusal: tuple[int, str], scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``refusal`` without reading the request's body. The connection stays
    open for the rest of that body, ``ANSWERED_BODY_SECONDS`` at most: closed at
    once, a client still sending would read a reset rather than the refusal, and
    one that reconnects on every close would turn a limit into a flood of new
    connections."""
    status, reason = refusal
    response = JSONResponse({"error": reason}, status_code=status)
    if status in (429, 503):
        response.headers["Retry-After"] = "1"
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    await response(scope, receive, send)


def headers_of(scope: Scope) -> dict[bytes, bytes]:
    """A request's headers by name; the first of a repeated header counts."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    return headers


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"
