"""Workers killed (SIGKILL) at random moments, and paused past their lease (SIGSTOP).

Every task's command appends its line number, the time and the pid of the
worker that started it to a ledger file, so besides what was reported the suite
knows what ran, and where. Locally a killed worker's tasks are reported `lost`
and never run again; remotely the bundle is taken over and run again, so tasks
the dead worker had started may have run twice: the suite checks that each such
task ran once by the dead worker and once by its heir, and that nothing the
dead worker ran was reported.
"""

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import (
    Resources,
    WriteWorkload,
    bundle,
    children_of,
    drain,
    start_worker,
    taskfleet_command,
    wait_for,
)
from tests.faults.figures import Figures
from worker.bundle import decode_result_batch

pytestmark = pytest.mark.e2e

TRIALS = 20

#: Seed of the random moments; a failure names its trial, and the same run repeats it.
SEED = 20261127


def ledger_task(ledger: Path, line: int, seconds: float) -> str:
    """A command that notes it ran (its line, when, and the worker that started it:
    the shell's parent), takes a while, and notes that it ended."""
    note = f"echo {line} $(date +%s.%N) $PPID"
    return f"{note} >> {ledger}; /bin/sleep {seconds}; {note} end >> {ledger}"


def ledger_rows(ledger: Path, fields: int) -> list[tuple[int, float, int]]:
    if not ledger.exists():
        return []
    rows = (row.split() for row in ledger.read_text().splitlines())
    return [(int(row[0]), float(row[1]), int(row[2])) for row in rows if len(row) == fields]


def ledger_runs(ledger: Path) -> list[tuple[int, float, int]]:
    """(line, when, worker pid) for every run the ledger noted."""
    return ledger_rows(ledger, 3)


def ledger_ends(ledger: Path) -> list[tuple[int, float, int]]:
    """(line, when, worker pid) for every run that ended."""
    return ledger_rows(ledger, 4)


def local_workers(pid: int) -> list[int]:
    """The worker processes of a `taskfleet run`: its children (their commands are
    its grandchildren)."""
    return children_of(pid, direct=True)


def start_ledger_run(
    workload: WriteWorkload, tmp_path: Path, trial: int, tasks: int, seconds: float
) -> tuple["subprocess.Popen[bytes]", Path, Path]:
    """`taskfleet run` of ledger tasks on 2 workers, once the first has started:
    the process (its stderr piped), the ledger and the results file."""
    ledger = tmp_path / f"ledger-{trial}.txt"
    path = workload(*(ledger_task(ledger, n, seconds) for n in range(1, tasks + 1)))
    output = tmp_path / f"results-{trial}.jsonl"
    run = subprocess.Popen(
        [*taskfleet_command(), "run", path, "--workers", "2", "-o", str(output)],
        stderr=subprocess.PIPE,
    )
    wait_for(ledger.exists, timeout=60)
    return run, ledger, output


def test_a_local_worker_killed_at_random_moments(
    workload: WriteWorkload, tmp_path: Path, record: list[Figures]
) -> None:
    rng = random.Random(SEED)
    tasks = 30
    lost = twice = ran_twice = finished_but_lost = unstarted_but_lost = 0
    for trial in range(TRIALS):
        run, ledger, output = start_ledger_run(workload, tmp_path, trial, tasks, 0.02)
        time.sleep(rng.uniform(0, 0.3))
        workers = local_workers(run.pid)
        assert workers, f"trial {trial}: no worker left to kill"
        victim = rng.choice(workers)
        forked = kill_noting_its_command(victim)
        run.communicate(timeout=120)
        code = run.returncode
        records = [json.loads(row) for row in output.read_text().splitlines()]
        reported = Counter(r["line"] for r in records)
        lost += sum(1 for n in range(1, tasks + 1) if not reported[n])
        twice += sum(1 for count in reported.values() if count > 1)
        ran_twice += sum(
            1 for count in Counter(n for n, *_ in ledger_runs(ledger)).values() if count > 1
        )
        wrongly = wrongly_lost(records, ledger, moved_on(ledger, {victim}), forked)
        finished_but_lost += wrongly[0]
        unstarted_but_lost += wrongly[1]
        statuses = Counter(r["status"] for r in records)
        assert set(statuses) <= {"succeeded", "lost"}, (trial, statuses)
        assert statuses["lost"] <= 1, (trial, statuses)  # only the task in hand
        assert code == (1 if statuses["lost"] else 0), (trial, code, statuses)
    record.append(
        Figures(
            "local worker SIGKILLed mid-chunk (taskfleet run, 2 workers)",
            TRIALS,
            TRIALS * tasks,
            lost,
            twice,
            ran_twice,
            "finished tasks reported from its log; the one in hand lost; the rest run elsewhere",
            None,
            finished_but_lost,
            unstarted_but_lost,
        )
    )
    assert (lost, twice, ran_twice, finished_but_lost, unstarted_but_lost) == (0, 0, 0, 0, 0)


