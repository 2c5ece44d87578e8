"""The service's API: on its real app and server, in process, what an upload may
hold; and the steps of its handlers that judge a request, on their own."""

import json

import httpx
import pytest
from starlette.requests import Request

from scheduler.jobs.journal import Journal, Placement
from scheduler.retries import MAX_RETRIES
from scheduler.service.api import (
    MAX_UPLOAD_BYTES,
    NO_FLEET,
    UploadError,
    check_upload_headers,
    job_settings,
)
from tests.conftest import in_process_service


def test_a_task_with_a_line_break_is_refused_naming_its_line() -> None:
    with in_process_service() as service:
        for text in ("echo a\ntouch pwned", "echo a\rtouch pwned", "echo a\r\n"):
            rows = [
                {"file": "w.txt", "line": 1, "task": "echo fine"},
                {"file": "w.txt", "line": 7, "task": text},
            ]
            body = "".join(json.dumps(row) + "\n" for row in rows).encode()
            answer = httpx.post(f"{service.url}/jobs", content=body, headers=service.headers)
            assert answer.status_code == 400, text
            error = answer.json()["error"]
            assert error.startswith("w.txt:7: ")
            assert "CR or LF" in error
        journal = Journal(service.journal)
        try:
            assert journal.jobs() == []  # nothing half stored
        finally:
            journal.close()


def request(query: str = "", headers: dict[str, str] | None = None) -> Request:
    """A request as Starlette makes it from a scope, with this query and these headers."""
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return Request({"type": "http", "query_string": query.encode(), "headers": raw})


def test_job_settings_default_to_the_given_placement_and_no_retries() -> None:
    assert job_settings(request(), Placement.LOCAL, 0) == (Placement.LOCAL, 0)
    assert job_settings(request(), Placement.REMOTE, 4) == (Placement.REMOTE, 0)
    assert job_settings(request("placement=hybrid&retries=3"), "local", 4) == ("hybrid", 3)


@pytest.mark.parametrize(
    ("query", "fleet_slots", "status", "message"),
    [
        ("placement=moon", 4, 400, "placement must be one of local, remote, hybrid"),
        ("placement=remote", 0, 409, NO_FLEET),
        ("retries=-1", 0, 400, f"retries must be a whole number from 0 to {MAX_RETRIES}"),
        (f"retries={MAX_RETRIES + 1}", 0, 400, "retries must be a whole number"),
        ("retries=%D9%A3", 0, 400, "retries must be a whole number"),  # an Arabic 3
    ],
)
def test_bad_job_settings_are_refused_with_their_status(
    query: str, fleet_slots: int, status: int, message: str
) -> None:
    with pytest.raises(UploadError) as refused:
        job_settings(request(query), Placement.LOCAL, fleet_slots)
    assert refused.value.status == status
    assert str(refused.value).startswith(message)


def test_an_upload_is_refused_by_its_headers_before_its_body_is_read() -> None:
    fine = {"Content-Type": "application/x-ndjson; charset=utf-8", "Content-Length": "10"}
    check_upload_headers(request(headers=fine))
    for headers, status in (
        ({"Content-Type": "text/plain"}, 415),
        ({}, 415),
        ({**fine, "Content-Length": str(MAX_UPLOAD_BYTES + 1)}, 413),
    ):
        with pytest.raises(UploadError) as refused:
            check_upload_headers(request(headers=headers))
        assert refused.value.status == status, headers
