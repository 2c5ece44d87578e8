"""The scheduler service's routes for jobs' files (``submit --upload/--output-dir``).

    POST /inputs                        a job's list of inputs (JSON); answers
                                        {"inputs": ID, "missing": [sha256...]}
    PUT  /blobs/{sha256}                one content the list named, checked
                                        against its sha256 as it arrives
    GET  /jobs/{id}/files/{file}-{line} a task's files, as a tar (from the
                                        fleet's bucket for a task that ran there)

The store itself is ``scheduler.jobs.file_store``; every refusal is a 4xx (507
for a full store) with a JSON ``error``. The guard has checked the token, the
Host and the origin first, and bounds the uploads open at once; the connection
bounds each upload's time by its size (``http_protocol.request_deadline``).
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from anyio import to_thread
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from scheduler.errors import JobNotFoundError
from scheduler.jobs.file_store import MAX_MANIFEST_BYTES, BlobWriter, FilesError, FileStore
from scheduler.jobs.journal import Journal
from scheduler.service.context import ServiceContext
from scheduler.service.fleet_files import FleetFilesError
from worker.result import decode

#: The content types the routes take: not ones a form or a "simple" cross-site
#: fetch may send without a preflight.
MANIFEST_CONTENT_TYPE = "application/json"
BLOB_CONTENT_TYPE = "application/octet-stream"

T = TypeVar("T")


def refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def announced_length(request: Request) -> int | None:
    length = request.headers.get("content-length")
    return int(length) if length is not None and length.isdigit() else None


class JobFilesHandlers:
    """The handlers of the files routes."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def routes(self) -> list[Route]:
        return [
            Route("/inputs", self.inputs, methods=["POST"]),
            Route("/blobs/{sha256}", self.blob, methods=["PUT"]),
            Route("/jobs/{job_id}/files/{label:path}", self.task_files),
        ]

    async def _in_thread(self, work: Callable[[FileStore], T]) -> T:
        store = self.context.files
        if store is None:
            raise FilesError(409, "this scheduler takes no files")
        return await to_thread.run_sync(lambda: work(store))

    async def inputs(self, request: Request) -> Response:
        if content_type(request) != MANIFEST_CONTENT_TYPE:
            return refused(415, f"a list of inputs is sent as {MANIFEST_CONTENT_TYPE}")
        length = announced_length(request)
        if length is not None and length > MAX_MANIFEST_BYTES:
            return refused(413, f"the list of inputs is above {MAX_MANIFEST_BYTES} bytes")
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_MANIFEST_BYTES:
                return refused(413, f"the list of inputs is above {MAX_MANIFEST_BYTES} bytes")
        try:
            kept = await self._in_thread(lambda store: store.add_inputs(bytes(body)))
        except FilesError as error:
            return refused(error.status, str(error))
        return JSONResponse({"inputs": kept.id, "missing": kept.missing})

    async def blob(self, request: Request) -> Response:
        if content_type(request) != BLOB_CONTENT_TYPE:
            return refused(415, f"a content is sent as {BLOB_CONTENT_TYPE}")
        sha256 = request.path_params["sha256"]
        length = announced_length(request)
        try:
            writer = await self._in_thread(lambda store: store.blob_writer(sha256, length))
        except FilesError as error:
            return refused(error.status, str(error))
        try:
            await receive_blob(request, writer)
        except FilesError as error:
            return refused(error.status, str(error))
        finally:
            await to_thread.run_sync(writer.discard)  # nothing once it was kept
        return JSONResponse({"sha256": sha256, "size": writer.size}, status_code=201)

    async def task_files(self, request: Request) -> Response:
        job_id, label = request.path_params["job_id"], request.path_params["label"]
        try:
            await self.context.run(Journal.job, job_id)
            tar = await self._in_thread(lambda store: store.pack_outputs(job_id, label))
            if tar is None:
                tar = await self._from_fleet(job_id, label)
        except JobNotFoundError as missing:
            return refused(404, str(missing))
        except FilesError as error:
            return refused(error.status, str(error))
        if tar is None:
            return refused(404, f"job {job_id} kept no files of task {label}")
        remove = BackgroundTask(tar.unlink, missing_ok=True)
        return FileResponse(tar, media_type="application/x-tar", background=remove)

    async def _from_fleet(self, job_id: str, label: str) -> Path | None:
        """The tar of a task that ran on the fleet (a new file in the store's
        ``incoming``), fetched from the bucket; None if its record names none."""
        fleet_files = self.context.fleet_files
        name, _, line = label.rpartition("-")
        if fleet_files is None or not (line.isascii() and line.isdigit() and len(line) <= 10):
            return None  # no task of a journal has such a line
        records = await self.context.run(Journal.records_of_line, job_id, int(line), name)
        keys = [record.files_object for record in map(decode, records) if record.files_object]
        if len(keys) != 1:
            return None  # none, or two files of one name: no one task's
        key = keys[0]

        def fetch(store: FileStore) -> Path:
            descriptor, tar_name = tempfile.mkstemp(prefix="fleet-", dir=store.incoming)
            os.close(descriptor)
            tar = Path(tar_name)
            try:
                tar.unlink()  # written afresh by the fetch
                fleet_files.fetch(job_id, key, tar)
            except BaseException:
                tar.unlink(missing_ok=True)
                raise
            return tar

        try:
            return await self._in_thread(fetch)
        except FleetFilesError as error:
            raise FilesError(502, str(error)) from error


async def receive_blob(request: Request, writer: BlobWriter) -> None:
    """Write a content's body as it arrives, then keep it if it is what it is
    named. (A client that goes away half-way: ClientDisconnect, as for jobs.)"""
    async for piece in request.stream():
        await to_thread.run_sync(writer.write, piece)
    await to_thread.run_sync(writer.finish)
