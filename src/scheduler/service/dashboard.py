"""The web dashboard: a page, its files, a login, and a stream of job counters.

The page (``web/``: plain HTML, CSS and JavaScript, nothing fetched from
elsewhere) holds no data; it asks the API for everything, with the session
cookie that ``POST /login`` trades the token for (HttpOnly, SameSite=Strict:
no script reads it and no other site's request carries it): a new session per
sign-in, which ``POST /logout`` ends (``scheduler.service.sessions``). ``/events``
pushes every job's counters about once a second as server-sent events, read
from the jobs table the journal keeps up to date, never from a job's tasks:
a job of ten million tasks costs an update what a job of ten does.
"""

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from scheduler.errors import JobNotFoundError
from scheduler.jobs.journal import JobInfo, Journal
from scheduler.service.credentials import SESSION_COOKIE, Credentials, cookie_of
from scheduler.service.guard import HOLDER, headers_of
from scheduler.service.sessions import Sessions
from worker.result import Status

#: The dashboard's files, by name, and their content types.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

#: Nothing from elsewhere, no inline script, never inside another site's frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # "no-referrer" would make the login form's Origin "null", which the guard refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

#: Seconds between two updates of the event stream.
EVENT_SECONDS = 1.0

#: Jobs an update carries: the most recent.
EVENT_JOBS = 50

#: Most task records the task list returns at once.
MAX_LISTED_TASKS = 200

#: Task lists (``/jobs/{id}/tasks``) read from the journal at once.
MAX_PARALLEL_TASK_LISTS = 4

#: Largest login form accepted, in bytes.
MAX_LOGIN_BYTES = 4096


