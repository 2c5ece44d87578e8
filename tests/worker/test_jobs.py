"""The worker's look-ups of a bundle's job: its result queue and its state (stubbed AWS)."""

from typing import Any

import pytest
from botocore.exceptions import ClientError

from worker import jobs
from worker.contracts import JobItem
from worker.jobs import JobQueues, JobStates, is_no_such_queue
from worker.usage import Usage


class ConditionalCheckFailedException(Exception):  # noqa: N818 - as boto3 names it
    pass


class Dynamodb:
    class exceptions:  # noqa: N801 - as boto3 names it
        ConditionalCheckFailedException = ConditionalCheckFailedException

    def __init__(self, state: str | None) -> None:
        self.state = state
        self.reads = 0
        self.updates: list[dict[str, Any]] = []

    def get_item(self, **request: Any) -> dict[str, Any]:
        self.reads += 1
        assert request["Key"][JobItem.SORT] == {"S": JobItem.META}
        if self.state is None:
            return {}
        return {"Item": {JobItem.STATE: {"S": self.state}}}

    def update_item(self, **request: Any) -> None:
        self.updates.append(request)


def test_a_jobs_results_go_to_its_own_queue_named_without_a_look_up() -> None:
    queues = JobQueues("https://sqs.r.amazonaws.com/123/Stack-Requests", "Stack_job_", "resp")
    assert queues.url("a1") == "https://sqs.r.amazonaws.com/123/Stack_job_a1"


def test_without_job_queues_every_result_goes_to_the_response_queue() -> None:
    queues = JobQueues("https://sqs.r.amazonaws.com/123/Stack-Requests", None, "resp")
    assert queues.url("a1") == "resp"


def test_a_send_to_a_queue_that_is_gone_is_told_from_other_failures() -> None:
    gone = ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}}, "Send")
    assert is_no_such_queue(gone)
    assert not is_no_such_queue(ClientError({"Error": {"Code": "Throttling"}}, "Send"))
    assert not is_no_such_queue(ValueError("no"))


def test_a_jobs_state_is_read_at_most_every_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("worker.jobs.time.monotonic", lambda: now[0])
    table = Dynamodb(JobItem.RUNNING)
    states = JobStates(table, "jobs")
    assert not states.cancelled("a1")
    assert not states.cancelled("a1")
    assert table.reads == 1
    table.state = JobItem.CANCELLED
    now[0] += jobs.CANCEL_CHECK_SECONDS
    assert states.cancelled("a1")
    now[0] += 10 * jobs.CANCEL_CHECK_SECONDS
    assert states.cancelled("a1")  # for good: not read again
    assert table.reads == 2


def test_an_unknown_job_or_no_table_is_not_cancelled() -> None:
    assert not JobStates(Dynamodb(None), "jobs").cancelled("a1")
    assert not JobStates(Dynamodb(JobItem.CANCELLED), None).cancelled("a1")


def test_the_idle_tail_is_added_to_the_jobs_meta_item_alone() -> None:
    table = Dynamodb(JobItem.RUNNING)
    tail = Usage(instance_seconds=301.5, sqs_requests=16, dynamodb_writes=1)
    assert JobStates(table, "jobs").charge_tail("a1", tail)
    (update,) = table.updates
    assert update["Key"] == {JobItem.PARTITION: {"S": "a1"}, JobItem.SORT: {"S": JobItem.META}}
    assert update["UpdateExpression"] == "ADD #t0 :t0, #t1 :t1, #t2 :t2"
    names, values = update["ExpressionAttributeNames"], update["ExpressionAttributeValues"]
    added = {names[f"#t{n}"]: values[f":t{n}"]["N"] for n in range(3)}
    assert added == {
        "tail_instance_seconds": "301.500",
        "tail_sqs_requests": "16",
        "tail_dynamodb_writes": "1",
    }
    assert JobStates(table, "jobs").charge_tail("a1", Usage())
    assert len(table.updates) == 1  # nothing to add


def test_a_jobs_records_are_kept_until_it_is_read_as_ended() -> None:
    running = JobStates(Dynamodb(JobItem.RUNNING), "jobs")
    assert running.keeps("a1")
    assert not running.ended("a1")  # its item has no ended_at
    assert running.keeps("a1")
    gone = JobStates(Dynamodb(None), "jobs")  # expired: no item
    assert gone.ended("a1")
    assert not gone.keeps("a1")  # a bundle drained after it puts nothing
    assert gone.keeps("a2")
    assert not JobStates(Dynamodb(JobItem.RUNNING), None).keeps("a1")  # no job table
