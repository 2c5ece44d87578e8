"""``taskfleet worker``: the program an instance of the fleet runs.

It keeps ``concurrency`` slots (one per vCPU unless told) busy: whenever
slots would otherwise go idle it long-polls the request queue for that many
bundles (up to ten), claims each in the claim table and lets the slots take
its tasks, starting new bundles as old ones drain instead of waiting for the
slowest. While a bundle runs, a heartbeat extends its message's visibility
and its claim's lease, and its results go to its job's own queue as they
finish (within about a second), each batch then recorded as progress in the
claim; the last batch marks the claim done and deletes the message. A job
cancelled in the job table has its tasks stopped (``worker.jobs``). While it
holds work it holds scale-in protection; idle for ``idle_timeout`` seconds,
it terminates its own instance (one fewer desired), charging the instance's
time no task used to the last job it ran.

SIGTERM, a spot interruption notice or the group's termination lifecycle
hook stops it within seconds: it receives nothing more, stops its commands,
sends the results it has, records progress, gives every bundle back (a fresh
copy on the request queue, so a preemption never counts toward the
dead-letter queue's receives) and releases its claims; the next holder runs
only the tasks without a sent result.

With a state folder, a process that dies is replaced at once on its instance:
the new one makes the held messages visible again, takes their claims back
and sends the results the old one had finished (``finished_log``), so only
the tasks running at the crash run twice.
"""

import json
import logging
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from worker.bundle import (
    Bundle,
    BundleTask,
    UsageReport,
    decode_bundle,
    result_messages,
    usage_message,
)
from worker.bundle_run import BundleRun
from worker.claims import Claim, ClaimLedger
from worker.contracts import LONG_POLL_SECONDS, MAX_MESSAGES_PER_CALL, Default, Setting
from worker.errors import BundleError, DuplicateBundleError, QueueError, WorkerConfigError
from worker.execute import Plan, TaskRunner, TaskUser, plan, scrub_secrets
from worker.finished_log import FinishedLog
from worker.fleet_dirs import FleetTaskDirs, fetch_failure
from worker.instance_inputs import InputFetchError
from worker.interruptions import (
    DEFAULT_METADATA_URL,
    InterruptionWatcher,
    Metadata,
    Notice,
)
from worker.jobs import JobQueues, JobStates, is_no_such_queue
from worker.process_clock import process_age
from worker.record_items import compressed_pieces, put_cost, sent_items
from worker.result import Outcome, Result, Status, make_result, unfinished_results
from worker.sqs import aws_client, make_visible, send_batches, send_cost
from worker.task import task_id
from worker.usage import Usage, UsageMeter
from worker.workdir import remove_tree

log = logging.getLogger("taskfleet.worker")

#: What charging an instance's tail to a job costs: one DynamoDB write.
TAIL_CHARGE = Usage(dynamodb_writes=1)

#: The heartbeat renews visibility and lease this many times per timeout.
HEARTBEATS_PER_TIMEOUT = 3

#: Seconds between two looks of the reporter at the bundles held.
REPORT_TICK_SECONDS = 0.2

#: The file, in the state folder, naming the messages this worker holds.
HELD_FILE = "held.json"


def lease_seconds(visibility_timeout: float) -> float:
    """A claim's lease: a little shorter than the message's visibility, so that when
    SQS delivers the message again after its holder died (visibility counts from
    the receive, and in whole seconds), the lease has surely run out and the
    next worker takes the bundle over at once instead of waiting another timeout
    (and spending one of the message's receives before the dead-letter queue)."""
    margin = min(max(1.0, visibility_timeout / 10), visibility_timeout / HEARTBEATS_PER_TIMEOUT)
    return visibility_timeout - margin


