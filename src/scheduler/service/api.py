"""The scheduler service's HTTP API (Starlette; served by uvicorn).

    GET  /health                 liveness, pool size and fleet slots (no token needed)
    POST /jobs                   body: tasks as JSON Lines ({"file", "line", "task"});
                                 ?placement=local|remote|hybrid (remote needs --stack);
                                 ?retries=N runs a task that failed, timed out or was
                                 lost again, up to N more times (default 0);
                                 ?inputs=ID gives its tasks the inputs POST /inputs
                                 kept; ?outputs=true keeps its tasks' files
    POST /inputs                 body: a job's list of inputs (JSON: name, size,
                                 sha256 each); answers its id and the contents the
                                 service lacks
    PUT  /blobs/{sha256}         body: one of those contents, checked against its name
    GET  /jobs/{id}/files/{file}-{line}  a task's files (a tar), of a job with ?outputs=true
    GET  /jobs                   recent jobs
    GET  /jobs/{id}              one job's state and counts
    GET  /jobs/{id}/results      its result records as JSON Lines;
                                 ?follow=true streams until the job ends
    POST /jobs/{id}/cancel       cancel the tasks that have not started
    POST /jobs/{id}/retry        a new job of the tasks of an ended job that did not
                                 succeed; ?placement= and ?retries= as for /jobs
                                 (placement defaults to the job's)
    GET  /jobs/{id}/tasks        records of its tasks that ended so: ?status=&limit=;
                                 ?slowest=true: its finished tasks that took longest
    GET  /fleet                  the fleet (with --stack): its group and queues over
                                 the last hour, and what it used for no job
    GET  /  /static/*            the web dashboard (scheduler.service.dashboard)
    POST /login  /logout         the dashboard's session cookie, for the token
    GET  /events                 the recent jobs' counters, pushed once a second

Every request passes ``scheduler.service.guard`` first (its Host, its origin, the
token on every route but /health, the limits). Errors are JSON objects with
an ``error`` key.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from scheduler.errors import JobNotFoundError, JobStateError
from scheduler.jobs.file_store import FilesError
from scheduler.jobs.journal import JobInfo, JobState, Journal, Placement
from scheduler.retries import MAX_RETRIES
from scheduler.service.context import ServiceContext
from scheduler.service.dashboard import dashboard_routes
from scheduler.service.files_api import JobFilesHandlers
from scheduler.service.fleet_files import FleetFilesError
from scheduler.service.guard import AccessGuard
from worker.bundle import MAX_JOB_FILES
from worker.errors import TaskfleetError, TaskLineError
from worker.task import (
    MAX_FILE_NAME_CHARS,
    MAX_LINE_CHARS,
    check_line,
    decode_task_line,
    is_task_line,
    new_job_id,
)

#: Largest accepted job upload, in bytes.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024

#: Most tasks one job may hold.
MAX_JOB_TASKS = 10_000_000

#: Longest accepted line of an upload: a task line of MAX_LINE_CHARS
#: characters, JSON-escaped at worst, plus its file name and keys.
MAX_UPLOAD_LINE_BYTES = MAX_LINE_CHARS * 6 + 8192

#: The content type of an upload. Requiring it keeps a plain HTML form or a
#: "simple" cross-site fetch (text/plain, no preflight) from submitting a job.
UPLOAD_CONTENT_TYPE = "application/x-ndjson"

#: Tasks stored per journal transaction while a job uploads.
UPLOAD_BATCH = 5000

#: Result records sent per read of the journal.
RESULTS_PAGE = 2000

#: Seconds a following results stream waits for news before it looks anyway.
FOLLOW_POLL_SECONDS = 1.0

#: Seconds a cancel waits for the dispatch thread to close the job's pending tasks.
CANCEL_WAIT_SECONDS = 60.0

#: What a job with files on a fleet without a bucket for them is told.
NO_FLEET_FILES = (
    "the stack has no job-files bucket (JobFilesBucket): deploy it again with this"
    " taskfleet to give files to jobs on its fleet"
)

#: What a fleet request to a scheduler without one is told.
NO_FLEET = "this scheduler has no fleet: start it with --stack NAME"


class UploadError(TaskfleetError):
    """A new job (an upload or a retry, or its settings) refused, with the HTTP
    status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(context: ServiceContext) -> Starlette:
    """The ASGI application of the scheduler service."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        context.notifier.loop = asyncio.get_running_loop()
        yield

    def count_requests(open_requests: int) -> None:
        context.open_requests = open_requests

    routes = [*JobHandlers(context).routes(), *dashboard_routes(context)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(
        AccessGuard, rules=context.rules, sessions=context.sessions, counter=count_requests
    )
    return app


class JobHandlers:
    """The handlers of the jobs API (the dashboard's are in ``dashboard``)."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health),
            Route("/jobs", self.submit, methods=["POST"]),
            Route("/jobs", self.list_jobs, methods=["GET"]),
            Route("/jobs/{job_id}", self.job_status),
            Route("/jobs/{job_id}/results", self.results),
            Route("/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{job_id}/retry", self.retry, methods=["POST"]),
            *JobFilesHandlers(self.context).routes(),
            Route("/fleet", self.fleet),
        ]

    async def health(self, _request: Request) -> Response:
        failure = self.context.failure()
        body: dict[str, object] = {
            "status": "ok" if failure is None else "failed",
            "workers": self.context.workers,
            "fleet_slots": self.context.fleet_slots,
        }
        if failure is not None:
            body["error"] = f"dispatch stopped: {failure!r}"
        return JSONResponse(body, status_code=200 if failure is None else 503)

    async def submit(self, request: Request) -> Response:
        try:
            self._check_dispatching()
            check_upload_headers(request)
            placement, retries = job_settings(request, Placement.LOCAL, self.context.fleet_slots)
            inputs, outputs = files_settings(request, placement, self.context)
            job_id = new_job_id()
            total = await store_job(
                self.context, job_id, placement, retries, request.stream(), inputs, outputs
            )
        except UploadError as refused:
            return error(refused.status, str(refused))
        except FilesError as refused:
            return error(refused.status, str(refused))
        self.context.dispatcher.wake.set()
        body = {"job": job_id, "tasks": total, "placement": placement}
        return JSONResponse(body, status_code=201)

    async def list_jobs(self, _request: Request) -> Response:
        jobs = await self.context.run(Journal.jobs)
        return JSONResponse({"jobs": [self.context.describe(info) for info in jobs]})

    async def job_status(self, request: Request) -> Response:
        try:
            info = await self._job_of(request)
        except JobNotFoundError as missing:
            return error(404, str(missing))
        described = self.context.describe(info)
        store = self.context.files
        described["keeps_files"] = store is not None and store.keeps_outputs(info.id)
        # Workers report the last of what they used once their part is done.
        described["usage_to_come"] = await self.context.run(Journal.usage_to_come, info.id)
        return JSONResponse(described)

    async def fleet(self, _request: Request) -> Response:
        found = await self.context.fleet()
        if found is None:
            return error(409, NO_FLEET)
        return JSONResponse(found)

    async def cancel(self, request: Request) -> Response:
        try:
            info = await self._job_of(request)
            if info.state == JobState.UPLOADING:
                return error(409, f"job {info.id} is still uploading; end the upload instead")
            if info.state not in JobState.FINAL:
                dispatcher = self.context.dispatcher
                await to_thread.run_sync(lambda: dispatcher.cancel(info.id, CANCEL_WAIT_SECONDS))
                info = await self._job_of(request)
        except JobNotFoundError as missing:
            return error(404, str(missing))
        return JSONResponse(self.context.describe(info))

    async def retry(self, request: Request) -> Response:
        try:
            self._check_dispatching()
            info = await self._job_of(request)
            placement, retries = job_settings(request, info.placement, self.context.fleet_slots)
            job_id = new_job_id()
            total = await retry_job(self.context, info.id, job_id, placement, retries)
        except JobNotFoundError as missing:
            return error(404, str(missing))
        except JobStateError as refused:
            return error(409, str(refused))
        except (UploadError, FilesError) as refused:
            return error(refused.status, str(refused))
        self.context.dispatcher.wake.set()
        body = {"job": job_id, "tasks": total, "placement": placement, "retry_of": info.id}
        return JSONResponse(body, status_code=201)

    async def results(self, request: Request) -> Response:
        follow = request.query_params.get("follow", "false").lower() in ("1", "true", "yes")
        try:
            info = await self._job_of(request)
        except JobNotFoundError as missing:
            return error(404, str(missing))
        stream = stream_results(self.context, info.id, follow)
        return StreamingResponse(stream, media_type="application/x-ndjson")

    async def _job_of(self, request: Request) -> JobInfo:
        return await self.context.run(Journal.job, request.path_params["job_id"])

    def _check_dispatching(self) -> None:
        """Refuse new work (503) once the dispatch thread has stopped."""
        failure = self.context.failure()
        if failure is not None:
            raise UploadError(503, f"dispatch stopped: {failure!r}")


