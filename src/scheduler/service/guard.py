"""Who may talk to the scheduler service: the checks every request passes first.

A browser is assumed hostile: any page the user visits can send requests to
a loopback port, and a DNS-rebound name can make them look same-origin. So

- the ``Host`` must be this service's own address (a loopback name or the
  address it listens on) with its port: a rebound name is refused (421);
- a request a browser marks as cross-site (``Origin`` of another origin, or
  ``Sec-Fetch-Site`` other than same-origin or none) is refused (403);
- every route but ``/health`` and the dashboard's page, files and login
  needs the token (``Authorization: Bearer``, compared in constant time), or
  the session cookie the dashboard's login trades it for, else 401;
- at most ``MAX_OPEN_REQUESTS`` requests are served at once (503 beyond), and
  a request body that stops arriving for ``BODY_READ_TIMEOUT_SECONDS`` ends
  the request (408).
"""

import asyncio
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.service.credentials import Credentials
from scheduler.service.tokens import is_loopback
from worker.errors import TaskfleetError

#: Requests served at once; connections that sent no request do not count.
MAX_OPEN_REQUESTS = 256

#: Seconds a request body may pause between two pieces before the request ends.
BODY_READ_TIMEOUT_SECONDS = 30.0

#: Host names by which this machine's loopback interface is reached.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

#: Routes anyone who passes the Host and origin checks may reach: they hold no
#: job's data (the dashboard's page and files fetch everything else with the token).
PUBLIC_PATHS = frozenset({"/health", "/", "/session", "/login", "/logout"})
PUBLIC_PREFIX = "/static/"


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
    """(name, port) of a Host header or an origin's authority; None if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name:
        return None
    return name.lower(), port if port is not None else default_port


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or (path.startswith(PUBLIC_PREFIX) and ".." not in path)


class AccessGuard:
    """ASGI middleware applying ``AccessRules`` and the request limits."""

    def __init__(
        self, app: ASGIApp, rules: AccessRules, counter: Callable[[int], None] | None = None
    ) -> None:
        self.app = app
        self.rules = rules
        self.credentials = Credentials.for_token(rules.token) if rules.token else None
        self.open_requests = 0
        self.counter = counter  # told of each change in open requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None and self.open_requests >= MAX_OPEN_REQUESTS:
            refusal = (503, "too many requests at once; try again shortly")
        if refusal is not None:
            response = JSONResponse({"error": refusal[1]}, status_code=refusal[0])
            if refusal[0] == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        self._count(+1)
        try:
            await self._serve(scope, receive, send)
        finally:
            self._count(-1)

    def _count(self, change: int) -> None:
        self.open_requests += change
        if self.counter is not None:
            self.counter(self.open_requests)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) when the request may not be served, else None."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of a repeated header counts
        scheme = str(scope.get("scheme", "http"))
        default_port = 443 if scheme == "https" else 80
        host = split_host(headers.get(b"host", b"").decode("latin-1"), default_port)
        if (
            host is None
            or host[1] != self.rules.port
            or (self.rules.hosts is not None and host[0] not in self.rules.hosts)
        ):
            return 421, "Host is not this service's address"
        origin = headers.get(b"origin")
        if origin is not None:
            parts = urlsplit(origin.decode("latin-1"))
            if parts.scheme != scheme or split_host(parts.netloc, default_port) != host:
                return 403, "cross-site requests are refused"
        fetch_site = headers.get(b"sec-fetch-site")
        if fetch_site is not None and fetch_site not in (b"same-origin", b"none"):
            return 403, "cross-site requests are refused"
        path = str(scope["path"])
        credentials = self.credentials
        if credentials is not None and not is_public(path) and not credentials.shown_by(headers):
            return 401, "missing or wrong token (Authorization: Bearer TOKEN)"
        return None

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
        except BodyTimeoutError:
            if started:
                raise
            timeout = f"no request data for {BODY_READ_TIMEOUT_SECONDS:g} s"
            response = JSONResponse({"error": timeout}, status_code=408)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