class RemoteConfig(NamedTuple):
    """Where the worker's work comes from and goes, and how it behaves."""

    request_queue_url: str
    response_queue_url: str
    claim_table: str
    job_table: str | None  # None: cancellations are not watched
    job_queue_prefix: str | None  # None: every result goes to the response queue
    region: str
    instance_id: str
    group_name: str | None  # None: not in an Auto Scaling group (nothing to end)
    idle_timeout: float
    visibility_timeout: int
    concurrency: int
    task_timeout: float | None
    task_user: TaskUser | None  # None: tasks run as the worker
    metadata_url: str | None  # None: no instance metadata to watch for notices
    lifecycle_hook: str | None  # the group's termination hook, completed on leaving
    state_dir: Path | None  # where it notes the messages it holds, for a restart
    poll_seconds: int  # the long poll's wait

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

        def optional(key: str, name: str) -> str | None:
            return overrides.get(key) or environment.get(name) or None

        try:
            metadata_url = optional("metadata_url", Setting.METADATA_URL)
            instance_id = optional("instance_id", Setting.INSTANCE_ID) or (
                Metadata(metadata_url or DEFAULT_METADATA_URL).instance_id()
            )
            timeout = float(
                value("task_timeout", Setting.TASK_TIMEOUT, str(Default.TASK_TIMEOUT_SECONDS))
            )
            task_user = optional("task_user", Setting.TASK_USER)
            state_dir = optional("state_dir", Setting.STATE_DIR)
            concurrency = int(value("concurrency", Setting.CONCURRENCY, str(Default.CONCURRENCY)))
            poll = int(value("poll_seconds", Setting.POLL_SECONDS, str(Default.POLL_SECONDS)))
            if not 0 <= poll <= LONG_POLL_SECONDS:
                raise ValueError(f"the long poll's wait must be 0 to {LONG_POLL_SECONDS} s")
            return cls(
                request_queue_url=value("request_queue_url", Setting.REQUEST_QUEUE_URL),
                response_queue_url=value("response_queue_url", Setting.RESPONSE_QUEUE_URL),
                claim_table=value("claim_table", Setting.CLAIM_TABLE),
                job_table=optional("job_table", Setting.JOB_TABLE),
                job_queue_prefix=optional("job_queue_prefix", Setting.JOB_QUEUE_PREFIX),
                region=value("region", Setting.REGION, environment.get("AWS_DEFAULT_REGION")),
                instance_id=instance_id,
                group_name=optional("group_name", Setting.GROUP_NAME),
                idle_timeout=float(
                    value("idle_timeout", Setting.IDLE_TIMEOUT, str(Default.IDLE_TIMEOUT_SECONDS))
                ),
                visibility_timeout=int(
                    value(
                        "visibility_timeout",
                        Setting.VISIBILITY_TIMEOUT,
                        str(Default.VISIBILITY_TIMEOUT_SECONDS),
                    )
                ),
                # One slot per vCPU unless told: every core paid for runs tasks.
                concurrency=concurrency or os.cpu_count() or 1,
                task_timeout=timeout or None,
                task_user=TaskUser.named(task_user) if task_user else None,
                metadata_url=metadata_url,
                lifecycle_hook=optional("lifecycle_hook", Setting.LIFECYCLE_HOOK),
                state_dir=Path(state_dir) if state_dir else None,
                poll_seconds=poll,
            )
        except ValueError as error:
            raise WorkerConfigError(f"invalid worker setting: {error}") from error