def check_upload_headers(request: Request) -> None:
    """Refuse an upload by its headers: the wrong type, or announced too large."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != UPLOAD_CONTENT_TYPE:
        raise UploadError(415, f"an upload's Content-Type must be {UPLOAD_CONTENT_TYPE}")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        raise UploadError(413, f"upload is {length} bytes, above the limit of {MAX_UPLOAD_BYTES}")


def files_settings(
    request: Request, placement: str, context: ServiceContext
) -> tuple[str | None, bool]:
    """A new job's inputs (the id of a list POST /inputs kept) and whether its
    tasks' files are kept, from the query."""
    inputs = request.query_params.get("inputs") or None
    outputs = request.query_params.get("outputs", "false").lower()
    if outputs not in ("true", "false"):
        raise UploadError(400, "outputs must be true or false")
    if inputs is None and outputs == "false":
        return None, False
    if context.files is None:
        raise UploadError(409, "this scheduler takes no files")
    if placement != Placement.LOCAL and context.fleet_files is None:
        raise UploadError(409, NO_FLEET_FILES)
    return inputs, outputs == "true"


def job_settings(request: Request, placement: str, fleet_slots: int) -> tuple[str, int]:
    """A new job's placement and retries from the query (``placement`` if none)."""
    placement = request.query_params.get("placement", placement)
    if placement not in Placement.ALL:
        raise UploadError(400, f"placement must be one of {', '.join(Placement.ALL)}")
    if placement != Placement.LOCAL and not fleet_slots:
        raise UploadError(409, NO_FLEET)
    retries = request.query_params.get("retries", "0")
    if not (retries.isascii() and retries.isdigit()) or int(retries) > MAX_RETRIES:
        raise UploadError(400, f"retries must be a whole number from 0 to {MAX_RETRIES}")
    return placement, int(retries)


