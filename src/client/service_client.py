"""Talking to the scheduler service over HTTP (httpx)."""

import re
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from client.errors import ClientError
from scheduler.errors import TokenError
from scheduler.tokens import client_token
from worker.task import JOB_ID_PATTERN, TaskLine, encode_task_lines
from worker.workload import TaskReader

#: Tasks per piece of the upload stream.
UPLOAD_BATCH = 5000

#: Bytes of a file read and sent at a time.
BLOB_PIECE_BYTES = 1024 * 1024

#: Seconds to connect and for every request but the following of results.
REQUEST_TIMEOUT_SECONDS = 60.0


def job_path(job_id: str, action: str = "") -> str:
    """The URL path of a job (and an action on it); ClientError if ``job_id`` is
    not one, rather than a URL the HTTP library refuses with a traceback."""
    if not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise ClientError(f"not a job id: {job_id}")
    return f"/jobs/{job_id}" + (f"/{action}" if action else "")


def upload_body(paths: Sequence[str]) -> Iterator[bytes]:
    """The tasks of checked workload files as the JSON Lines the service takes."""
    for path in paths:
        with TaskReader(path, check=False) as reader:
            while (batch := reader.read(UPLOAD_BATCH)).lines:
                tasks = [
                    TaskLine(path, line, text)
                    for line, text in zip(batch.lines, batch.texts, strict=True)
                ]
                yield encode_task_lines(tasks)


class SchedulerClient:
    """A connection to one scheduler service.

    ``ca_cert``: the certificate (PEM) that signed an HTTPS scheduler's, when
    it is not one the system trusts (a self-signed one, say).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_file: Path | None = None,
        ca_cert: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        try:
            secret = client_token(self.url, token, token_file)
        except TokenError as error:
            raise ClientError(str(error)) from error
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        verify: ssl.SSLContext | bool = True
        if ca_cert is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_cert))
            except (OSError, ssl.SSLError) as error:
                raise ClientError(f"{ca_cert}: cannot load the certificate: {error}") from error
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS, verify=verify
        )

    def __enter__(self) -> "SchedulerClient":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ClientError(f"cannot reach the scheduler at {self.url}: {error}") from error
        _raise_for_status(response)
        return response.json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    def submit(
        self,
        paths: Sequence[str],
        placement: str = "local",
        retries: int = 0,
        inputs: str | None = None,
        outputs: bool = False,
    ) -> dict[str, Any]:
        """Upload checked workload files as one job; returns {"job", "tasks"}.

        ``placement``: ``local``, ``remote`` (the scheduler's fleet) or ``hybrid``;
        ``retries``: how often a task that fails, times out or is lost runs again;
        ``inputs``: the id of a list of inputs the scheduler keeps (``add_inputs``);
        ``outputs``: keep its tasks' files for ``task_files``.
        """
        headers = {"Content-Type": "application/x-ndjson"}
        params: dict[str, str | int] = {"placement": placement, "retries": retries}
        if inputs is not None:
            params["inputs"] = inputs
        if outputs:
            params["outputs"] = "true"
        result: dict[str, Any] = self._request(
            "POST", "/jobs", content=upload_body(paths), headers=headers, params=params
        )
        return result

    def add_inputs(self, manifest: bytes) -> tuple[str, list[str]]:
        """Give the scheduler a job's list of inputs (``worker.input_manifest``); its
        id there, and the contents (sha256) the scheduler lacks."""
        headers = {"Content-Type": "application/json"}
        answer = self._request("POST", "/inputs", content=manifest, headers=headers)
        return str(answer["inputs"]), [str(sha256) for sha256 in answer["missing"]]

    def put_blob(self, sha256: str, path: Path, size: int) -> None:
        """Send a file's content, named by its sha256 (which the scheduler checks)."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}

        def body() -> Iterator[bytes]:
            with path.open("rb") as reading:
                while block := reading.read(BLOB_PIECE_BYTES):
                    yield block

        self._request("PUT", f"/blobs/{sha256}", content=body(), headers=headers)

    def task_files(self, job_id: str, label: str, into: Path, max_bytes: int) -> None:
        """Write the tar of a task's files (``label``: ``<file>-<line>``) to ``into``;
        ClientError if the scheduler refuses or it is over ``max_bytes``."""
        url = job_path(job_id, f"files/{quote(label, safe='')}")
        try:
            with self.http.stream("GET", url) as response:
                if response.is_error:
                    response.read()
                    _raise_for_status(response)
                size = 0
                with into.open("xb") as writing:
                    for piece in response.iter_bytes():
                        size += len(piece)
                        if size > max_bytes:
                            raise ClientError(f"{label}: its files are over {max_bytes} bytes")
                        writing.write(piece)
        except httpx.TransportError as error:
            raise ClientError(f"lost the scheduler at {self.url}: {error}") from error

    def retry(self, job_id: str, placement: str | None = None, retries: int = 0) -> dict[str, Any]:
        """Run the tasks of an ended job that did not succeed again, as a new job;
        returns {"job", "tasks", "retry_of"}. ``placement``: the old job's if None."""
        params: dict[str, str | int] = {"retries": retries}
        if placement is not None:
            params["placement"] = placement
        result: dict[str, Any] = self._request("POST", job_path(job_id, "retry"), params=params)
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", job_path(job_id))
        return result

    def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/jobs")["jobs"]
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", job_path(job_id, "cancel"))
        return result

    def results(self, job_id: str, *, follow: bool) -> Iterator[list[bytes]]:
        """A job's result records (JSON lines, without newlines), as they arrive: the
        records of each piece the network delivered together, so that a caller can
        write them at once and flush before it waits for more."""
        params = {"follow": "true" if follow else "false"}
        # No read timeout while following: a job may run for hours between results.
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=None)
        try:
            with self.http.stream(
                "GET", job_path(job_id, "results"), params=params, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    _raise_for_status(response)
                pending = b""
                for piece in response.iter_bytes():
                    lines = (pending + piece).split(b"\n")
                    pending = lines.pop()
                    if records := [line for line in lines if line]:
                        yield records
                if pending:
                    yield [pending]
        except httpx.ConnectError as error:
            raise ClientError(f"cannot reach the scheduler at {self.url}: {error}") from error
        except httpx.TransportError as error:
            raise ClientError(f"lost the scheduler at {self.url}: {error}") from error


def _raise_for_status(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    if response.status_code == 401:
        message += (
            "; a scheduler keeps its token in ~/.local/state/taskfleet/token of the user"
            " running it: pass --token-file PATH"
        )
    raise ClientError(f"scheduler answered {response.status_code}: {message}")
