"""End to end: `taskfleet worker` processes against a real moto_server."""

import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import (
    Resources,
    bundle,
    drain,
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
    assert "was done already" in (tmp_path / "i-one.log").read_text()
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


def test_sigterm_finishes_the_bundle_in_hand_and_exits_0(
    resources: Resources, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    resources.sqs.send_message(
        QueueUrl=resources.requests,
        MessageBody=bundle("job1-3", f"touch {started}; /bin/sleep 2", "echo second"),
    )
    worker = start_worker(resources, "i-term", tmp_path, "--idle-timeout", "60")
    wait_for(lambda: started.exists() or worker.poll() is not None, timeout=60)
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert results_by_id(resources.sqs, resources.responses) == Counter(
        {"job1:1:1": 1, "job1:1:2": 1}
    )
    assert not drain(resources.sqs, resources.requests)


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


def test_a_killed_workers_bundle_is_taken_over_and_reported_once(
    resources: Resources, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    resources.sqs.send_message(
        QueueUrl=resources.requests,
        MessageBody=bundle("job1-5", "echo first", f"touch {started}; /bin/sleep 1", "echo last"),
    )
    doomed = start_worker(resources, "i-doomed", tmp_path, "--idle-timeout", "60")
    wait_for(started.exists, timeout=60)
    doomed.kill()  # SIGKILL mid-bundle: no cleanup, its claim stays until the lease ends
    doomed.wait()
    heir = start_worker(resources, "i-heir", tmp_path, "--idle-timeout", "8")
    assert heir.wait(timeout=120) == 0
    batches = [decode_result_batch(b) for b in drain(resources.sqs, resources.responses)]
    results = Counter(r.id for b in batches for r in b.results)
    assert results == Counter({"job1:1:1": 1, "job1:1:2": 1, "job1:1:3": 1})
    assert {b.worker for b in batches} == {"i-heir"}  # the dead worker reported nothing
