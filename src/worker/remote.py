"""``taskfleet worker``: the program an instance of the fleet runs.

It long-polls the request queue for as many bundles as it has slots (up to
ten), claims each bundle in the claim table, runs their tasks on
``concurrency`` local slots while a heartbeat extends both the
message's visibility and the claim's lease, sends the results to the
response queue, marks the claim done and deletes the message. While busy it
holds scale-in protection; idle for ``idle_timeout`` seconds, it terminates
its own instance through the Auto Scaling API (one fewer desired). SIGTERM
stops it gracefully: no new receives, messages not started are made visible
again at once, the bundle running is finished.
"""

import logging
import signal
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from worker.bundle import (
    Bundle,
    BundleError,
    decode_bundle,
    result_messages,
)
from worker.claims import ClaimLedger
from worker.errors import DuplicateBundleError, WorkerConfigError
from worker.execute import TaskRunner, TaskUser, plan, scrub_secrets
from worker.result import Result, make_result
from worker.sqs import (
    LONG_POLL_SECONDS,
    MAX_MESSAGES_PER_CALL,
    aws_client,
    make_visible,
    send_batches,
)
from worker.task import task_id

log = logging.getLogger("taskfleet.worker")

#: The heartbeat renews visibility and lease this many times per timeout.
HEARTBEATS_PER_TIMEOUT = 3


def lease_seconds(visibility_timeout: float) -> float:
    """A claim's lease: a little shorter than the message's visibility, so that when
    SQS delivers the message again after its holder died (visibility counts from
    the receive, and in whole seconds), the lease has surely run out and the
    next worker takes the bundle over at once instead of waiting another timeout
    (and spending one of the message's receives before the dead-letter queue)."""
    margin = min(max(1.0, visibility_timeout / 10), visibility_timeout / HEARTBEATS_PER_TIMEOUT)
    return visibility_timeout - margin


IMDS = "http://169.254.169.254/latest"


class RemoteConfig(NamedTuple):
    """Where the worker's work comes from and goes, and how it behaves."""

    request_queue_url: str
    response_queue_url: str
    claim_table: str
    region: str
    instance_id: str
    group_name: str | None  # None: not in an Auto Scaling group (nothing to end)
    idle_timeout: float
    visibility_timeout: int
    concurrency: int
    task_timeout: float | None
    task_user: TaskUser | None  # None: tasks run as the worker

    @classmethod
    def from_environment(cls, environment: Mapping[str, str], **overrides: Any) -> "RemoteConfig":
        """Read what the instance's bootstrap wrote (TASKFLEET_*); overrides win."""

        def value(key: str, name: str, default: str | None = None) -> str:
            given = overrides.get(key)
            if given is not None:
                return str(given)
            found = environment.get(name, default)
            if found is None or found == "":
                raise WorkerConfigError(f"missing {name} (or --{key.replace('_', '-')})")
            return found

        try:
            instance_id = (
                overrides.get("instance_id")
                or environment.get("TASKFLEET_INSTANCE_ID")
                or instance_id_from_metadata()
            )
            timeout = float(value("task_timeout", "TASKFLEET_TASK_TIMEOUT", "3600"))
            task_user = overrides.get("task_user") or environment.get("TASKFLEET_TASK_USER")
            return cls(
                request_queue_url=value("request_queue_url", "TASKFLEET_REQUEST_QUEUE_URL"),
                response_queue_url=value("response_queue_url", "TASKFLEET_RESPONSE_QUEUE_URL"),
                claim_table=value("claim_table", "TASKFLEET_CLAIM_TABLE"),
                region=value("region", "TASKFLEET_REGION", environment.get("AWS_DEFAULT_REGION")),
                instance_id=instance_id,
                group_name=overrides.get("group_name")
                or environment.get("TASKFLEET_GROUP_NAME")
                or None,
                idle_timeout=float(value("idle_timeout", "TASKFLEET_IDLE_TIMEOUT", "300")),
                visibility_timeout=int(
                    value("visibility_timeout", "TASKFLEET_VISIBILITY_TIMEOUT", "60")
                ),
                concurrency=int(value("concurrency", "TASKFLEET_CONCURRENCY", "1")),
                task_timeout=timeout or None,
                task_user=TaskUser.named(task_user) if task_user else None,
            )
        except ValueError as error:
            raise WorkerConfigError(f"invalid worker setting: {error}") from error