class RemoteWorker:
    """One worker process: slots fed with bundles from the request queue."""

    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        # What each job's bundles cost here, reported with their results.
        self.meter = UsageMeter()
        self.sqs = self.meter.watch(aws_client("sqs", config.region))
        self.autoscaling = aws_client("autoscaling", config.region)
        dynamodb = self.meter.watch(aws_client("dynamodb", config.region))
        self.ledger = ClaimLedger(dynamodb, config.claim_table)
        self.job_queues = JobQueues(
            config.request_queue_url, config.job_queue_prefix, config.response_queue_url
        )
        # Record items are put by a prompt client, each with a key made just
        # before: one lands within seconds of its key or not at all, so readers
        # that read on from the last key they saw find it (record_items.LATE_SECONDS).
        records = self.meter.watch(aws_client("dynamodb", config.region, prompt=True))
        self.job_states = JobStates(dynamodb, config.job_table, records=records)
        self._reports_sent = 0
        self._report_prefix = f"{config.instance_id}/{secrets.token_hex(4)}"
        self._last_bundle: dict[str, str] = {}  # job -> the last of its bundles held here
        self.stopping = threading.Event()
        self.stop_reason = ""
        self._held: dict[str, tuple[BundleRun, Heartbeat]] = {}
        self._changed = threading.Condition()  # a slot freed, a bundle came, or stopping
        self._report_now = threading.Event()
        self._runners: list[TaskRunner] = []
        self._running: dict[TaskRunner, BundleRun] = {}  # what each slot's runner runs now
        self._local = threading.local()
        self._protected = False
        self._protection = threading.RLock()  # claims and the reporter both set it
        self._claiming = 0  # claims under way: protected as if held
        # The instance's time counts from this process's start: its start-up
        # (imports, clients: seconds on a small instance) is time no task used.
        self._started = time.monotonic() - (process_age() or 0.0)
        self._last_busy = time.monotonic()
        self._instance_seconds = 0.0  # what its tasks were charged of the instance
        self._last_job: str | None = None  # the job whose bundle it took last
        self._finished_log = (
            None if config.state_dir is None else FinishedLog(config.state_dir / "finished")
        )
        # Tasks' directories and the instance's inputs: in the worker's own
        # directory (its state folder, kept across a restart on the instance, or
        # one of this process's own), never where it was started.
        self._own_dir: Path | None = None
        if config.state_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="taskfleet-worker-"))
        base = config.state_dir or self._own_dir
        assert base is not None
        user = config.task_user
        self.task_dirs = FleetTaskDirs(
            base / "files",
            lambda: self.meter.watch(aws_client("s3", config.region)),
            None if user is None else (user.uid, user.gid),
        )

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped or idle; return the exit code."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        scrub_secrets()
        self._take_back_held()
        reporter = threading.Thread(target=self._report, name="taskfleet-report")
        threads: list[threading.Thread] = [
            threading.Thread(target=self._slot, name=f"taskfleet-slot-{n}", daemon=True)
            for n in range(self.config.concurrency)
        ]
        threads.append(reporter)
        if self.config.metadata_url is not None:
            threads.append(InterruptionWatcher(Metadata(self.config.metadata_url), self.stop))
        for thread in threads:
            thread.start()
        try:
            ended_idle = self._receive_loop()
        finally:
            self.stop(self.stop_reason or "idle")
            reporter.join()
            self._charge_the_rest()
            if self._finished_log is not None:
                self._finished_log.clear()
            if self._own_dir is not None:
                remove_tree(self._own_dir)
        if ended_idle:
            self._end_instance()
        else:
            self._complete_lifecycle()
        return 0

    def stop(self, reason: str) -> None:
        """Stop: receive nothing more, and give every held bundle back."""
        with self._changed:
            if self.stopping.is_set():
                return
            self.stop_reason = reason
            self.stopping.set()
            self._changed.notify_all()
        if reason != "idle":
            log.info("stopping (%s): giving back %d bundles", reason, len(self._held))
        self._report_now.set()

    def _on_sigterm(self, _signum: int, _frame: FrameType | None) -> None:
        # Not here: a signal handler must not take the locks the work holds.
        threading.Thread(target=self.stop, args=("SIGTERM",), daemon=True).start()

    def _receive_loop(self) -> bool:
        """Keep the slots fed; True when it ended idle, False when stopped."""
        while not self.stopping.is_set():
            free = self._free_slots()
            if free <= 0:
                with self._changed:
                    self._changed.wait(0.5)
                continue
            messages = self._receive(free)
            received = self.meter.last_call()
            jobs = [job for message in messages if (job := self._start(message)) is not None]
            if jobs:  # the receive is charged to the job whose bundle it brought first
                self.meter.move(received, None, jobs[0])
            if self._held:
                self._last_busy = time.monotonic()
                continue
            # Holding nothing: the group may end this instance first when it
            # shrinks (as in a job's last partial wave).
            self._sync_protection()
            if time.monotonic() - self._last_busy >= self.config.idle_timeout:
                return True
        return False

    def _free_slots(self) -> int:
        with self._changed:
            waiting = sum(run.tasks_waiting() for run, _ in self._held.values())
        return self.config.concurrency - waiting

    def _receive(self, count: int) -> list[dict[str, Any]]:
        """Bundles to start now: no more than free slots, so none waits here while
        another worker could run it (instances come up one by one)."""
        with self.meter.charged_to(None):
            response = self.sqs.receive_message(
                QueueUrl=self.config.request_queue_url,
                MaxNumberOfMessages=min(count, MAX_MESSAGES_PER_CALL),
                WaitTimeSeconds=self.config.poll_seconds,
                VisibilityTimeout=self.config.visibility_timeout,
            )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        if messages and self.stopping.is_set():
            self._pass_on(messages)  # received while stopping: someone else's now
            return []
        return messages

    def _pass_on(self, messages: list[dict[str, Any]]) -> None:
        """Messages this worker will not start, passed on as fresh copies: a
        worker stopped by its instance's end must not bring a bundle nearer the
        dead-letter queue, which counts receives (made visible again, a message
        stopped twice so would be dead)."""
        try:
            send_batches(self.sqs, self.config.request_queue_url, [m["Body"] for m in messages])
        except (BotoCoreError, ClientError) as error:
            log.warning("could not pass on %d bundles: %s", len(messages), error)
            self._make_visible(messages)
            return
        self._delete(*(m["ReceiptHandle"] for m in messages))

    def _make_visible(self, messages: list[dict[str, Any]]) -> None:
        make_visible(self.sqs, self.config.request_queue_url, messages)

    # -- starting a bundle ----------------------------------------------------

    def _start(self, message: dict[str, Any]) -> str | None:
        """Claim a received bundle and give its tasks to the slots; whatever goes
        wrong with one message is logged and left to SQS, and the worker goes on.
        Returns the bundle's job, if it is a bundle."""
        try:
            bundle = decode_bundle(message["Body"])
        except BundleError as error:
            # Left alone, it comes back until the dead-letter queue takes it.
            log.warning("message %s is not a bundle: %s", message.get("MessageId"), error)
            return None
        try:
            with self.meter.charged_to(bundle.job):
                self._claim(message, bundle)
        except Exception:
            log.exception("message %s failed; left to SQS", message.get("MessageId"))
        return bundle.job

    def _claim(self, message: dict[str, Any], bundle: Bundle) -> None:
        with self._changed:
            held = self._held.get(bundle.bundle_id)
            if held is not None:
                # Delivered again while this worker runs it: deleted with it.
                log.info("bundle %s delivered again while held here", bundle.bundle_id)
                held[0].duplicates.append(message["ReceiptHandle"])
                return
        claimed_at = time.monotonic()  # no later than the lease's own start
        lease = lease_seconds(self.config.visibility_timeout)
        try:
            claim = self.ledger.claim(bundle.bundle_id, self.config.instance_id, lease)
        except DuplicateBundleError:
            log.info("bundle %s was done already: deleting the duplicate", bundle.bundle_id)
            self._delete(message["ReceiptHandle"])
            return
        if claim is None:
            log.info("bundle %s is held by a live worker", bundle.bundle_id)
            return
        with self._changed:
            self._claiming += 1
        try:
            self._sync_protection()
            self._hold(message, bundle, claim, claimed_at)
        finally:
            with self._changed:
                self._claiming -= 1
            self._sync_protection()

    def _hold(
        self, message: dict[str, Any], bundle: Bundle, claim: Claim, claimed_at: float
    ) -> None:
        """Run a claimed bundle: its tasks to the slots, its lease renewed."""
        self._last_job = bundle.job
        recovered = {} if self._finished_log is None else self._finished_log.read(bundle.bundle_id)
        if recovered:
            log.info(
                "bundle %s: %d results finished before a restart", bundle.bundle_id, len(recovered)
            )
        run = BundleRun(message, bundle, claim, recovered)
        if self.job_states.cancelled(bundle.job):
            self._cancel(run)
        heartbeat = Heartbeat(self, run, claimed_at)
        heartbeat.start()
        with self._changed:
            self._held[bundle.bundle_id] = (run, heartbeat)
            self._last_bundle[bundle.job] = bundle.bundle_id
            self._note_held()
            self._changed.notify_all()
        self._report_now.set()  # a bundle whose every task was done already ends at once

    # -- the slots ------------------------------------------------------------

    def _slot(self) -> None:
        """One slot: run tasks of the held bundles, oldest bundle first."""
        while True:
            with self._changed:
                while (work := self._next_task()) is None and not self.stopping.is_set():
                    self._changed.wait(0.5)
            if work is None:
                return
            run, heartbeat, index = work
            result = (
                self._run(run, heartbeat, run.bundle.tasks[index]) if heartbeat.holds() else None
            )
            if result is not None and self._finished_log is not None:
                self._finished_log.append(run.bundle_id, index, result)
            if run.finished(index, result):
                self._report_now.set()
            with self._changed:
                self._changed.notify_all()  # a slot is free

    def _next_task(self) -> tuple[BundleRun, "Heartbeat", int] | None:
        for run, heartbeat in self._held.values():
            index = run.next_task()
            if index is not None:
                return run, heartbeat, index
        return None

    def _run(self, run: BundleRun, heartbeat: "Heartbeat", task: BundleTask) -> Result | None:
        """A task's result; None once the bundle may not be ours."""
        runner: TaskRunner | None = getattr(self._local, "runner", None)
        if runner is None:
            runner = TaskRunner(self.config.task_timeout, self.config.task_user)
            self._local.runner = runner
            self._runners.append(runner)
        runner.timeout = self._timeout_of(run.bundle)
        self._running[runner] = run
        try:
            planned = plan(task.text)
            if planned.is_command:
                outcome = self._run_command(runner, run, task, planned)
            else:
                outcome = self._cancelled_if(run, runner.run(task.text, planned))
        finally:
            del self._running[runner]
        # The slots share the instance: each task holds its share of it.
        share = outcome.duration_ms / 1000.0 / self.config.concurrency
        self.meter.charge(run.bundle.job, Usage(instance_seconds=share))
        self._instance_seconds += share
        if run.released or not heartbeat.holds():
            return None  # given back meanwhile (a stop may have killed it): not reported
        bundle = run.bundle
        return make_result(
            task_id(bundle.job, task.file_number, task.line),
            bundle.job,
            bundle.files[task.file_number - 1],
            task.line,
            task.text,
            self.config.instance_id,
            outcome,
        )

    def _run_command(
        self, runner: TaskRunner, run: BundleRun, task: BundleTask, planned: Plan
    ) -> Outcome:
        """Run a shell command in a directory of its own, with its job's inputs;
        its files sent back if its job asks (``worker.fleet_dirs``)."""
        bundle = run.bundle
        files = bundle.job_files
        with self.meter.charged_to(bundle.job):
            try:
                place = self.task_dirs.make(bundle.job, files)
            except (InputFetchError, BotoCoreError, ClientError, OSError) as error:
                log.warning("job %s: its inputs could not be fetched: %s", bundle.job, error)
                return fetch_failure(time.time(), error)
            try:
                outcome = runner.run(task.text, planned, None, str(place.path))
                outcome = self._cancelled_if(run, outcome)
                try:
                    return self.task_dirs.finish(
                        place, files, (bundle.job, task.file_number, task.line), outcome
                    )
                except OSError as error:  # the instance's disk, say: the slot goes on
                    log.warning(
                        "job %s: a task's files could not be gathered: %s", bundle.job, error
                    )
                    return msgspec.structs.replace(
                        outcome,
                        status=Status.FAILED,
                        error=f"its files could not be gathered: {error}",
                        files=(),
                    )
            finally:
                self.task_dirs.discard(place)

    @staticmethod
    def _cancelled_if(run: BundleRun, outcome: Outcome) -> Outcome:
        """A task its job's cancellation stopped is recorded cancelled."""
        if run.cancelled and outcome.status != Status.SUCCEEDED:
            error = "its job was cancelled while it ran: stopped"
            return msgspec.structs.replace(outcome, status=Status.CANCELLED, error=error)
        return outcome

    def _timeout_of(self, bundle: Bundle) -> float | None:
        """A task's time limit: its job's, else this worker's (0: none)."""
        if bundle.timeout is None:
            return self.config.task_timeout
        return bundle.timeout or None

    def _cancel(self, run: BundleRun) -> None:
        """Its job was cancelled: the tasks not started end cancelled at once, and
        those running are stopped (their records say cancelled too)."""
        never_started = run.cancel()
        bundle = run.bundle
        tasks = [bundle.tasks[index] for index in never_started]
        results = unfinished_results(
            bundle.job,
            ((t.file_number, bundle.files[t.file_number - 1], t.line, t.text) for t in tasks),
            Status.CANCELLED,
            "its job was cancelled before the task started",
        )
        run.add_results(list(zip(never_started, results, strict=True)))
        stopped = 0
        for runner, running in list(self._running.items()):
            if running is run:
                runner.shell.kill_current()
                stopped += 1
        log.info(
            "bundle %s: job %s cancelled (%d tasks not started, %d stopped)",
            run.bundle_id, bundle.job, len(tasks), stopped,
        )  # fmt: skip
        self._report_now.set()

    def _watch_cancellations(self) -> None:
        """Cancel the held bundles whose job was cancelled (each job's state is
        read at most every CANCEL_CHECK_SECONDS)."""
        for run, _ in list(self._held.values()):
            if not run.cancelled and self.job_states.cancelled(run.bundle.job):
                self._cancel(run)

    # -- reporting ------------------------------------------------------------

    def _report(self) -> None:
        """Send results as they are due, end finished bundles; on stop, give back the rest."""
        while True:
            self._report_now.wait(REPORT_TICK_SECONDS)
            self._report_now.clear()
            stopping = self.stopping.is_set()
            if not stopping:
                self._watch_cancellations()
            for run, heartbeat in list(self._held.values()):
                try:
                    with self.meter.charged_to(run.bundle.job):
                        if stopping:
                            self._give_back(run, heartbeat)
                        else:
                            self._report_bundle(run, heartbeat)
                except (BotoCoreError, ClientError, QueueError) as error:
                    log.warning("bundle %s: %s (trying again)", run.bundle_id, error)
                except Exception:
                    # A bug must not stop the reporting of every other bundle.
                    log.exception("bundle %s: dropped", run.bundle_id)
                    run.release()
                    self._forget(run, heartbeat)
            self._report_usage()
            if stopping:
                return

    def _report_bundle(self, run: BundleRun, heartbeat: "Heartbeat") -> None:
        if not heartbeat.holds():
            # Another worker took it (or may have: the lease ran out while this
            # process was paused): that one reports the rest.
            log.warning("lost the claim on bundle %s: dropping its results", run.bundle_id)
            run.release()
            self._forget(run, heartbeat)
            return
        ended = run.ended()  # before the results are taken: none may come after
        if ended and run.ending_ahead is None:
            # The calls that end the bundle (its claim marked done, its message
            # deleted) go in its last results' report, counted ahead: reported
            # alone after them, they would cost the reader a receive, a store and
            # a delete, and the worker a send.
            run.ending_ahead = Usage(dynamodb_writes=1, sqs_requests=1 + len(run.duplicates))
            self.meter.charge(run.bundle.job, run.ending_ahead)
        if run.due() or ended:
            sent = self._send(run, last=ended and self._holds_only(run))
            if not ended:
                self.ledger.progress(run.bundle_id, self.config.instance_id, sent)
        if ended:
            assert run.ending_ahead is not None
            spent: list[Usage] = []
            with self.meter.apart(spent):
                if self.ledger.complete(run.bundle_id, self.config.instance_id):
                    self._delete(run.receipt, *run.duplicates)
            self._charge_missed(run.bundle.job, spent[0], run.ending_ahead)
            self._forget(run, heartbeat)

    def _holds_only(self, run: BundleRun) -> bool:
        """Whether ``run`` is the only bundle of its job this worker holds."""
        with self._changed:
            return not any(
                other is not run and other.bundle.job == run.bundle.job
                for other, _ in self._held.values()
            )

    def _charge_missed(self, job: str, spent: Usage, ahead: Usage) -> None:
        """Charge what calls counted ahead cost beyond the count: rare (a call
        tried again, an item over a unit). Their bytes are the count's: a
        request's key and expression bytes, which no bill counts, are not worth
        a report of their own."""
        missed = spent - ahead
        if missed.aws_requests or missed.instance_seconds:
            self.meter.charge(job, missed)

    def _send(self, run: BundleRun, *, last: bool = False) -> bytes:
        """Send a bundle's waiting results; returns its progress bitmap. Whatever
        fails, the results wait for the next try (none is lost). ``last``: the
        bundle has ended and no other of its job is held here."""
        unsent = run.take_unsent()
        results = [result for _, result in unsent]
        job = run.bundle.job
        try:
            if results:
                self._send_results(run, job, results, last=last)
        except Exception:
            run.untake(unsent)
            raise
        return run.mark_sent([index for index, _ in unsent])

    def _send_results(self, run: BundleRun, job: str, results: list[Result], *, last: bool) -> None:
        """Send results with a report of what the job used here, their own send
        counted in it (ahead); the ``last`` report is final: it leaves nothing
        to report alone, which would cost the reader a receive, a store, a count
        and a delete."""
        # A report that failed to go is sent again as it was: readers count a
        # report once by its id, so a partial send never counts it twice.
        if run.unsent_report is None:
            run.unsent_report = self._usage_report(job, self.meter.take(job), final=last)
        messages, items, ahead = self._self_counted(run, results)
        spent: list[Usage] = []
        kept = False
        try:
            with self.meter.apart(spent):
                self.job_states.store(items)  # kept before they go: no reader need keep them
                kept = bool(items)
                send_batches(self.sqs, self.job_queues.url(job), messages)
        except ClientError as error:
            ended = is_no_such_queue(error) and self.job_states.ended(job)
            if not (kept and ended):
                # Tried again with the same report, which readers count once: what
                # this try cost goes in the next report instead.
                self.meter.charge(job, spent[0])
            if not is_no_such_queue(error):
                raise
            if not ended:
                # Made a moment ago, and not seen yet (SQS asks a second or so).
                raise QueueError(f"job {job} has no result queue yet") from error
            # No reader reads them now: the job has ended (cancelled and collected,
            # or expired). Running the rest would be for nothing.
            what = "kept in the stack" if kept else "dropped"
            log.info("bundle %s: job %s has ended: results %s", run.bundle_id, job, what)
            if not run.cancelled:
                self._cancel(run)
            run.unsent_report = None
            return
        except Exception:
            self.meter.charge(job, spent[0])
            raise
        self._charge_missed(job, spent[0], ahead)
        run.unsent_report = None

    def _self_counted(
        self, run: BundleRun, results: list[Result]
    ) -> tuple[list[str], list[dict[str, Any]], Usage]:
        """The result messages, and the record items that keep them (if the bundle
        says where), whose report counts their own send and puts; and that count.
        The count is in the report, so it is found by trying (two tries, unless
        a digit more crosses a 64 KiB chunk or a KiB); a count still short after
        the last try is charged after the send, as anything else the count ahead
        missed."""
        report = run.unsent_report
        assert report is not None
        place = run.bundle.records if self.job_states.keeps(run.bundle.job) else None
        pieces = compressed_pieces(results) if place is not None else []
        ahead = Usage()
        for _ in range(4):
            counted = msgspec.structs.replace(report, usage=report.usage + ahead)
            messages = result_messages(
                run.bundle_id, self.config.instance_id, results, counted, stored=bool(pieces)
            )
            items = []
            if place is not None:
                items = sent_items(
                    run.bundle.job, place, pieces, (counted.report_id, counted.usage)
                )
            cost = send_cost(messages)
            for item in items:
                cost += put_cost(self.job_states.table or "", item)
            if cost == ahead:
                break
            ahead, tried = cost, ahead
        else:
            ahead = tried
        return messages, items, ahead

    def _usage_report(self, job: str | None, usage: Usage, *, final: bool = False) -> UsageReport:
        self._reports_sent += 1
        return UsageReport(self._report_prefix, self._reports_sent, job, usage, final)

    def _report_usage(self) -> None:
        """Report alone what jobs no bundle here holds any more used since their
        last results: the calls that ended their bundles, say."""
        held = {run.bundle.job for run, _ in list(self._held.values())}
        for job in self.meter.jobs():
            if job not in held:
                self._send_usage(job, self._last_bundle.pop(job, ""))

    def _charge_the_rest(self) -> None:
        """On leaving: what the instance used for no job (the time no task used:
        its idle tail, slots left empty; the long polls that found nothing) goes
        to the last job it ran, whose scale-up it was, so that a job's cost adds
        up to what the group's instances lived. An instance that ran no job
        reports it as the fleet's overhead."""
        rest = time.monotonic() - self._started - self._instance_seconds
        self.meter.charge(None, Usage(instance_seconds=max(rest, 0.0)))
        if self._last_job is not None:
            # With its own write counted in, the tail goes in one request: no
            # report is left to send alone.
            tail = self.meter.take(None) + TAIL_CHARGE
            spent: list[Usage] = []
            with self.meter.apart(spent):
                charged = self.job_states.charge_tail(self._last_job, tail)
            if charged:
                self._charge_missed(self._last_job, spent[0], TAIL_CHARGE)
                self._report_usage()
                return
            self.meter.charge(None, tail - TAIL_CHARGE + spent[0])
        self._send_usage(None, "")

    def _send_usage(self, job: str | None, bundle_id: str) -> None:
        """A usage report alone: its own send counted in it, as one request."""
        queue_url = self.config.response_queue_url if job is None else self.job_queues.url(job)
        usage = self.meter.take(job) + Usage(sqs_requests=1)
        body = usage_message(
            bundle_id or "usage",
            self.config.instance_id,
            self._usage_report(job, usage, final=True),
        )
        try:
            with self.meter.charged_to(job):
                send_batches(self.sqs, queue_url, [body])
        except (BotoCoreError, ClientError, QueueError) as error:
            if is_no_such_queue(error):
                # Its job has ended, or its queue is not seen yet: a report of a
                # job that has no bundle here any more is not worth waiting for.
                self.meter.take(job)  # the failed send with it
                return
            log.warning("could not report usage: %s", error)
            self.meter.charge(job, usage - Usage(sqs_requests=1))
            return
        # The send just made is counted in the report already.
        self.meter.charge(job, Usage() - self.meter.last_call())

    def _give_back(self, run: BundleRun, heartbeat: "Heartbeat") -> None:
        """Hand an unfinished bundle over: results sent, progress kept, a fresh message."""
        run.release()
        for runner in self._runners:
            runner.shell.kill_current()  # cut off: its next holder runs it again
        heartbeat.stop()
        worker = self.config.instance_id
        if heartbeat.holds():  # else another worker has it, and its receipt
            done = self._send(run)
            if run.ended():  # it ended as the stop came
                self.ledger.complete(run.bundle_id, worker)
            else:
                self.ledger.progress(run.bundle_id, worker, done)
                self.ledger.release(run.bundle_id, worker)
                # A fresh copy: the message's receives then count failures, not
                # preemptions, toward the dead-letter queue.
                send_batches(self.sqs, self.config.request_queue_url, [run.message["Body"]])
            self._delete(run.receipt, *run.duplicates)
        self._forget(run, heartbeat)

    def _forget(self, run: BundleRun, heartbeat: "Heartbeat") -> None:
        heartbeat.stop()
        if self._finished_log is not None:
            self._finished_log.forget(run.bundle_id)
        with self._changed:
            self._held.pop(run.bundle_id, None)
            # Idle from when its last work ended, not from the receive that
            # brought it: a task longer than the idle timeout leaves the whole
            # timeout of warm instance after it, as the stack's setting asks.
            self._last_busy = time.monotonic()
            self._note_held()
            self._changed.notify_all()
        self._sync_protection()  # idle now, perhaps: the group may end this instance first

    def _delete(self, *receipts: str) -> None:
        for receipt in receipts:
            try:
                self.sqs.delete_message(
                    QueueUrl=self.config.request_queue_url, ReceiptHandle=receipt
                )
            except ClientError as error:
                # A receipt outdated by a later delivery: that delivery's holder deletes it.
                log.warning("could not delete a message: %s", error)

    # -- a restart on the same instance --------------------------------------

    def _note_held(self) -> None:
        """Write down the messages held (under the lock), for a restarted worker."""
        if self.config.state_dir is None:
            return
        receipts = [run.receipt for run, _ in self._held.values()]
        path = self.config.state_dir / HELD_FILE
        draft = path.with_suffix(".draft")
        draft.write_text(json.dumps(receipts))
        draft.replace(path)

    def _take_back_held(self) -> None:
        """Make the messages an earlier process on this instance held visible at
        once: its claims are this worker's to take over, without waiting out
        the visibility timeout."""
        if self.config.state_dir is None:
            return
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.config.state_dir / HELD_FILE
        try:
            receipts = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if receipts:
            log.info("taking back %d bundles held before a restart", len(receipts))
            try:
                self._make_visible([{"ReceiptHandle": receipt} for receipt in receipts])
            except ClientError as error:
                log.warning("could not take back held bundles: %s", error)
        path.unlink()

    # -- the instance ---------------------------------------------------------

    def _sync_protection(self) -> None:
        """Scale-in protection while it holds work or is claiming some, none
        otherwise: the group never ends a working instance but ends idle ones
        first. Called after each change of what it holds; each call reads what it
        holds under the protection lock, so the last call sets what is true last
        (a claim and a bundle's end in two threads cannot leave work unprotected)."""
        with self._protection, self._changed:
            holding = bool(self._held) or self._claiming > 0
        self._protect(holding)

    def _protect(self, protected: bool) -> None:
        """Set the instance's scale-in protection (once per change)."""
        with self._protection:
            if self.config.group_name is None or protected == self._protected:
                return
            try:
                self.autoscaling.set_instance_protection(
                    InstanceIds=[self.config.instance_id],
                    AutoScalingGroupName=self.config.group_name,
                    ProtectedFromScaleIn=protected,
                )
            except (BotoCoreError, ClientError) as error:
                # Leaving, say: the instance is no longer the group's to protect.
                log.warning("could not set scale-in protection to %s: %s", protected, error)
                return
            self._protected = protected

    def _end_instance(self) -> None:
        self._protect(False)
        if self.config.group_name is None:
            log.info("idle for %g s: exiting", self.config.idle_timeout)
            return
        log.info("idle for %g s: terminating this instance", self.config.idle_timeout)
        self.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=self.config.instance_id, ShouldDecrementDesiredCapacity=True
        )

    def _complete_lifecycle(self) -> None:
        """Let the group go on ending this instance: the bundles are given back."""
        self._protect(False)
        hook, group = self.config.lifecycle_hook, self.config.group_name
        if self.stop_reason != Notice.LIFECYCLE or hook is None or group is None:
            return
        try:
            self.autoscaling.complete_lifecycle_action(
                LifecycleHookName=hook,
                AutoScalingGroupName=group,
                InstanceId=self.config.instance_id,
                LifecycleActionResult="CONTINUE",
            )
        except ClientError as error:
            log.warning("could not complete the lifecycle action: %s", error)


