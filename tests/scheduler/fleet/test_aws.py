"""RemoteFleet against moto's SQS and Auto Scaling in process (fast; e2e uses a server)."""

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from scheduler.errors import FleetError
from scheduler.fleet.aws import Delivery, RemoteFleet, StackResources
from scheduler.fleet.job_store import is_task_of
from worker.bundle import (
    Bundle,
    BundleTask,
    ResultBatch,
    UsageReport,
    encode_bundle,
    result_messages,
)
from worker.result import Outcome, Result, Status, make_result
from worker.usage import Usage


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[RemoteFleet]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        sqs: Any = boto3.client("sqs")
        request, response, dead = (
            sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("req", "resp", "dlq")
        )
        yield RemoteFleet(StackResources(request, response, dead, None, 4))


def bundle(bundle_id: str, lines: int) -> str:
    tasks = [BundleTask(1, n, f"echo {n}") for n in range(1, lines + 1)]
    return encode_bundle(Bundle(bundle_id, "job", ["w.txt"], tasks))


def test_bundles_go_ten_to_a_call(fleet: RemoteFleet) -> None:
    assert fleet.send([bundle(f"job-{n}", 2) for n in range(25)]) == 3
    attributes = fleet.sqs.get_queue_attributes(
        QueueUrl=fleet.resources.request_queue_url,
        AttributeNames=["ApproximateNumberOfMessages"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "25"


def test_results_are_read_and_deleted(fleet: RemoteFleet) -> None:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0)
    results = [
        make_result(f"job:1:{n}", "job", "w.txt", n, "sleep 1", "i-1", outcome) for n in (1, 2)
    ]
    for body in result_messages("job-1", "i-1", results):
        fleet.sqs.send_message(QueueUrl=fleet.resources.response_queue_url, MessageBody=body)
    (delivery,) = fleet.receive(wait_seconds=0)
    assert [r.id for batch in delivery.batches for r in batch.results] == ["job:1:1", "job:1:2"]
    fleet.acknowledge(delivery)
    assert fleet.receive(wait_seconds=0) == []  # deleted once acknowledged


def test_a_stack_without_job_queues_sends_every_reader_its_results_on_the_response_queue(
    fleet: RemoteFleet,
) -> None:
    """A reader of its own jobs alone (``overhead=False``) reads the response
    queue too when the stack has no job queues: its results come that way."""
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0)
    result = make_result("job:1:1", "job", "w.txt", 1, "sleep 1", "i-1", outcome)
    (body,) = result_messages("job-1", "i-1", [result])
    fleet.sqs.send_message(QueueUrl=fleet.resources.response_queue_url, MessageBody=body)
    (delivery,) = fleet.receive(wait_seconds=0, overhead=False)
    assert [r.id for batch in delivery.batches for r in batch.results] == ["job:1:1"]


def test_results_not_acknowledged_come_back(fleet: RemoteFleet) -> None:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0)
    result = make_result("job:1:1", "job", "w.txt", 1, "sleep 1", "i-1", outcome)
    (body,) = result_messages("job-1", "i-1", [result])
    fleet.sqs.send_message(QueueUrl=fleet.resources.response_queue_url, MessageBody=body)
    (delivery,) = fleet.receive(wait_seconds=0)
    fleet.sqs.change_message_visibility(
        QueueUrl=delivery.queue_url,
        ReceiptHandle=delivery.messages[0]["ReceiptHandle"],
        VisibilityTimeout=0,
    )  # as if the scheduler died before storing it
    (again,) = fleet.receive(wait_seconds=0)
    assert again.batches == delivery.batches


def test_a_dead_bundle_is_reported_failed_with_the_reason(fleet: RemoteFleet) -> None:
    fleet.sqs.send_message(
        QueueUrl=fleet.resources.dead_letter_queue_url, MessageBody=bundle("job-9", 3)
    )
    fleet.sqs.send_message(QueueUrl=fleet.resources.dead_letter_queue_url, MessageBody="garbage")
    (delivery,) = fleet.receive(wait_seconds=0)
    assert len(delivery.messages) == 2  # the garbage is deleted with the rest
    failed = [r for batch in delivery.batches for r in batch.results]
    assert [(r.id, r.status) for r in failed] == [
        ("job:1:1", Status.FAILED),
        ("job:1:2", Status.FAILED),
        ("job:1:3", Status.FAILED),
    ]
    assert all("dead-letter queue" in (r.error or "") for r in failed)