class Service(Protocol):
    """What the dashboard needs of the service (``context.ServiceContext``)."""

    @property
    def token(self) -> str | None: ...

    @property
    def sessions(self) -> Sessions: ...

    def failure(self) -> BaseException | None:
        """The dispatch thread's failure; None while it runs."""

    async def run(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a journal method off the event loop."""

    def describe(self, info: JobInfo) -> dict[str, object]: ...

    async def fleet(self) -> dict[str, object] | None: ...


def web_file(name: str) -> bytes:
    return resources.files("scheduler.service").joinpath("web", name).read_bytes()


def dashboard_routes(service: Service) -> list[Route]:
    """The dashboard's routes."""
    return DashboardHandlers(service).routes()


class DashboardHandlers:
    """The dashboard's request handlers: its files, sign-in and out, its event
    stream and its task lists."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.token = service.token
        self.sessions = service.sessions
        self.credentials = Credentials(self.token, self.sessions) if self.token else None
        # Task lists wait their turn here, not in the journal threads' queue, where
        # they would hold up every other request's reads.
        self.filter_slots = asyncio.Semaphore(MAX_PARALLEL_TASK_LISTS)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            Route("/session", self.whoami),
            Route("/static/{name}", self.static),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/events", self.events),
            Route("/jobs/{job_id}/tasks", self.tasks),
        ]

    async def page(self, _request: Request) -> Response:
        return file_response("index.html")

    async def whoami(self, request: Request) -> Response:
        """Whether this browser is signed in (asked without a 401 in its console)."""
        signed_in = self.credentials is None or holder_of(request) is not None
        return JSONResponse({"signed_in": signed_in}, headers={"Cache-Control": "no-store"})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in FILES or name == "index.html":
            return JSONResponse({"error": "no such file"}, status_code=404)
        return file_response(name)

    async def login(self, request: Request) -> Response:
        body = await login_form(request)
        if body is None:
            return JSONResponse({"error": "login form too large"}, status_code=413)
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        if self.token is None or self.credentials is None:
            return RedirectResponse("/", status_code=303)  # nothing to sign in to
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return RedirectResponse("/?login=refused", status_code=303)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.open(),
            max_age=int(self.sessions.max_age_seconds),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """End this browser's session: its cookie, and any copy of it, opens nothing more."""
        session_id = cookie_of(headers_of(request.scope).get(b"cookie", b""), SESSION_COOKIE)
        if session_id:
            self.sessions.close(session_id)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def events(self, request: Request) -> Response:
        return StreamingResponse(
            job_events(self.service, self._session_check(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def _session_check(self, request: Request) -> Callable[[], bool]:
        """Whether the session that sent ``request`` is still open (always, for
        the token's holder or a service without a token)."""
        holder, credentials = holder_of(request), self.credentials
        if credentials is None or holder is None:
            return lambda: True
        return lambda: credentials.still_valid(holder)

    async def tasks(self, request: Request) -> Response:
        """GET /jobs/{id}/tasks?status=failed&limit=N: the records of a job's tasks
        that ended so, in the order they arrived; ?slowest=true: those of its
        finished tasks that took longest."""
        job_id = request.path_params["job_id"]
        try:
            query = TaskQuery.of(request)
        except ValueError as bad:
            return JSONResponse({"error": str(bad)}, status_code=400)
        run = self.service.run
        async with self.filter_slots:
            try:
                await run(Journal.job, job_id)
            except JobNotFoundError as missing:
                return JSONResponse({"error": str(missing)}, status_code=404)
            if query.slowest:
                records = await run(Journal.slowest, job_id, query.limit)
            else:
                records = await run(Journal.records_with_status, job_id, query.status, query.limit)
        return Response(b"".join(records), media_type="application/x-ndjson")


class TaskQuery(NamedTuple):
    """What a task list asks for (``GET /jobs/{id}/tasks``)."""

    status: Status
    limit: int
    slowest: bool

    @classmethod
    def of(cls, request: Request) -> "TaskQuery":
        """The query of ``request``; ValueError, naming the parameter, when it is bad."""
        query = request.query_params
        slowest = query.get("slowest", "false").lower() in ("1", "true", "yes")
        try:
            status = Status(query.get("status", Status.FAILED.value))
        except ValueError:
            statuses = ", ".join(s.value for s in Status)
            raise ValueError(f"status must be one of {statuses}") from None
        limit = query.get("limit", "50")
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LISTED_TASKS:
            raise ValueError(f"limit must be 1 to {MAX_LISTED_TASKS}")
        return cls(status, int(limit), slowest)


async def login_form(request: Request) -> bytes | None:
    """The body of a login form; None when it is larger than MAX_LOGIN_BYTES."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_LOGIN_BYTES:
        return None
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_LOGIN_BYTES:
            return None
    return body


def holder_of(request: Request) -> str | None:
    """Who sent the request, as the guard found (``Credentials.holder``)."""
    holder: str | None = request.scope["state"].get(HOLDER)
    return holder


def file_response(name: str) -> Response:
    return Response(web_file(name), media_type=FILES[name], headers=SECURITY_HEADERS)


async def job_events(service: Service, still_valid: Callable[[], bool]) -> AsyncIterator[bytes]:
    """Every EVENT_SECONDS, the recent jobs' counters as one ``jobs`` event, and
    the fleet's (its samples since the last update) as a ``fleet`` event; the
    stream ends once ``still_valid`` says its session has ended."""
    since = 0.0
    while still_valid():
        began = time.perf_counter()
        jobs = await service.run(Journal.jobs, EVENT_JOBS)
        update = {
            "at": time.time(),
            "jobs": [service.describe(info) for info in jobs],
            "dispatch": "ok" if service.failure() is None else "failed",
            "server_ms": round((time.perf_counter() - began) * 1000.0, 3),
        }
        yield f"event: jobs\ndata: {json.dumps(update)}\n\n".encode()
        fleet = await service.fleet()
        if fleet is not None:
            samples: list[dict[str, float]] = fleet["samples"]  # type: ignore[assignment]
            fleet["samples"] = [s for s in samples if s["at"] > since]
            since = max([since, *(s["at"] for s in samples)])
            yield f"event: fleet\ndata: {json.dumps(fleet)}\n\n".encode()
        await asyncio.sleep(EVENT_SECONDS)