class Heartbeat(threading.Thread):
    """Extends a held bundle's message visibility and claim lease, a few times a timeout."""

    def __init__(self, worker: RemoteWorker, run: BundleRun, claimed_at: float) -> None:
        super().__init__(name=f"heartbeat {run.bundle_id}", daemon=True)
        self.worker = worker
        self.run_ = run
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
        with self.worker.meter.charged_to(self.run_.bundle.job):
            self._beat()

    def _beat(self) -> None:
        config = self.worker.config
        interval = config.visibility_timeout / HEARTBEATS_PER_TIMEOUT
        while not self._done.wait(interval):
            renewing_at = time.monotonic()
            try:
                renewed = self.worker.ledger.extend(
                    self.run_.bundle_id,
                    config.instance_id,
                    lease_seconds(config.visibility_timeout),
                )
            except (BotoCoreError, ClientError) as error:
                log.warning("could not renew the lease of %s: %s", self.run_.bundle_id, error)
                continue  # holds() ends it if this goes on past the lease
            if not renewed:
                self.lost = True
                return
            self.renewed_at = renewing_at
            try:
                self.worker.sqs.change_message_visibility(
                    QueueUrl=config.request_queue_url,
                    ReceiptHandle=self.run_.receipt,
                    VisibilityTimeout=config.visibility_timeout,
                )
            except ClientError as error:
                # The lease, not the message, is what keeps the bundle ours.
                log.warning("could not extend a message's visibility: %s", error)

    def stop(self) -> None:
        self._done.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