async def store_job(
    context: ServiceContext,
    job_id: str,
    placement: str,
    retries: int,
    body: AsyncIterator[bytes],
    inputs: str | None = None,
    outputs: bool = False,
) -> int:
    """Journal an uploaded job, ready to run, with its ``inputs`` and a folder
    for its tasks' files (``outputs``); its task count. An upload refused or
    broken off half-way leaves nothing behind."""
    await context.run(Journal.create_job, job_id, placement, retries)
    try:
        files, total = await store_upload(context, job_id, body)
        names = [Path(file).name for file in files]
        if outputs and len(set(names)) < len(names):
            # Tasks' folders are named by their file's base name and line.
            raise UploadError(400, "two workload files of one base name: their files would mix")
        if context.files is not None and (inputs is not None or outputs):
            store, here = context.files, placement != Placement.REMOTE
            await to_thread.run_sync(lambda: store.give_job(job_id, inputs, outputs, stage=here))
            await ship_to_fleet(context, job_id, placement)
    except BaseException:
        await context.run(Journal.discard_job, job_id)
        if context.files is not None:
            store = context.files
            await to_thread.run_sync(lambda: store.remove_jobs([job_id]))
        raise
    await context.run(Journal.seal_job, job_id, files, total)
    return total


async def retry_job(
    context: ServiceContext, job_id: str, new_id: str, placement: str, retries: int
) -> int:
    """Make ``new_id`` a job of the tasks of ``job_id`` that did not succeed, given
    the same inputs and outputs folder as it; how many tasks it has."""
    store = context.files
    if store is None:
        return await context.run(Journal.retry_job, job_id, new_id, placement, retries)
    # Its files are there before the journal has the job: it may run at once.
    if placement != Placement.LOCAL and context.fleet_files is None and store.has_job(job_id):
        raise UploadError(409, NO_FLEET_FILES)
    here = placement != Placement.REMOTE
    await to_thread.run_sync(lambda: store.give_again(job_id, new_id, stage=here))
    try:
        await ship_to_fleet(context, new_id, placement)
        return await context.run(Journal.retry_job, job_id, new_id, placement, retries)
    except BaseException:
        await to_thread.run_sync(lambda: store.remove_jobs([new_id]))
        raise


async def ship_to_fleet(context: ServiceContext, job_id: str, placement: str) -> None:
    """Send a job's inputs to the fleet's bucket, if it runs there and has any
    (its usage charged to it); ``FilesError`` (502) if the bucket refused."""
    store, fleet_files = context.files, context.fleet_files
    if placement == Placement.LOCAL or store is None or fleet_files is None:
        return
    inputs = await to_thread.run_sync(lambda: store.inputs_of(job_id))
    if not inputs:
        return
    try:
        spent = await to_thread.run_sync(lambda: fleet_files.ship(job_id, inputs))
    except FleetFilesError as error:
        raise FilesError(502, str(error)) from error
    await context.run(Journal.add_usage, job_id, spent)


