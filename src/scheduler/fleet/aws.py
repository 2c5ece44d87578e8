"""The scheduler's side of the remote path: bundles out, results and dead letters in.

``RemoteFleet`` talks to a deployed stack's queues and group: it sends
bundles ten to a SendMessageBatch, sets the group's desired capacity from
the exact backlog, reads result batches from the response queue and turns
bundles found in the dead-letter queue into failed results with the reason.
Messages read are deleted (in batches) only once the caller has stored what
they hold: a crash in between means a duplicate delivery, never a lost result.
"""

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from scheduler.errors import FleetError
from scheduler.fleet.job_store import JobStore, is_task_of
from scheduler.fleet.provisioner import desired_capacity
from worker.bundle import ResultBatch, decode_bundle, decode_result_batch, result_messages
from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGES_PER_CALL, Output
from worker.errors import BundleError
from worker.result import Status, unfinished_results
from worker.sqs import aws_client, delete_batch, make_visible, send_batches
from worker.usage import UsageMeter

log = logging.getLogger("taskfleet.scheduler")

#: Seconds between two looks at the dead-letter queue (it is rarely used).
DEAD_LETTER_CHECK_SECONDS = 5.0

#: Seconds a received result message stays hidden from other receives. Results
#: are stored and deleted within a second; a long poll whose process went away
#: (a `run --remote` that ended) may still be handed a message, which then
#: waits this long, not the queue's 30 s, before the next reader gets it.
RESULT_VISIBILITY_SECONDS = 5


class StackResources(NamedTuple):
    """What the scheduler needs of a deployed stack (its outputs)."""

    request_queue_url: str
    response_queue_url: str
    dead_letter_queue_url: str
    group_name: str | None
    max_workers: int
    slots_per_instance: int = 1
    instance_types: tuple[str, ...] = ()  # () from a stack of an earlier version
    spot: bool = False
    job_table: str = ""
    job_queue_prefix: str = ""  # a job's result queue: this + its id
    job_retention_days: int = 7
    job_queue_key: str = ""  # the stack's KMS key, if it has one: the job queues use it
    job_files_bucket: str = ""  # jobs' files (worker.contracts.JobFiles); "": an older stack

    @property
    def slots(self) -> int:
        """Tasks the whole fleet runs at once."""
        return self.max_workers * self.slots_per_instance

    @classmethod
    def from_stack(cls, cloudformation: Any, stack_name: str) -> "StackResources":
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        try:
            return cls(
                outputs[Output.REQUEST_QUEUE_URL],
                outputs[Output.RESPONSE_QUEUE_URL],
                outputs[Output.DEAD_LETTER_QUEUE_URL],
                outputs.get(Output.GROUP_NAME),
                int(outputs.get(Output.MAX_WORKERS, "1")),
                int(outputs.get(Output.SLOTS_PER_INSTANCE, "1")),
                tuple(filter(None, outputs.get(Output.INSTANCE_TYPES, "").split(","))),
                outputs.get(Output.SPOT) == "true",
                outputs[Output.JOB_TABLE_NAME],
                outputs[Output.JOB_QUEUE_PREFIX],
                int(outputs[Output.JOB_RETENTION_DAYS]),
                outputs.get(Output.JOB_QUEUE_KEY, ""),
                outputs.get(Output.JOB_FILES_BUCKET, ""),
            )
        except (KeyError, ValueError) as missing:
            raise FleetError(
                f"stack {stack_name} lacks a usable output: {missing}"
                " (a stack deployed by an earlier taskfleet: deploy it again)"
            ) from missing

    @classmethod
    def lookup(cls, stack_name: str) -> "StackResources":
        """Find a deployed stack's resources through CloudFormation."""
        try:
            return cls.from_stack(aws_client("cloudformation"), stack_name)
        except NoRegionError as error:
            raise FleetError(
                f"cannot read stack {stack_name}: no AWS region: set AWS_DEFAULT_REGION"
                " (`make local-aws-up` prints the environment of the emulator)"
            ) from error
        except (ClientError, BotoCoreError) as error:
            raise FleetError(f"cannot read stack {stack_name}: {error}") from error


def open_fleet(stack_name: str) -> "RemoteFleet":
    """The fleet of a deployed stack, checked to answer (its group's size is read);
    ``FleetError`` says why not. What `run --remote`, the service and the bench use."""
    fleet = RemoteFleet(StackResources.lookup(stack_name))
    try:
        fleet.slots()
    except (ClientError, BotoCoreError) as error:
        raise FleetError(f"cannot use stack {stack_name}: {error}") from error
    return fleet


class FleetSample(NamedTuple):
    """The fleet at one moment: its group's instances and its queues' depths."""

    at: float  # epoch seconds
    desired: int
    pending: int  # instances starting
    in_service: int
    busy: int  # in service and holding bundles (protected from scale-in)
    leaving: int  # instances terminating
    visible: int  # bundles waiting on the request queue
    in_flight: int  # bundles received by workers and not deleted yet
    dead_letters: int  # bundles in the dead-letter queue


