"""The usage meter: real boto3 clients against the session's moto_server, their
calls counted through botocore's hooks in the units AWS bills."""

import socket
import threading
from typing import Any

import boto3
import pytest

from worker.sqs import aws_client, send_batches, send_cost
from worker.usage import SQS_BILLING_CHUNK_BYTES, Usage, UsageMeter, sqs_units


def test_sqs_bills_a_request_per_started_64_kib() -> None:
    assert [sqs_units(n) for n in (0, 1, SQS_BILLING_CHUNK_BYTES)] == [1, 1, 1]
    assert sqs_units(SQS_BILLING_CHUNK_BYTES + 1) == 2
    assert sqs_units(256 * 1024) == 4


def test_usage_adds_and_subtracts_field_by_field() -> None:
    one = Usage(1.5, 2, 3, 4, 5)
    assert one + one == Usage(3.0, 4, 6, 8, 10)
    assert one - one == Usage()
    assert not Usage()
    assert one
    assert one.aws_requests == 9


@pytest.fixture
def sqs(moto_endpoint: str) -> tuple[Any, str]:
    """A queue on the emulator, and a client that reaches it."""
    assert moto_endpoint
    client = aws_client("sqs")
    return client, client.create_queue(QueueName="metered")["QueueUrl"]


def test_a_sends_cost_is_known_before_it_is_sent(sqs: tuple[Any, str]) -> None:
    """So a result message can carry a report that counts its own send."""
    client, queue = sqs
    meter = UsageMeter()
    meter.watch(client)
    # Twelve bodies: two calls (ten a call), the first over two 64 KiB chunks.
    bodies = ["é" * 7000] * 10 + ["x" * 10, "y"]
    spent: list[Usage] = []
    with meter.apart(spent):
        assert send_batches(client, queue, bodies) == 2
    assert spent[0] == send_cost(bodies)
    assert spent[0].sqs_requests == 3 + 1


def test_sqs_calls_are_charged_to_the_job_of_the_calling_thread(sqs: tuple[Any, str]) -> None:
    client, queue = sqs
    meter = UsageMeter()
    meter.watch(client)
    with meter.charged_to("job-a"):
        client.send_message(QueueUrl=queue, MessageBody="x" * (100 * 1024))  # 2 units
    seen: list[Usage] = []

    def other_job() -> None:
        with meter.charged_to("job-b"):
            client.send_message(QueueUrl=queue, MessageBody="small")
            seen.append(meter.last_call())

    thread = threading.Thread(target=other_job)
    thread.start()
    thread.join()
    client.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])  # no job: overhead
    a, b, nobody = meter.take("job-a"), meter.take("job-b"), meter.take(None)
    assert (a.sqs_requests, b.sqs_requests, nobody.sqs_requests) == (2, 1, 1)
    assert a.bytes_sent == 100 * 1024  # the payload SQS bills, not the request around it
    assert 0 < b.bytes_sent < 1024
    assert seen == [b]
    assert meter.take("job-a") == Usage()  # taken: counting starts again


def test_a_receive_is_billed_for_what_it_brought_and_can_be_moved(sqs: tuple[Any, str]) -> None:
    client, queue = sqs
    client.send_message(QueueUrl=queue, MessageBody="y" * (200 * 1024))
    meter = UsageMeter()
    meter.watch(client)
    messages = client.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    assert len(messages) == 1
    received = meter.last_call()
    assert received.sqs_requests == 4  # 200 KiB received: four 64 KiB chunks
    meter.move(received, None, "job-a")
    assert meter.take(None) == Usage()
    assert meter.take("job-a") == received
    assert meter.jobs() == []


@pytest.mark.usefixtures("moto_endpoint")
def test_dynamodb_writes_are_billed_per_started_kib_and_reads_per_call() -> None:
    client = aws_client("dynamodb")
    client.create_table(
        TableName="metered",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    meter = UsageMeter()
    meter.watch(client)
    with meter.charged_to("job-a"):
        client.put_item(TableName="metered", Item={"k": {"S": "small"}})
        client.put_item(TableName="metered", Item={"k": {"S": "big"}, "v": {"S": "z" * 3000}})
        client.get_item(TableName="metered", Key={"k": {"S": "small"}})
    used = meter.take("job-a")
    assert (used.dynamodb_writes, used.dynamodb_reads) == (1 + 3, 1)
    assert used.sqs_requests == 0


@pytest.mark.usefixtures("moto_endpoint")
def test_free_services_are_not_counted() -> None:
    meter = UsageMeter()
    autoscaling: Any = meter.watch(boto3.client("autoscaling"))
    autoscaling.describe_auto_scaling_groups()
    assert meter.take(None) == Usage()


def test_an_attempt_that_got_no_answer_is_not_billed() -> None:
    from botocore.config import Config
    from botocore.exceptions import EndpointConnectionError

    with socket.socket() as bound:
        # Bound and never listening: the port stays this test's, and refuses.
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        client: Any = boto3.client(
            "sqs",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=1),
        )
        meter = UsageMeter()
        meter.watch(client)
        with pytest.raises(EndpointConnectionError), meter.charged_to("job-a"):
            client.send_message(QueueUrl=f"http://127.0.0.1:{port}/1/q", MessageBody="lost")
    assert meter.take("job-a") == Usage()


def test_s3_calls_count_in_their_billing_tiers_with_the_bytes_moved(moto_endpoint: str) -> None:
    assert moto_endpoint
    client = aws_client("s3")
    client.create_bucket(Bucket="metered")
    meter = UsageMeter()
    meter.watch(client)
    with meter.charged_to("job"):
        client.put_object(Bucket="metered", Key="a", Body=b"x" * 5000)  # a write
        client.head_object(Bucket="metered", Key="a")  # reads
        assert client.get_object(Bucket="metered", Key="a")["Body"].read() == b"x" * 5000
        client.list_objects_v2(Bucket="metered")  # a LIST bills as a write
        client.delete_object(Bucket="metered", Key="a")  # free
    usage = meter.take("job")
    assert (usage.s3_writes, usage.s3_reads, usage.s3_bytes) == (2, 2, 10_000)
    assert usage.aws_requests == 4
