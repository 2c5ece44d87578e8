"""End to end: `taskfleet worker` processes against a real moto_server."""

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import boto3
import pytest

from tests.conftest import (
    Resources,
    bundle,
    drain,
    fake_metadata,
    results_by_id,
    start_worker,
    wait_for,
)
from worker.bundle import decode_result_batch

pytestmark = pytest.mark.e2e


def test_a_bundle_put_twice_runs_once_and_idle_workers_exit(
    resources: Resources, tmp_path: Path
) -> None:
    body = bundle("job1-1", "sleep 0", "echo hello", "exit 3", "sleep 50")
    for _ in range(2):
        resources.sqs.send_message(QueueUrl=resources.requests, MessageBody=body)
    worker = start_worker(resources, "i-one", tmp_path, "--idle-timeout", "3", "--concurrency", "2")
    assert worker.wait(timeout=120) == 0, (tmp_path / "i-one.log").read_text()
    batches = [decode_result_batch(b) for b in drain(resources.sqs, resources.responses)]
    results = {r.id: r for b in batches for r in b.results}
    assert sorted(results) == ["job1:1:1", "job1:1:2", "job1:1:3", "job1:1:4"]
    assert sum(len(b.results) for b in batches) == 4  # once, though delivered twice
    assert results["job1:1:2"].stdout == "hello\n"
    assert results["job1:1:3"].exit_code == 3
    assert results["job1:1:4"].worker == "i-one"
    log = (tmp_path / "i-one.log").read_text()
    assert "was done already" in log or "delivered again while held here" in log
    assert not drain(resources.sqs, resources.requests)  # both copies deleted


def test_a_task_longer_than_the_visibility_timeout_runs_once(
    resources: Resources, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    resources.sqs.send_message(
        QueueUrl=resources.requests,
        MessageBody=bundle("job1-2", f"echo run >> {marker}; /bin/sleep 7"),
    )
    workers = [
        start_worker(resources, name, tmp_path, "--idle-timeout", "12") for name in ("i-a", "i-b")
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    assert marker.read_text().count("run") == 1  # the heartbeat kept it from a second worker
    assert results_by_id(resources.sqs, resources.responses) == Counter({"job1:1:1": 1})


def test_malformed_and_oversized_messages_do_not_kill_a_worker(
    resources: Resources, tmp_path: Path
) -> None:
    crafted = [
        "{not a bundle",
        bundle("", "echo empty id"),  # DynamoDB refuses an empty key
        bundle("b" * 3000, "echo long id"),  # and one above its key size
        bundle("job1-6", "echo no tasks")[:-2].rsplit("[[", 1)[0] + "[]}",
    ]
    for body in crafted:
        resources.sqs.send_message(QueueUrl=resources.requests, MessageBody=body)
    # A bundle whose task is far beyond the line limit (the message itself is within
    # SQS's): that task fails with the reason, the others run.
    huge = "echo " + "x" * 500_000
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle("job1-4", "echo ok", huge)
    )
    worker = start_worker(resources, "i-dlq", tmp_path, "--idle-timeout", "8")
    assert worker.wait(timeout=120) == 0  # the bad messages did not kill it
    assert "is not a bundle" in (tmp_path / "i-dlq.log").read_text()
    assert sorted(drain(resources.sqs, resources.dead_letters)) == sorted(crafted)
    results = {
        r.line: r
        for body in drain(resources.sqs, resources.responses)
        for r in decode_result_batch(body).results
    }
    assert sorted(results) == [1, 2]
    assert results[1].status == "succeeded"
    assert results[2].status == "failed"
    assert "above the limit" in (results[2].error or "")


def ledger_lines(ledger: Path) -> Counter[str]:
    return Counter(ledger.read_text().split()) if ledger.exists() else Counter()


def progress_recorded(resources: Resources, bundle_id: str) -> bool:
    item = boto3.client("dynamodb").get_item(
        TableName=resources.table, Key={"bundle": {"S": bundle_id}}, ConsistentRead=True
    )
    return "done" in item.get("Item", {})


def three_tasks(ledger: Path, started: Path) -> list[str]:
    """A quick task, one that sleeps 30 s the first time it runs, and a quick one."""
    return [
        f"echo one >> {ledger}",
        f"echo two >> {ledger}; if [ ! -e {started} ]; then touch {started}; /bin/sleep 30; fi",
        f"echo three >> {ledger}",
    ]


def test_results_arrive_while_their_bundle_runs(resources: Resources, tmp_path: Path) -> None:
    started = tmp_path / "started"
    resources.sqs.send_message(
        QueueUrl=resources.requests,
        MessageBody=bundle("job1-7", "echo early", f"touch {started}; /bin/sleep 6"),
    )
    worker = start_worker(resources, "i-stream", tmp_path, "--idle-timeout", "2")
    early: list[str] = []

    def some_arrived() -> bool:
        early.extend(drain(resources.sqs, resources.responses))
        return bool(early)

    wait_for(some_arrived)
    assert worker.poll() is None  # still running the long task
    assert started.exists()
    (batch,) = [decode_result_batch(body) for body in early]
    assert [r.stdout for r in batch.results] == ["early\n"]
    assert worker.wait(timeout=60) == 0
    assert results_by_id(resources.sqs, resources.responses) == Counter({"job1:1:2": 1})


def test_slots_take_new_bundles_as_they_free(resources: Resources, tmp_path: Path) -> None:
    for name, task in (("job1-8", "/bin/sleep 4"), ("job1-9", "echo quick")):
        resources.sqs.send_message(QueueUrl=resources.requests, MessageBody=bundle(name, task))
    worker = start_worker(
        resources, "i-slots", tmp_path, "--idle-timeout", "2", "--concurrency", "2"
    )
    wait_for(lambda: bundle_done(resources, "job1-9"), timeout=60)
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle("job1-10", "echo later")
    )
    assert worker.wait(timeout=60) == 0
    results = {
        b.bundle_id: r
        for b in map(decode_result_batch, drain(resources.sqs, resources.responses))
        for r in b.results
    }
    assert sorted(results) == ["job1-10", "job1-8", "job1-9"]
    # The bundle sent later ran while the long one still did: it did not wait for it.
    assert results["job1-10"].finished_at < results["job1-8"].finished_at


