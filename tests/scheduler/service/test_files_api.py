"""The files routes on the service's real app and server, in process: what they
take, and that every bad request is a 4xx with a JSON error, never a 500."""

import hashlib
import json

import httpx

from scheduler.jobs.file_store import MAX_MANIFEST_BYTES, store_of
from scheduler.jobs.journal import Journal
from tests.conftest import IN_PROCESS_TOKEN, in_process_service

TOKEN = {"Authorization": f"Bearer {IN_PROCESS_TOKEN}"}
JSON = {**TOKEN, "Content-Type": "application/json"}
OCTETS = {**TOKEN, "Content-Type": "application/octet-stream"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(data: bytes, name: str = "a.txt") -> bytes:
    return json.dumps([{"name": name, "size": len(data), "sha256": sha(data)}]).encode()


def test_inputs_are_sent_once_each_content_checked_on_arrival() -> None:
    with in_process_service() as service:
        asked = httpx.post(f"{service.url}/inputs", content=listing(b"hello"), headers=JSON)
        assert asked.status_code == 200
        assert asked.json()["missing"] == [sha(b"hello")]
        forged = httpx.put(f"{service.url}/blobs/{sha(b'hello')}", content=b"bye", headers=OCTETS)
        assert forged.status_code == 400
        assert "does not have sha256" in forged.json()["error"]
        sent = httpx.put(f"{service.url}/blobs/{sha(b'hello')}", content=b"hello", headers=OCTETS)
        assert sent.status_code == 201
        assert sent.json()["size"] == 5
        again = httpx.post(f"{service.url}/inputs", content=listing(b"hello"), headers=JSON)
        assert again.json() == {"inputs": asked.json()["inputs"], "missing": []}
        store = store_of(service.journal)
        assert [p.name for p in (store / "blobs").iterdir()] == [sha(b"hello")]


def test_a_job_with_inputs_is_refused_until_they_are_all_there() -> None:
    with in_process_service() as service:
        inputs = httpx.post(f"{service.url}/inputs", content=listing(b"x"), headers=JSON).json()
        task = b'{"file": "w.txt", "line": 1, "task": "cat a.txt"}\n'
        url = f"{service.url}/jobs?inputs={inputs['inputs']}"
        refused = httpx.post(url, content=task, headers=service.headers)
        assert refused.status_code == 409
        assert "not here: send them" in refused.json()["error"]
        journal = Journal(service.journal)
        try:
            assert journal.jobs() == []  # nothing half stored
        finally:
            journal.close()
        httpx.put(f"{service.url}/blobs/{sha(b'x')}", content=b"x", headers=OCTETS)
        made = httpx.post(f"{service.url}/jobs?outputs=true&" + url.split("?")[1],
                          content=task, headers=service.headers)  # fmt: skip
        assert made.status_code == 201
        job = made.json()["job"]
        status = httpx.get(f"{service.url}/jobs/{job}", headers=TOKEN).json()
        assert status["keeps_files"] is True
        staged = store_of(service.journal) / "jobs" / job / "inputs" / "a.txt"
        assert staged.read_bytes() == b"x"


def test_bad_requests_to_the_files_routes_are_4xx_with_a_json_error() -> None:
    with in_process_service() as service:
        url = service.url
        made = httpx.post(
            f"{url}/jobs", content=b'{"file": "w", "line": 1, "task": "true"}\n',
            headers=service.headers,
        )  # fmt: skip
        job = made.json()["job"]
        big = b"[" + b" " * MAX_MANIFEST_BYTES + b"]"
        cases = [
            ("POST", "/inputs", b"[]", {**TOKEN, "Content-Type": "text/plain"}, 415),
            ("POST", "/inputs", b"not json", JSON, 400),
            ("POST", "/inputs", big, JSON, 413),
            ("POST", "/inputs", listing(b"a", "../up"), JSON, 400),
            ("POST", "/inputs", listing(b"a"), {"Content-Type": "application/json"}, 401),
            ("PUT", f"/blobs/{sha(b'a')}", b"a", {**TOKEN, "Content-Type": "text/plain"}, 415),
            ("PUT", "/blobs/not-a-sha", b"a", OCTETS, 400),
            ("PUT", f"/blobs/{sha(b'a')}", b"a", {"Content-Type": "application/octet-stream"}, 401),
            ("GET", f"/jobs/{job}/files/w-1", b"", TOKEN, 404),
            ("GET", f"/jobs/{job}/files/..%2F..%2Fetc", b"", TOKEN, 400),
            ("GET", "/jobs/ffffffff/files/w-1", b"", TOKEN, 404),
            ("GET", f"/jobs/{job}/files/w-1", b"", {}, 401),
            ("POST", "/jobs?inputs=nope", b'{"file": "w", "line": 1, "task": "true"}\n',
             service.headers, 400),
            ("POST", f"/jobs?inputs={sha(b'none')}", b'{"file": "w", "line": 1, "task": "true"}\n',
             service.headers, 404),
            ("POST", "/jobs?outputs=maybe", b'{"file": "w", "line": 1, "task": "true"}\n',
             service.headers, 400),
            # Two files of one base name: their tasks' folders would mix.
            ("POST", "/jobs?outputs=true", b'{"file": "a/w", "line": 1, "task": "true"}\n'
             b'{"file": "b/w", "line": 1, "task": "true"}\n', service.headers, 400),
            ("GET", f"/jobs/{job}/files/w-{'9' * 30}", b"", TOKEN, 404),
        ]  # fmt: skip
        for method, path, body, headers, status in cases:
            answer = httpx.request(method, url + path, content=body, headers=headers)
            assert answer.status_code == status, (method, path, answer.text)
            assert answer.json()["error"], (method, path)


def test_a_cross_site_upload_is_refused() -> None:
    with in_process_service() as service:
        headers = {**OCTETS, "Origin": "http://evil.example"}
        answer = httpx.put(f"{service.url}/blobs/{sha(b'a')}", content=b"a", headers=headers)
        assert answer.status_code == 403
        assert not list((store_of(service.journal) / "blobs").iterdir())