class Delivery(NamedTuple):
    """Result batches read from one queue; ``RemoteFleet.acknowledge`` deletes them."""

    queue_url: str
    messages: list[dict[str, Any]]
    batches: list[ResultBatch]

    @property
    def job(self) -> str | None:
        """The job of its first batch: what receiving and deleting it are charged to."""
        for batch in self.batches:
            if batch.results:
                return batch.results[0].job
            if batch.usage is not None:
                return batch.usage.job
        return None


class RemoteFleet:
    """One deployed stack's queues and group, as the scheduler uses them."""

    def __init__(self, resources: StackResources) -> None:
        self.resources = resources
        self.meter = UsageMeter()  # what the scheduler's own calls cost, by job
        self.sqs = self.meter.watch(aws_client("sqs"))
        self.autoscaling = aws_client("autoscaling")
        # None: a stack without job queues (queues made by hand, in tests): every
        # result comes back on the response queue, which one reader reads alone.
        self.jobs = (
            JobStore(
                self.meter.watch(aws_client("dynamodb")),
                self.sqs,
                table=resources.job_table,
                queue_prefix=resources.job_queue_prefix,
                retention_days=resources.job_retention_days,
                key=resources.job_queue_key,
            )
            if resources.job_table
            else None
        )
        self._next_dead_letter_check = 0.0
        self._s3: Any = None

    @property
    def s3(self) -> Any:
        """The S3 client for the job-files bucket, its calls counted (made when
        first used: most jobs have no files)."""
        if self._s3 is None:
            self._s3 = self.meter.watch(aws_client("s3"))
        return self._s3

    def send(self, bodies: list[str]) -> int:
        """Put bundles on the request queue; returns the SendMessageBatch calls made."""
        return send_batches(self.sqs, self.resources.request_queue_url, bodies)

    def slots(self) -> int:
        """Task slots the fleet may have now: its group's maximum (it may have changed
        since the stack was deployed), else the stack's MaxWorkers, times each
        instance's slots."""
        group = self._group()
        instances = self.resources.max_workers if group is None else int(group["MaxSize"])
        return instances * self.resources.slots_per_instance

    def _group(self) -> dict[str, Any] | None:
        if self.resources.group_name is None:
            return None
        (group,) = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.resources.group_name]
        )["AutoScalingGroups"]
        return dict(group)

    def look(self) -> "FleetSample":
        """The group's instances and the queues' depths now (charged to no job)."""
        group = self._group() or {"DesiredCapacity": 0, "Instances": []}
        states = [i["LifecycleState"] for i in group["Instances"]]
        with self.meter.charged_to(None):
            requests = self._depths(self.resources.request_queue_url)
            dead = self._depths(self.resources.dead_letter_queue_url)
        return FleetSample(
            at=time.time(),
            desired=int(group["DesiredCapacity"]),
            pending=sum(1 for s in states if s.startswith("Pending")),
            in_service=states.count("InService"),
            busy=sum(1 for i in group["Instances"] if i.get("ProtectedFromScaleIn")),
            leaving=sum(1 for s in states if s.startswith("Terminating")),
            visible=requests[0],
            in_flight=requests[1],
            dead_letters=dead[0] + dead[1],
        )

    def _depths(self, queue_url: str) -> tuple[int, int]:
        """A queue's (visible, in flight) messages, as SQS estimates them."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def provision(self, just_sent: int = 0) -> int | None:
        """Set the group's desired capacity from the work on the request queue (with
        ``just_sent`` bundles counted as waiting at least: SQS's counts may lag a
        send); returns it."""
        group = self._group()
        if group is None or self.resources.group_name is None:
            return None
        instances = [i for i in group["Instances"] if i["LifecycleState"] == "InService"]
        with self.meter.charged_to(None):
            waiting, in_flight = self._depths(self.resources.request_queue_url)
        wanted = desired_capacity(
            waiting=max(waiting, just_sent),
            in_flight=in_flight,
            busy=sum(1 for i in instances if i.get("ProtectedFromScaleIn")),
            slots_per_instance=self.resources.slots_per_instance,
            minimum=group["MinSize"],
            maximum=group["MaxSize"],
        )
        if wanted != group["DesiredCapacity"]:
            self.autoscaling.set_desired_capacity(
                AutoScalingGroupName=self.resources.group_name,
                DesiredCapacity=wanted,
                HonorCooldown=False,
            )
        return wanted

    def receive(
        self, wait_seconds: int = LONG_POLL_SECONDS, *, overhead: bool = True
    ) -> list[Delivery]:
        """What arrived on the response queue (one long poll: the reports of
        workers that ran no job; with no job queues, every result); and, when due,
        dead bundles forwarded to their jobs' queues (``forward_dead_letters``).
        Without ``overhead`` (a reader of its own jobs only), and with job queues,
        the long poll is the dead-letter queue's: the response queue is not read."""
        if not overhead and self.jobs is not None:
            return [d for d in [self.forward_dead_letters(wait_seconds)] if d.messages]
        deliveries = [self._receive(self.resources.response_queue_url, wait_seconds, self._batch)]
        if time.monotonic() >= self._next_dead_letter_check:
            self._next_dead_letter_check = time.monotonic() + DEAD_LETTER_CHECK_SECONDS
            deliveries.append(self.forward_dead_letters())
        return [d for d in deliveries if d.messages]

    def receive_job(self, queue_url: str, wait_seconds: int) -> Delivery:
        """Results and usage reports that arrived on a job's queue (one long poll)."""
        return self._receive(queue_url, wait_seconds, self._batch)

    def keep(
        self, job_id: str, delivery: Delivery, file_count: int, *, reading: bool = False
    ) -> int:
        """Store what a job's queue delivered in the stack's job store, less what
        its workers stored already; returns the records kept either way, counted
        on the job's item (``reading``: by the client holding the job's reader
        lease). Only a result that names a task of the job (its id, file number
        and line) is kept: anything else in a message is dropped."""
        unstored = [batch for batch in delivery.batches if not batch.stored]
        results = [r for b in unstored for r in b.results if is_task_of(r, job_id, file_count)]
        reports = [b.usage for b in unstored if b.usage is not None]
        stored = sum(
            is_task_of(result, job_id, file_count)
            for batch in delivery.batches
            if batch.stored
            for result in batch.results
        )
        if self.jobs is not None and (results or reports or stored):
            with self.meter.charged_to(job_id):
                if results or reports:
                    self.jobs.store(job_id, results, reports, reading=reading)
                self.jobs.count(job_id, stored, reading=reading)
        return len(results) + stored

    def forward_dead_letters(self, wait_seconds: int = 0) -> Delivery:
        """Read the dead-letter queue once: each dead bundle's tasks go, as failed
        results with the reason, to its job's queue (where its job's readers store
        them), or nowhere if the job has ended; the messages are deleted. With no
        job queues (a stack made by hand), the failed results are returned instead."""
        dead = self._receive(self.resources.dead_letter_queue_url, wait_seconds, self._dead)
        if self.jobs is None or not dead.messages:
            return dead
        for message in dead.messages:
            batch = self._dead(message["Body"])
            job = batch.results[0].job if batch is not None and batch.results else None
            if batch is not None and job is not None:
                url = self.jobs.queue_url(job)
                if url is not None:
                    bodies = result_messages(batch.bundle_id, "", batch.results)
                    with self.meter.charged_to(job):
                        send_batches(self.sqs, url, bodies)
            delete_batch(self.sqs, dead.queue_url, [message])
        return Delivery(dead.queue_url, [], [])

    def acknowledge(self, delivery: Delivery) -> None:
        """Delete a delivery's messages: what they held is stored."""
        delete_batch(self.sqs, delivery.queue_url, delivery.messages)

    def release(self, delivery: Delivery) -> None:
        """Make a delivery's messages visible again at once: not ours to store."""
        make_visible(self.sqs, delivery.queue_url, delivery.messages)

    def _receive(
        self, queue_url: str, wait: int, read: Callable[[str], ResultBatch | None]
    ) -> Delivery:
        with self.meter.charged_to(None):
            messages = self.sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=MAX_MESSAGES_PER_CALL,
                WaitTimeSeconds=wait,
                VisibilityTimeout=RESULT_VISIBILITY_SECONDS,
            ).get("Messages", [])
        batches = [batch for m in messages if (batch := read(m["Body"])) is not None]
        delivery = Delivery(queue_url, messages, batches)
        if delivery.job is not None:
            self.meter.move(self.meter.last_call(), None, delivery.job)
        return delivery

    @staticmethod
    def _batch(body: str) -> ResultBatch | None:
        try:
            return decode_result_batch(body)
        except BundleError as error:
            # Not ours to understand (or out of bounds): deleted rather than looping.
            log.warning("dropped a response message: %s", error)
            return None

    @staticmethod
    def _dead(body: str) -> ResultBatch | None:
        try:
            bundle = decode_bundle(body)
        except BundleError as error:
            log.warning("dropped a dead-letter message: %s", error)
            return None
        reason = "its bundle went to the dead-letter queue after repeated failed deliveries"
        tasks = (
            (task.file_number, bundle.files[task.file_number - 1], task.line, task.text)
            for task in bundle.tasks
        )
        results = unfinished_results(bundle.job, tasks, Status.FAILED, reason)
        return ResultBatch(bundle.bundle_id, "", results)
