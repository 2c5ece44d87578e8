"""The dashboard's routes on the service's real app and server, in process (the
browser tests drive the page itself)."""

import json
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from scheduler.jobs.journal import Journal, Placement
from scheduler.service.dashboard import TaskQuery
from tests.conftest import InProcessService, in_process_service
from tests.scheduler.jobs.test_journal import timed_record
from worker.bundle import UsageReport
from worker.result import Status
from worker.usage import Usage


@pytest.fixture
def service() -> Iterator[InProcessService]:
    with in_process_service() as running:
        journal = Journal(running.journal)
        journal.create_job("a", Placement.REMOTE)
        journal.add_tasks("a", [(1, n, f"sleep {n}") for n in range(1, 4)])
        journal.seal_job("a", ["w.txt"], 3)
        journal.mark_dispatched("a", 1, [1, 2, 3])
        rows = [(n, Status.SUCCEEDED, timed_record(n, d)) for n, d in ((1, 5), (2, 90), (3, 40))]
        journal.finish("a", 1, rows, seq=1)
        used = Usage(2.5, 10, 3, 0, 2048)
        journal.add_usage("a", used, UsageReport("i-1/x", 1, "a", used))
        journal.add_cpu_seconds("a", 0.5)
        journal.close()
        yield running


def test_a_job_says_what_it_used(service: InProcessService) -> None:
    job = httpx.get(f"{service.url}/jobs/a", headers=service.headers).json()
    assert (job["instance_seconds"], job["aws_requests"], job["cpu_seconds"]) == (2.5, 13, 0.5)
    assert job["usage"] == {
        "instance_seconds": 2.5,
        "sqs_requests": 10,
        "dynamodb_writes": 3,
        "dynamodb_reads": 0,
        "bytes_sent": 2048,
        "s3_writes": 0,
        "s3_reads": 0,
        "s3_bytes": 0,
    }
    assert job["usage_to_come"] == 1  # i-1 has not sent its last report of the job
    # A scheduler without a stack has no prices: the cost is unknown, not zero.
    assert (job["cost_usd"], job["priced_at"]) == (None, None)


def test_the_slowest_tasks_longest_first(service: InProcessService) -> None:
    answer = httpx.get(f"{service.url}/jobs/a/tasks?slowest=true&limit=2", headers=service.headers)
    assert answer.status_code == 200
    assert [json.loads(line)["line"] for line in answer.text.splitlines()] == [2, 3]


def test_the_fleet_of_a_scheduler_without_a_stack(service: InProcessService) -> None:
    answer = httpx.get(f"{service.url}/fleet", headers=service.headers)
    assert answer.status_code == 409
    assert "start it with --stack NAME" in answer.json()["error"]


def test_the_event_stream_carries_each_jobs_usage(service: InProcessService) -> None:
    with httpx.stream(
        "GET", f"{service.url}/events", headers=service.headers, timeout=10
    ) as events:
        lines = events.iter_lines()
        assert next(lines) == "event: jobs"
        update = json.loads(next(lines).removeprefix("data: "))
    (job,) = update["jobs"]
    assert (job["job"], job["aws_requests"], job["cost_usd"]) == ("a", 13, None)


def test_a_task_query_is_read_from_the_request_or_refused_naming_its_parameter() -> None:
    def query(text: str) -> TaskQuery:
        return TaskQuery.of(Request({"type": "http", "query_string": text.encode(), "headers": []}))

    assert query("") == TaskQuery(Status.FAILED, 50, slowest=False)
    assert query("status=timed_out&limit=200&slowest=yes") == TaskQuery(
        Status.TIMED_OUT, 200, slowest=True
    )
    for bad, named in (("status=fine", "status"), ("limit=0", "limit"), ("limit=201", "limit")):
        with pytest.raises(ValueError, match=f"^{named} must be"):
            query(bad)
