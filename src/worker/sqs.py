"""SQS limits and the calls both ends of the remote path make the same way."""

from collections.abc import Iterator, Sequence
from typing import Any

import boto3
from botocore.config import Config

from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGE_BYTES, MAX_MESSAGES_PER_CALL
from worker.errors import QueueError


def aws_client(service: str, region: str | None = None) -> Any:
    """A boto3 client whose calls have time limits and retry with backoff, so a
    passing network fault costs time, not work."""
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 10},
        connect_timeout=5,
        read_timeout=LONG_POLL_SECONDS + 10,
    )
    return boto3.client(service, config=config)


def send_batches(sqs: Any, queue_url: str, bodies: Sequence[str]) -> int:
    """Send message bodies, ten (and 1 MiB in all) per SendMessageBatch; returns the calls."""
    calls = 0
    batch: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal calls, batch, size
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": body} for n, body in enumerate(batch)],
        )
        if response.get("Failed"):
            raise QueueError(f"SQS refused messages: {response['Failed']}")
        calls += 1
        batch, size = [], 0

    for body in bodies:
        length = len(body.encode())
        if batch and (len(batch) == MAX_MESSAGES_PER_CALL or size + length > MAX_MESSAGE_BYTES):
            flush()
        batch.append(body)
        size += length
    if batch:
        flush()
    return calls


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