def test_stack_outputs_are_required() -> None:
    class FakeCloudFormation:
        def describe_stacks(self, **query: str) -> dict[str, Any]:
            assert query == {"StackName": "Taskfleet"}
            return {"Stacks": [{"Outputs": [{"OutputKey": "RequestQueueUrl", "OutputValue": "u"}]}]}

    with pytest.raises(FleetError, match="ResponseQueueUrl"):
        StackResources.from_stack(FakeCloudFormation(), "Taskfleet")


def test_the_group_keeps_the_instances_holding_work_and_counts_every_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        ec2: Any = boto3.client("ec2")
        autoscaling: Any = boto3.client("autoscaling")
        ec2.create_launch_template(
            LaunchTemplateName="workers",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.small"},
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="fleet",
            LaunchTemplate={"LaunchTemplateName": "workers"},
            MinSize=0,
            MaxSize=4,
            DesiredCapacity=3,
            AvailabilityZones=["us-east-1a"],
        )

        def instances() -> list[dict[str, Any]]:
            (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["fleet"])[
                "AutoScalingGroups"
            ]
            return list(group["Instances"])

        holder = instances()[0]["InstanceId"]
        # Its worker holds a bundle (and may have died holding it): protected.
        autoscaling.set_instance_protection(
            InstanceIds=[holder], AutoScalingGroupName="fleet", ProtectedFromScaleIn=True
        )
        sqs: Any = boto3.client("sqs")
        request, response, dead = (
            sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("req", "resp", "dlq")
        )
        fleet = RemoteFleet(StackResources(request, response, dead, "fleet", 4, 2))
        # Nothing waits in the queue: the holder is kept, the idle ones go.
        assert fleet.provision() == 1
        assert [i["InstanceId"] for i in instances()] == [holder]
        # Three bundles just sent (the queue's counts may lag): two instances more
        # (two slots each), the holder kept.
        assert fleet.provision(just_sent=3) == 3
        assert holder in {i["InstanceId"] for i in instances()}
        # The same bundles counted on the queue, not twice.
        sqs.send_message_batch(
            QueueUrl=request,
            Entries=[{"Id": str(n), "MessageBody": bundle(f"b{n}", 1)} for n in range(3)],
        )
        assert fleet.provision(just_sent=3) == 3


def test_only_a_result_naming_a_task_of_the_job_is_its() -> None:
    def result(task_id: str, job: str = "j1", line: int = 3) -> Result:
        outcome = Outcome(Status.SUCCEEDED, 0, 0.0, 0.0, 0.0, stdout="", stderr="")
        return make_result(task_id, job, "w.txt", line, "echo", "i-1", outcome)

    assert is_task_of(result("j1:2:3"), "j1", file_count=2)
    assert not is_task_of(result("j1:2:3"), "j2", file_count=2)  # another job's
    assert not is_task_of(result("j1:2:3", job="j2"), "j1", file_count=2)  # id and job differ
    assert not is_task_of(result("j1:3:3"), "j1", file_count=2)  # no such file
    assert not is_task_of(result("j1:0:3"), "j1", file_count=2)
    assert not is_task_of(result("j1:x:3"), "j1", file_count=2)
    assert not is_task_of(result("j1:1:4"), "j1", file_count=2)  # not its own line


def test_no_region_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(FleetError, match=r"no AWS region: set AWS_DEFAULT_REGION \(`make local"):
        StackResources.lookup("Taskfleet")


class RecordingStore:
    """A job store that notes what a reader asks of it."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, list[str], int, bool]] = []
        self.counted: list[tuple[str, int, bool]] = []

    def store(self, job: str, results: list[Result], reports: list[Any], *, reading: bool) -> None:
        self.stored.append((job, [r.id for r in results], len(reports), reading))

    def count(self, job: str, count: int, *, reading: bool = False) -> None:
        self.counted.append((job, count, reading))


def test_a_reader_stores_only_what_no_worker_stored_and_counts_it_all(fleet: RemoteFleet) -> None:
    outcome = Outcome(Status.SUCCEEDED, 0, 1.0, 2.0, 1.0)

    def batch(line: int, *, stored: bool) -> ResultBatch:
        result = make_result(f"job:1:{line}", "job", "w.txt", line, "echo", "i-1", outcome)
        usage = UsageReport("i-1/x", line, "job", Usage(sqs_requests=1))
        return ResultBatch(f"job-{line}", "i-1", [result], usage, stored)

    store = RecordingStore()
    fleet.jobs = store  # type: ignore[assignment]
    delivery = Delivery("q", [], [batch(1, stored=True), batch(2, stored=False)])
    assert fleet.keep("job", delivery, file_count=1, reading=True) == 2
    assert store.stored == [("job", ["job:1:2"], 1, True)]  # a dead bundle's, say: no worker's
    assert store.counted == [("job", 1, True)]  # the worker's, counted with the lease
