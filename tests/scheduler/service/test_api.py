"""The service's API on its real app and server, in process: what an upload may hold."""

import json

import httpx

from scheduler.jobs.journal import Journal
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