def bundle_done(resources: Resources, bundle_id: str) -> bool:
    item = boto3.client("dynamodb").get_item(
        TableName=resources.table, Key={"bundle": {"S": bundle_id}}, ConsistentRead=True
    )
    return bool(item.get("Item", {}).get("state", {}).get("S") == "done")


def test_a_killed_workers_heir_runs_only_what_had_not_finished(
    resources: Resources, tmp_path: Path
) -> None:
    ledger, started = tmp_path / "ledger", tmp_path / "started"
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle("job1-5", *three_tasks(ledger, started))
    )
    doomed = start_worker(resources, "i-doomed", tmp_path, "--idle-timeout", "60")
    wait_for(lambda: started.exists() and progress_recorded(resources, "job1-5"), timeout=60)
    doomed.kill()  # SIGKILL mid-bundle: no cleanup, its claim stays until the lease ends
    doomed.wait()
    heir = start_worker(resources, "i-heir", tmp_path, "--idle-timeout", "4")
    assert heir.wait(timeout=120) == 0
    batches = [decode_result_batch(b) for b in drain(resources.sqs, resources.responses)]
    results = Counter(r.id for b in batches for r in b.results)
    assert results == Counter({"job1:1:1": 1, "job1:1:2": 1, "job1:1:3": 1})
    # The task that had finished (and was reported) did not run again; the one in
    # hand did.
    assert ledger_lines(ledger) == Counter({"one": 1, "two": 2, "three": 1})
    by_worker = {r.line: b.worker for b in batches for r in b.results}
    assert by_worker == {1: "i-doomed", 2: "i-heir", 3: "i-heir"}


