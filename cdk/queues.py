"""The request queue (with its dead-letter queue) and the response queue."""

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.nag import acknowledge
from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGE_BYTES

#: How long an unread message is kept (the SQS maximum, 14 days).
RETENTION = Duration.days(14)


class TaskQueues(Construct):
    """Bundles of tasks in, results out; bundles that keep failing go to a dead-letter queue.

    Every queue is encrypted at rest: with SQS-managed keys, or with
    ``encryption_key`` (a customer-managed KMS key) when one is given.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        visibility_timeout: Duration,
        max_receive_count: int,
        encryption_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if max_receive_count < 1:
            raise ValueError("max_receive_count must be at least 1")
        self.encryption_key = encryption_key
        self.dead_letters = self._queue("DeadLetters")
        self.requests = self._queue(
            "Requests",
            visibility_timeout=visibility_timeout,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letters, max_receive_count=max_receive_count
            ),
        )
        self.responses = self._queue("Responses")
        acknowledge(
            self.responses,
            "Results have one reader, the scheduler, which deletes each after storing it "
            "and owns what happens to one it cannot use; a redrive would only separate "
            "results from their job.",
            "AwsSolutions-SQS3",
        )

    def _queue(
        self,
        construct_id: str,
        *,
        visibility_timeout: Duration | None = None,
        dead_letter_queue: sqs.DeadLetterQueue | None = None,
    ) -> sqs.Queue:
        """A queue with what every taskfleet queue has: encryption, SSL only, 1 MiB, 20 s."""
        return sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.SQS_MANAGED
            if self.encryption_key is None
            else sqs.QueueEncryption.KMS,
            encryption_master_key=self.encryption_key,
            enforce_ssl=True,
            max_message_size_bytes=MAX_MESSAGE_BYTES,
            receive_message_wait_time=Duration.seconds(LONG_POLL_SECONDS),
            retention_period=RETENTION,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=dead_letter_queue,
        )
