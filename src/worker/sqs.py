"""SQS limits and the calls both ends of the remote path make the same way."""

from collections.abc import Iterator, Sequence
from typing import Any

import boto3
from botocore.config import Config

from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGE_BYTES, MAX_MESSAGES_PER_CALL
from worker.errors import QueueError
from worker.usage import Usage, sqs_units

#: Seconds a call of a ``prompt`` client may take, at the most: connecting, then
#: reading its answer (a record item lands this soon after its key is made).
PROMPT_CALL_SECONDS = 5


def aws_client(service: str, region: str | None = None, *, prompt: bool = False) -> Any:
    """A boto3 client whose calls have time limits and retry with backoff, so a
    passing network fault costs time, not work; ``prompt``: one attempt each,
    within PROMPT_CALL_SECONDS twice (the caller tries again later, anew)."""
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 1 if prompt else 10},
        connect_timeout=PROMPT_CALL_SECONDS if prompt else 5,
        read_timeout=PROMPT_CALL_SECONDS if prompt else LONG_POLL_SECONDS + 10,
    )
    return boto3.client(service, config=config)


def send_batches(sqs: Any, queue_url: str, bodies: Sequence[str]) -> int:
    """Send message bodies, ten (and 1 MiB in all) per SendMessageBatch; returns the calls."""
    calls = 0
    for batch in _send_batches(bodies):
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(batch)],
        )
        if response.get("Failed"):
            raise QueueError(f"SQS refused messages: {response['Failed']}")
        calls += 1
    return calls


def send_cost(bodies: Sequence[str]) -> Usage:
    """What ``send_batches(bodies)`` will be billed, as the meter counts it."""
    cost = Usage()
    for batch in _send_batches(bodies):
        payload = sum(len(body.encode()) for body in batch)
        cost += Usage(sqs_requests=sqs_units(payload), bytes_sent=payload)
    return cost


def _send_batches(bodies: Sequence[str]) -> Iterator[list[str]]:
    """Bodies as SendMessageBatch takes them: ten, and 1 MiB in all, a call."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if batch and (len(batch) == MAX_MESSAGES_PER_CALL or size + length > MAX_MESSAGE_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += length
    if batch:
        yield batch


def _receipt_batches(
    messages: Sequence[dict[str, Any]], **extra: Any
) -> Iterator[list[dict[str, Any]]]:
    """Batch-call entries for received messages, ten at a time."""
    for start in range(0, len(messages), MAX_MESSAGES_PER_CALL):
        chunk = messages[start : start + MAX_MESSAGES_PER_CALL]
        yield [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], **extra}
            for n, m in enumerate(chunk)
        ]


def delete_batch(sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> None:
    """Delete received messages, ten per DeleteMessageBatch."""
    for entries in _receipt_batches(messages):
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def make_visible(sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> None:
    """Hand received messages back at once, ten per ChangeMessageVisibilityBatch."""
    for entries in _receipt_batches(messages, VisibilityTimeout=0):
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