def kill_noting_its_command(worker: int) -> bool:
    """SIGKILL a local worker; whether it had forked a process for its command (a
    command may be killed with its worker before it writes a word to the ledger:
    it had started all the same). The worker is stopped first, so that what it
    has forked cannot change between the look and the kill."""
    os.kill(worker, signal.SIGSTOP)
    forked = bool(children_of(worker, direct=True))
    os.kill(worker, signal.SIGKILL)
    return forked


def moved_on(ledger: Path, workers: set[int] | None = None) -> set[int]:
    """Tasks a worker had finished with: it went on to start another after them. (A
    command can end a moment before its worker learns so, and the worker can die in
    that moment: such a task was still in hand.)"""
    starts = ledger_runs(ledger)
    return {
        line
        for line, ended, pid in ledger_ends(ledger)
        if (workers is None or pid in workers)
        and any(p == pid and at > ended for _, at, p in starts)
    }


def wrongly_lost(
    records: list[dict[str, Any]], ledger: Path, finished: set[int], forked: bool = False
) -> tuple[int, int]:
    """Tasks reported lost although finished with, or never started: not in the
    ledger, and no process forked for it (``forked``: the dead worker had forked
    one for the task in its hand, which is the one lost task there may be)."""
    started = {n for n, *_ in ledger_runs(ledger)}
    lost = [r["line"] for r in records if r["status"] == "lost"]
    unstarted = [n for n in lost if n not in started]
    if forked and len(lost) == 1:
        unstarted = []
    return sum(1 for n in lost if n in finished), len(unstarted)