async def store_upload(
    context: ServiceContext, job_id: str, body: AsyncIterator[bytes]
) -> tuple[list[str], int]:
    """Check and store every task of an upload; return the job's files and task count."""
    files: dict[str, int] = {}
    rows: list[tuple[int, int, str]] = []
    total = received = request_line = 0
    pending = b""

    async def flush() -> None:
        batch = rows.copy()
        rows.clear()
        try:
            await context.run(Journal.add_tasks, job_id, batch)
        except sqlite3.IntegrityError as repeated:
            raise UploadError(
                400, "the same file and line appear twice in the upload"
            ) from repeated

    async for piece in body:
        received += len(piece)
        if received > MAX_UPLOAD_BYTES:
            raise UploadError(413, f"upload is above the limit of {MAX_UPLOAD_BYTES} bytes")
        lines = (pending + piece).split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_UPLOAD_LINE_BYTES:
            raise UploadError(413, f"upload line {request_line + 1} is too long")
        for raw in lines:
            request_line += 1
            row = parse_upload_line(raw, request_line, files)
            if row is None:
                continue
            rows.append(row)
            total += 1
            if total > MAX_JOB_TASKS:
                raise UploadError(413, f"job has more than {MAX_JOB_TASKS} tasks")
        if len(rows) >= UPLOAD_BATCH:
            await flush()
    if pending.strip():
        row = parse_upload_line(pending, request_line + 1, files)
        if row is not None:
            rows.append(row)
            total += 1
    if rows:
        await flush()
    if total == 0:
        raise UploadError(400, "the job has no tasks")
    return list(files), total


def parse_upload_line(
    raw: bytes, number: int, files: dict[str, int]
) -> tuple[int, int, str] | None:
    """One upload line as a (file number, line, text) row; None for a blank line."""
    if not raw.strip():
        return None
    if len(raw) > MAX_UPLOAD_LINE_BYTES:
        raise UploadError(413, f"upload line {number} is too long")
    try:
        task = decode_task_line(raw)
    except msgspec.DecodeError as bad:
        if str(bad).endswith("at `$.file`"):
            raise UploadError(
                400,
                f"upload line {number}: a file name must be 1 to {MAX_FILE_NAME_CHARS}"
                " characters, with no control characters",
            ) from bad
        raise UploadError(400, f"upload line {number}: not a task object: {bad}") from bad
    if not task.file:
        raise UploadError(400, f"upload line {number}: needs a file name")
    if "\n" in task.task or "\r" in task.task:
        # sh would run what follows the line break as a command of its own.
        raise UploadError(400, f"{task.file}:{task.line}: a task is one line: no CR or LF in it")
    text = task.task.strip()
    try:
        check_line(text)
    except TaskLineError as bad:
        raise UploadError(400, f"{task.file}:{task.line}: {bad}") from bad
    if not is_task_line(text):
        raise UploadError(400, f"{task.file}:{task.line}: not a task (blank or a comment)")
    number_of_file = files.get(task.file)
    if number_of_file is None:
        if len(files) >= MAX_JOB_FILES:
            raise UploadError(413, f"upload line {number}: a job may name {MAX_JOB_FILES} files")
        number_of_file = files[task.file] = len(files) + 1
    return number_of_file, task.line, text


async def stream_results(
    context: ServiceContext, job_id: str, follow: bool
) -> AsyncIterator[bytes]:
    """A job's result records, in the order they arrived; with ``follow``, until it ends."""
    after = 0  # the seq of the last record sent
    while True:
        news = context.notifier.current()
        # Read the job before its results: once it reads final, every result
        # was stored before, so the page read next holds the last of them.
        try:
            job_state, finished, total = await context.run(Journal.progress, job_id)
        except JobNotFoundError:
            return  # ended, and pruned since: every result was sent or is gone
        page = await context.run(Journal.results_page, job_id, after, RESULTS_PAGE)
        if page:
            after = page[-1][0]
            yield b"".join(record for _, record in page)
            continue
        if not follow or (job_state in JobState.FINAL and finished >= total):
            return
        if context.dispatcher.failure is not None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(news.wait(), FOLLOW_POLL_SECONDS)