def give_back_and_take_over(
    resources: Resources,
    tmp_path: Path,
    bundle_id: str,
    stop: Callable[[Popen[bytes]], None],
    *extra: str,
) -> str:
    """A worker runs a bundle until its second task is in hand, ``stop`` makes it
    give the bundle back, an heir finishes it; returns the first worker's log."""
    ledger, started = tmp_path / "ledger", tmp_path / "started"
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle(bundle_id, *three_tasks(ledger, started))
    )
    first = start_worker(resources, "i-first", tmp_path, "--idle-timeout", "60", *extra)
    wait_for(lambda: started.exists() and progress_recorded(resources, bundle_id), timeout=60)
    stop(first)
    assert first.wait(timeout=30) == 0  # well inside a spot notice's two minutes
    # Given back at once, as a fresh message: a preemption is no failed receive.
    (message,) = resources.sqs.receive_message(
        QueueUrl=resources.requests,
        AttributeNames=["ApproximateReceiveCount"],
        WaitTimeSeconds=1,
    )["Messages"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    resources.sqs.change_message_visibility(
        QueueUrl=resources.requests, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    heir = start_worker(resources, "i-heir", tmp_path, "--idle-timeout", "3")
    assert heir.wait(timeout=60) == 0
    assert results_by_id(resources.sqs, resources.responses) == Counter(
        {"job1:1:1": 1, "job1:1:2": 1, "job1:1:3": 1}
    )
    assert ledger_lines(ledger) == Counter({"one": 1, "two": 2, "three": 1})
    return (tmp_path / "i-first.log").read_text()


def test_sigterm_gives_the_bundle_back_at_once(resources: Resources, tmp_path: Path) -> None:
    log = give_back_and_take_over(
        resources, tmp_path, "job1-3", lambda worker: worker.send_signal(signal.SIGTERM)
    )
    assert "stopping (SIGTERM)" in log


def test_a_spot_notice_gives_the_bundle_back(resources: Resources, tmp_path: Path) -> None:
    with fake_metadata() as metadata:
        log = give_back_and_take_over(
            resources,
            tmp_path,
            "job1-11",
            lambda _worker: metadata.answer("spot/instance-action", '{"action": "terminate"}'),
            "--metadata-url",
            metadata.url,
        )
    assert "stopping (spot interruption notice)" in log


def test_a_restarted_worker_takes_its_bundle_back_at_once(
    resources: Resources, tmp_path: Path
) -> None:
    ledger, started = tmp_path / "ledger", tmp_path / "started"
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle("job1-12", *three_tasks(ledger, started))
    )
    # A visibility of a minute: the restarted worker must not wait it out.
    again = ("--visibility-timeout", "60", "--state-dir", str(tmp_path / "state"))
    first = start_worker(resources, "i-same", tmp_path, "--idle-timeout", "60", *again)
    wait_for(started.exists, timeout=60)
    first.kill()  # as a crash would; systemd (or the local fleet) starts it again
    first.wait()
    # Task one had finished, but its result waited (about a second) to be sent:
    # only the restarted worker's finished log keeps it from running again.
    assert not progress_recorded(resources, "job1-12")
    restarted = start_worker(resources, "i-same", tmp_path, "--idle-timeout", "60", *again)
    try:
        results: Counter[str] = Counter()
        wait_for(
            lambda: (
                bool(results.update(results_by_id(resources.sqs, resources.responses)))
                or len(results) == 3
            ),
            timeout=20,  # a third of the visibility timeout
        )
    finally:
        restarted.terminate()
        restarted.wait(timeout=60)
    assert results == Counter({"job1:1:1": 1, "job1:1:2": 1, "job1:1:3": 1})
    assert ledger_lines(ledger) == Counter({"one": 1, "two": 2, "three": 1})
    assert "1 results finished before a restart" in (tmp_path / "i-same.log").read_text()


def test_the_worker_timeout_limits_each_command(resources: Resources, tmp_path: Path) -> None:
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle("job1-t", "/bin/sleep 30", "echo quick")
    )
    worker = start_worker(resources, "i-limit", tmp_path, "--idle-timeout", "2", "--timeout", "0.5")
    assert worker.wait(timeout=60) == 0  # not 30 s: the command was cut off
    results = [r for body in drain(resources.sqs, resources.responses)
               for r in decode_result_batch(body).results]  # fmt: skip
    assert {r.line: r.status.value for r in results} == {1: "timed_out", 2: "succeeded"}


def test_an_idle_worker_waits_its_whole_timeout_after_a_task_longer_than_it(
    resources: Resources, tmp_path: Path
) -> None:
    # A task of 4 s on a worker idle after 3 s: the idle time counts from the
    # task's end, not from the receive that brought it (which would end the
    # worker as soon as the task did).
    resources.sqs.send_message(
        QueueUrl=resources.requests, MessageBody=bundle("job1-12", "sleep 4000")
    )
    worker = start_worker(resources, "i-warm", tmp_path, "--idle-timeout", "3")
    assert worker.wait(timeout=120) == 0, (tmp_path / "i-warm.log").read_text()
    exited = time.time()
    batches = [decode_result_batch(b) for b in drain(resources.sqs, resources.responses)]
    (result,) = [r for b in batches for r in b.results]
    assert exited - result.finished_at >= 3