def test_a_task_that_kills_its_worker_costs_only_itself(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    # As a user found it: 30 quick tasks, one that kills its worker, 60 more.
    ledger = tmp_path / "ledger.txt"
    texts = [ledger_task(ledger, n, 0.03) for n in range(1, 31)]
    texts += ["kill -9 $PPID"]
    texts += [ledger_task(ledger, n, 0.03) for n in range(32, 92)]
    done = subprocess.run(
        [*taskfleet_command(), "run", workload(*texts), "--workers", "2"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    records = [json.loads(row) for row in done.stdout.splitlines()]
    by_line = {r["line"]: r for r in records}
    assert Counter(r["line"] for r in records) == Counter(range(1, 92))  # each once
    assert by_line[31]["status"] == "lost"
    assert "died (killed by signal 9) while running it" in by_line[31]["error"]
    assert all(r["status"] == "succeeded" for n, r in by_line.items() if n != 31)
    assert Counter(n for n, *_ in ledger_runs(ledger)) == Counter(set(range(1, 92)) - {31})
    assert done.returncode == 1


def test_ctrl_c_keeps_every_finished_record(
    workload: WriteWorkload, tmp_path: Path, record: list[Figures]
) -> None:
    rng = random.Random(SEED)
    trials, tasks = 10, 40
    lost = twice = finished_missing = finished_but_lost = cut_before_first_line = 0
    for trial in range(trials):
        run, ledger, output = start_ledger_run(workload, tmp_path, trial, tasks, 0.05)
        time.sleep(rng.uniform(0.1, 0.5))
        interrupted_at = time.time()
        run.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 130, stderr
        records = [json.loads(row) for row in output.read_text().splitlines()]
        reported = Counter(r["line"] for r in records)
        twice += sum(1 for count in reported.values() if count > 1)
        finished = moved_on(ledger)
        finished_missing += sum(1 for n in finished if not reported[n])
        wrongly = wrongly_lost(records, ledger, finished)
        finished_but_lost += wrongly[0]
        # A command Ctrl-C cut off between its fork and its first line wrote nothing:
        # it was in hand, not unstarted. Only one task a worker can be in hand.
        cut_before_first_line += wrongly[1]
        trial_lost = sum(1 for r in records if r["status"] == "lost")
        assert trial_lost <= 2, (trial, trial_lost)
        assert all(
            r["error"] == "cut off by an interrupt while running"
            for r in records
            if r["status"] == "lost"
        )
        lost += trial_lost
        # The summary's wall time runs to the interrupt, not to the last result.
        summary = stderr.decode()
        assert "interrupted:" in summary
        wall = float(summary.split("wall ", 1)[1].split(" s", 1)[0])
        first_start = min(at for _, at, _ in ledger_runs(ledger))
        assert wall >= interrupted_at - first_start - 0.05, (trial, wall)
    record.append(
        Figures(
            "taskfleet run interrupted (SIGINT, as Ctrl-C) at a random moment",
            trials,
            trials * tasks,
            0,
            twice,
            0,
            f"{finished_missing} finished without a record; {lost} cut off, recorded lost"
            f" ({cut_before_first_line} before their first line); the rest not run",
            None,
            finished_but_lost,
            None,
        )
    )
    assert (twice, finished_missing, finished_but_lost) == (0, 0, 0)


def trial_queue(resources: Resources, trial: str, bundle_id: str, texts: list[str]) -> Resources:
    """A request queue of the trial's own holding its bundle: a worker killed in a long
    poll leaves its receive waiting in the emulator, where it would swallow the next
    trial's message."""
    queue = resources.sqs.create_queue(
        QueueName=f"requests-{trial}", Attributes={"VisibilityTimeout": "3"}
    )["QueueUrl"]
    resources.sqs.send_message(QueueUrl=queue, MessageBody=bundle(bundle_id, *texts))
    return resources._replace(requests=queue)


def wait_until_done(bundle_id: str) -> None:
    """Until the bundle's claim says done: its results are on the response queue."""
    dynamodb: Any = boto3.client("dynamodb")

    def done() -> bool:
        item = dynamodb.get_item(
            TableName="claims", Key={"bundle": {"S": bundle_id}}, ConsistentRead=True
        ).get("Item")
        return item is not None and item["state"]["S"] == "done"

    wait_for(done, timeout=120)


def test_a_remote_worker_killed_and_restarted_on_its_instance(
    resources: Resources, tmp_path: Path, record: list[Figures]
) -> None:
    figures = kill_remote_workers(resources, tmp_path, restart=True)
    record.append(figures)
    assert (figures.lost, figures.reported_twice, figures.finished_ran_again) == (0, 0, 0)


def test_a_remote_worker_killed_and_its_instance_lost(
    resources: Resources, tmp_path: Path, record: list[Figures]
) -> None:
    figures = kill_remote_workers(resources, tmp_path, restart=False)
    record.append(figures)
    assert (figures.lost, figures.reported_twice) == (0, 0)


def kill_remote_workers(resources: Resources, tmp_path: Path, restart: bool) -> Figures:
    """SIGKILL a worker at a random moment of its bundle; then the same worker starts
    again on its instance (``restart``: as systemd does, with its state folder) or
    another instance takes the bundle over once the lease ends. Checks that each
    task that ran twice ran once by each, and that the dead worker reported nothing
    it had not sent."""
    rng = random.Random(SEED)
    tasks = 8
    lost = twice = ran_twice = finished_ran_again = 0
    for trial in range(TRIALS):
        ledger = tmp_path / f"ledger-{restart}-{trial}.txt"
        bundle_id = f"job1-{restart}-{trial}"
        texts = [ledger_task(ledger, n, 0.05) for n in range(1, tasks + 1)]
        queues = trial_queue(resources, f"kill-{restart}-{trial}", bundle_id, texts)
        doomed_id = f"i-doomed-{restart}-{trial}"
        state = ("--state-dir", str(tmp_path / f"{doomed_id}.state"))
        doomed = start_worker(queues, doomed_id, tmp_path, "--idle-timeout", "600", *state)
        wait_for(ledger.exists, timeout=60)
        time.sleep(rng.uniform(0, 0.35))
        doomed.kill()
        doomed.wait()
        if restart:  # the same instance: its id and state folder
            heir = start_worker(queues, doomed_id, tmp_path, "--idle-timeout", "600", *state)
        else:
            heir = start_worker(queues, f"i-heir-{trial}", tmp_path, "--idle-timeout", "600")
        wait_until_done(bundle_id)
        heir.kill()  # idle in a long poll: its work is done and reported
        heir.wait()
        batches = [decode_result_batch(body) for body in drain(resources.sqs, resources.responses)]
        reported = Counter(r.line for b in batches for r in b.results)
        lost += sum(1 for n in range(1, tasks + 1) if not reported[n])
        twice += sum(1 for count in reported.values() if count > 1)
        runs = ledger_runs(ledger)
        by_line = Counter(n for n, *_ in runs)
        assert max(by_line.values()) <= 2, (trial, by_line)
        # Finished: the dead worker (one slot) had gone on to start a later task.
        last_start = max(at for _, at, pid in runs if pid == doomed.pid)
        finished = {
            n for n, at, pid in ledger_ends(ledger) if pid == doomed.pid and at < last_start
        }
        for line, count in by_line.items():
            if count > 1:
                ran_twice += 1
                finished_ran_again += line in finished
                # One run was the heir's, the other the dead worker's: a command it
                # had started may finish after SIGKILL (commands run in their own
                # session), and one just forked may note its parent after the kill,
                # when it is whoever adopted the orphan instead: init, or this test
                # process once an in-process local run made it a child subreaper.
                runners = [pid for n, _, pid in runs if n == line]
                assert runners.count(heir.pid) == 1, (trial, line, runners)
                (other,) = (pid for pid in runners if pid != heir.pid)
                assert other in (doomed.pid, 1, os.getpid()), (trial, line, runners)
    if restart:
        fault = "remote worker SIGKILLed mid-bundle, restarted on its instance"
        note = "ran twice: only tasks running at the kill; finished ones sent from its log"
    else:
        fault = "remote worker SIGKILLed mid-bundle, instance lost (heir after the lease)"
        note = "fin. 2x: finished in the last second before the kill, result not yet sent"
    return Figures(fault, TRIALS, TRIALS * tasks, lost, twice, ran_twice, note, finished_ran_again)


def test_a_zombie_worker_paused_past_its_lease_is_ignored_when_it_wakes(
    resources: Resources, tmp_path: Path, record: list[Figures]
) -> None:
    trials, tasks = 3, 5
    lost = twice = ran_twice = 0
    for trial in range(trials):
        ledger = tmp_path / f"ledger-{trial}.txt"
        bundle_id = f"job1-zombie-{trial}"
        texts = [ledger_task(ledger, n, 0.3) for n in range(1, tasks + 1)]
        queues = trial_queue(resources, f"zombie-{trial}", bundle_id, texts)
        zombie_id, heir_id = f"i-zombie-{trial}", f"i-heir-{trial}"
        zombie = start_worker(queues, zombie_id, tmp_path, "--idle-timeout", "600")
        wait_for(ledger.exists, timeout=60)
        zombie.send_signal(signal.SIGSTOP)  # paused mid-task, past its 3 s lease
        heir = start_worker(queues, heir_id, tmp_path, "--idle-timeout", "600")
        wait_until_done(bundle_id)
        zombie.send_signal(signal.SIGCONT)
        time.sleep(4)  # long enough for the zombie to finish its task and give up
        for worker in (zombie, heir):
            worker.kill()
            worker.wait()
        batches = [decode_result_batch(body) for body in drain(resources.sqs, resources.responses)]
        # The zombie's results dropped (what it used it still reports, alone).
        assert {b.worker for b in batches if b.results} == {heir_id}, trial
        reported = Counter(r.line for b in batches for r in b.results)
        lost += sum(1 for n in range(1, tasks + 1) if not reported[n])
        twice += sum(1 for count in reported.values() if count > 1)
        runs = ledger_runs(ledger)
        by_line = Counter(n for n, *_ in runs)
        doubled = [line for line, count in by_line.items() if count > 1]
        ran_twice += len(doubled)
        # At most the task in hand when it was paused: woken, it starts no other.
        assert len(doubled) <= 1, (trial, by_line)
        for line in doubled:  # once by the zombie, once by the heir
            runners = sorted(pid for n, _, pid in runs if n == line)
            assert runners == sorted([zombie.pid, heir.pid]), (trial, line)
    record.append(
        Figures(
            "zombie worker: SIGSTOP past its lease, then SIGCONT",
            trials,
            trials * tasks,
            lost,
            twice,
            ran_twice,
            "ran twice: at most the task in hand when paused; its late results dropped",
        )
    )
    assert (lost, twice) == (0, 0)