def instance_id_from_metadata() -> str:
    """This instance's id, from IMDSv2."""
    try:
        token_request = urllib.request.Request(
            f"{IMDS}/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(token_request, timeout=2) as response:
            token = response.read().decode()
        id_request = urllib.request.Request(
            f"{IMDS}/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(id_request, timeout=2) as response:
            return str(response.read().decode())
    except OSError as error:
        raise WorkerConfigError(
            f"no instance id given and instance metadata did not answer ({error})"
        ) from error


class RemoteWorker:
    """One worker process: receive, claim, run, report, delete; end when idle."""

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        self.sqs = aws_client("sqs", config.region)
        self.autoscaling = aws_client("autoscaling", config.region)
        self.ledger = ClaimLedger(aws_client("dynamodb", config.region), config.claim_table)
        self.stopping = threading.Event()
        self._runners = threading.local()
        self._protected = False

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (SIGTERM) or idle; return the exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        scrub_secrets()
        idle_since = time.monotonic()
        concurrency = self.config.concurrency
        with (
            ThreadPoolExecutor(concurrency, "taskfleet-slot") as slots,
            ThreadPoolExecutor(concurrency, "taskfleet-bundle") as bundles,
        ):
            while not self.stopping.is_set():
                messages = self._receive()
                if not messages:
                    if time.monotonic() - idle_since >= self.config.idle_timeout:
                        self._protect(False)
                        self._end_instance()
                        return 0
                    continue
                self._protect(True)
                # Every bundle received starts now, its tasks sharing the slots.
                list(bundles.map(lambda message: self._handle_one(message, slots), messages))
                idle_since = time.monotonic()
        self._protect(False)
        return 0

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        log.info("SIGTERM: finishing the bundle in hand, then stopping")
        self.stopping.set()

    def _receive(self) -> list[dict[str, Any]]:
        """Bundles to start now: no more than the slots, so none waits here while
        another worker could run it (instances come up one by one)."""
        response = self.sqs.receive_message(
            QueueUrl=self.config.request_queue_url,
            MaxNumberOfMessages=min(self.config.concurrency, MAX_MESSAGES_PER_CALL),
            WaitTimeSeconds=LONG_POLL_SECONDS,
            VisibilityTimeout=self.config.visibility_timeout,
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        if messages and self.stopping.is_set():
            self._make_visible(messages)  # received while stopping: someone else's now
            return []
        return messages

    def _make_visible(self, messages: list[dict[str, Any]]) -> None:
        make_visible(self.sqs, self.config.request_queue_url, messages)

    # -- one bundle -----------------------------------------------------------

    def _handle_one(self, message: dict[str, Any], slots: ThreadPoolExecutor) -> None:
        """Handle a message; whatever goes wrong with it is logged, and the worker goes on.

        The message is left to SQS: it comes back, and after maxReceiveCount
        receives the dead-letter queue takes it.
        """
        try:
            self._handle(message, slots)
        except Exception:
            log.exception("message %s failed; left to SQS", message.get("MessageId"))

    def _handle(self, message: dict[str, Any], slots: ThreadPoolExecutor) -> None:
        receipt = message["ReceiptHandle"]
        try:
            bundle = decode_bundle(message["Body"])
        except BundleError as error:
            # Left alone, it comes back until the dead-letter queue takes it.
            log.warning("message %s is not a bundle: %s", message.get("MessageId"), error)
            return
        worker = self.config.instance_id
        claimed_at = time.monotonic()  # no later than the lease's own start
        try:
            lease = lease_seconds(self.config.visibility_timeout)
            if not self.ledger.claim(bundle.bundle_id, worker, lease):
                log.info("bundle %s is held by a live worker", bundle.bundle_id)
                return
        except DuplicateBundleError:
            log.info("bundle %s was done already: deleting the duplicate", bundle.bundle_id)
            self._delete(receipt)
            return
        heartbeat = Heartbeat(self, bundle.bundle_id, receipt, claimed_at)
        heartbeat.start()
        try:
            ran = list(slots.map(lambda task: self._run(bundle, task, heartbeat), bundle.tasks))
        finally:
            heartbeat.stop()
        results = [result for result in ran if result is not None]
        if not heartbeat.holds():  # sticky: also when a task was skipped
            # Another worker took it (or may have: the lease ran out while this
            # process was paused): that one reports it.
            log.warning("lost the claim on bundle %s: dropping its results", bundle.bundle_id)
            return
        send_batches(
            self.sqs,
            self.config.response_queue_url,
            result_messages(bundle.bundle_id, worker, results),
        )
        if self.ledger.complete(bundle.bundle_id, worker):
            self._delete(receipt)

    def _run(self, bundle: Bundle, task: Any, heartbeat: "Heartbeat") -> Result | None:
        """A task's result; None, and the task not run, once the bundle may not be ours."""
        if not heartbeat.holds():
            return None
        runner: TaskRunner | None = getattr(self._runners, "runner", None)
        if runner is None:
            runner = TaskRunner(self.config.task_timeout, self.config.task_user)
            self._runners.runner = runner
        outcome = runner.run(task.text, plan(task.text))
        return make_result(
            task_id(bundle.job, task.file_number, task.line),
            bundle.job,
            bundle.files[task.file_number - 1],
            task.line,
            task.text,
            self.config.instance_id,
            outcome,
        )

    def _delete(self, receipt: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.config.request_queue_url, ReceiptHandle=receipt)
        except ClientError as error:
            # A receipt outdated by a later delivery: that delivery's holder deletes it.
            log.warning("could not delete a message: %s", error)

    # -- the instance ---------------------------------------------------------

    def _protect(self, protected: bool) -> None:
        """Scale-in protection while busy, so the group never ends a working instance."""
        if self.config.group_name is None or protected == self._protected:
            return
        self.autoscaling.set_instance_protection(
            InstanceIds=[self.config.instance_id],
            AutoScalingGroupName=self.config.group_name,
            ProtectedFromScaleIn=protected,
        )
        self._protected = protected

    def _end_instance(self) -> None:
        if self.config.group_name is None:
            log.info("idle for %g s: exiting", self.config.idle_timeout)
            return
        log.info("idle for %g s: terminating this instance", self.config.idle_timeout)
        self.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=self.config.instance_id, ShouldDecrementDesiredCapacity=True
        )


class Heartbeat(threading.Thread):
    """Extends a running bundle's message visibility and claim lease, a few times a timeout."""

    def __init__(
        self, worker: RemoteWorker, bundle_id: str, receipt: str, claimed_at: float
    ) -> None:
        super().__init__(name=f"heartbeat {bundle_id}", daemon=True)
        self.worker = worker
        self.bundle_id = bundle_id
        self.receipt = receipt
        self.lost = False
        # When the lease was last renewed (the claim, at start, counts): past
        # renewed_at + the lease, another worker may hold the bundle.
        self.renewed_at = claimed_at
        self._done = threading.Event()

    def holds(self) -> bool:
        """Whether the bundle is surely still this worker's; once not, never again.

        Past its last renewal plus the lease (this process was stopped for a
        while, say), another worker may have taken the bundle over.
        """
        if time.monotonic() - self.renewed_at >= lease_seconds(
            self.worker.config.visibility_timeout
        ):
            self.lost = True
        return not self.lost

    def run(self) -> None:
        config = self.worker.config
        interval = config.visibility_timeout / HEARTBEATS_PER_TIMEOUT
        while not self._done.wait(interval):
            renewing_at = time.monotonic()
            if not self.worker.ledger.extend(
                self.bundle_id, config.instance_id, lease_seconds(config.visibility_timeout)
            ):
                self.lost = True
                return
            self.renewed_at = renewing_at
            try:
                self.worker.sqs.change_message_visibility(
                    QueueUrl=config.request_queue_url,
                    ReceiptHandle=self.receipt,
                    VisibilityTimeout=config.visibility_timeout,
                )
            except ClientError as error:
                # The lease, not the message, is what keeps the bundle ours.
                log.warning("could not extend a message's visibility: %s", error)

    def stop(self) -> None:
        self._done.set()
        self.join()
