"""End to end: files in and out of fleet jobs (`run --remote --upload --output-dir`).

The deployed stack on the emulator, the local fleet (its workers run in
directories of their own, not the user's: the files really travel through the
job-files bucket) and the installed command.
"""

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import StartScheduler, WriteWorkload, records_by_line, run_cli, sha, tree
from tests.scheduler.fleet.test_remote_e2e import client_settings

pytestmark = pytest.mark.e2e

#: The shared input and the tasks reading it: as the issue asks (each task reads
#: a slice of it and writes it out, so every output differs).
INPUT_BYTES = 50 * 1024 * 1024
TASKS = 200
SLICE = 1000


def run_remote(environment: dict[str, str], cwd: Path, *args: str) -> Any:
    return run_cli(
        "run", *args, "--remote", "--stack", "Taskfleet", env=environment, cwd=cwd, timeout=300
    )


def test_tasks_read_a_shared_input_fetched_once_per_instance_and_every_output_comes_back(
    deployed: tuple[dict[str, str], dict[str, str]],
    workload: WriteWorkload,
    tmp_path: Path,
    state: Path,
) -> None:
    _, environment = deployed
    user = tmp_path / "user"
    user.mkdir()
    big = os.urandom(INPUT_BYTES)
    (user / "big.bin").write_bytes(big)
    lines = [
        f"tail -c +{task * SLICE + 1} big.bin | head -c {SLICE} > out.bin" for task in range(TASKS)
    ]
    path = workload(*lines, name="w.txt")
    summary_path = tmp_path / "summary.json"
    done = run_remote(
        environment, user, path, "--upload", "big.bin", "--output-dir", "out",
        "--summary", str(summary_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    by_line = records_by_line(done.stdout)
    assert sorted(by_line) == list(range(1, TASKS + 1))
    for line, record in by_line.items():
        expected = big[(line - 1) * SLICE : line * SLICE]
        assert record["files"] == [{"path": "out.bin", "size": SLICE, "sha256": sha(expected)}]
        assert (user / "out" / f"w.txt-{line}" / "out.bin").read_bytes() == expected
    assert sorted(p.name for p in user.iterdir()) == ["big.bin", "out"]  # nothing else here
    instances = {record["worker"] for record in by_line.values()}
    for instance in instances:
        files = state / f"{instance}.state" / "files"
        # One copy of the input on each instance, and nothing of any task left.
        assert [p.name for p in (files / "inputs" / "blobs").iterdir()] == [sha(big)]
        assert list((files / "tasks").iterdir()) == []
    # Every instance that ran a task of the job fetched its input: those the
    # records name, and any whose run of a task was not the one kept (a task
    # may run twice: a bundle taken over after its lease ran out under load).
    fetched = {
        folder.name.removesuffix(".state")
        for folder in state.glob("*.state")
        if (folder / "files" / "inputs" / "blobs" / sha(big)).exists()
    }
    assert instances <= fetched
    # The GETs, as the job's usage counts them: the input and the job's list once
    # per instance, each task's tar once (by the client), and the client's HEAD.
    usage = json.loads(summary_path.read_text())["usage"]
    assert usage["s3_reads"] == 2 * len(fetched) + TASKS + 1
    # The input and its list; a tar a task, and one more for each task run again
    # (on any instance, so how many is not known here).
    assert usage["s3_writes"] >= 2 + TASKS
    assert usage["s3_bytes"] >= INPUT_BYTES * (1 + len(instances))
    assert "S3 " in done.stderr  # the cost line counts them


def test_a_task_writing_10000_files_sends_one_object(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload, tmp_path: Path
) -> None:
    outputs, environment = deployed
    path = workload("mkdir many && seq 1 10000 | split -l 1 -a 4 -d - many/f", name="w.txt")
    done = run_remote(environment, tmp_path, path, "--output-dir", "out")
    assert done.returncode == 0, done.stderr
    (record,) = records_by_line(done.stdout).values()
    assert len(record["files"]) == 10_000
    assert record["files"][0] == {"path": "many/f0000", "size": 2, "sha256": sha(b"1\n")}
    assert (tmp_path / "out" / "w.txt-1" / "many" / "f9999").read_text() == "10000\n"
    # One object for the task: run twice (a worker that took its bundle over
    # after a lease ran out under load), it makes the same tar, at the same key.
    s3: Any = boto3.client("s3", **client_settings(environment))
    listed = s3.list_objects_v2(
        Bucket=outputs["JobFilesBucket"], Prefix=f"outputs/{record['job']}/"
    )
    assert [item["Key"] for item in listed["Contents"]] == [record["files_object"]]


def test_escapes_are_refused_and_named_and_nothing_lands_outside_the_output_dir(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    outside = tmp_path / "outside.txt"  # on the instance: this machine, here
    path = workload(
        f"echo x > ../x; echo y > {outside}; ln -s /etc/passwd pw; echo ok > ok.txt",
        name="w.txt",
    )
    user = tmp_path / "user"
    user.mkdir()
    done = run_remote(environment, user, path, "--output-dir", "out")
    assert done.returncode == 0, done.stderr
    (record,) = records_by_line(done.stdout).values()
    assert record["files"] == [{"path": "ok.txt", "size": 3, "sha256": sha(b"ok\n")}]
    assert record["files_error"] == "refused: pw (a symbolic link)"
    assert tree(user) == {"out/w.txt-1/ok.txt": b"ok\n"}
    assert not (user / "out" / "w.txt-1" / "pw").is_symlink()
    assert not (user / "x").exists()
    # (A tar naming ../x, an absolute path or a link is refused as it is
    # unpacked, and named in the record: tests/scheduler/fleet/test_job_outputs.py.)


def test_the_same_workload_gives_the_same_files_locally_and_on_the_fleet(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    (user / "data" / "in.txt").write_text("input\n")
    path = workload(
        "mkdir -p a/b && cat data/in.txt > a/b/copy.txt && seq 1 2000 > n.txt",
        "ln -s /etc/passwd pw && echo kept > kept.txt",
        "echo half > half.txt; exit 3",  # failed: its files are not kept
        "true",  # leaves nothing
        "sleep 5",  # a built-in sleep has no directory
        "stat -c '%a' data/in.txt data && ls",  # the inputs: read-only, as locally
        name="w.txt",
    )
    local = run_cli("run", path, "--upload", "data", "--output-dir", "local", "-w", "2", cwd=user)
    remote = run_remote(environment, user, path, "--upload", "data", "--output-dir", "remote")
    assert (local.returncode, remote.returncode) == (1, 1), remote.stderr  # line 3
    local_records, remote_records = records_by_line(local.stdout), records_by_line(remote.stdout)
    for line in range(1, 7):
        here, there = local_records[line], remote_records[line]
        assert (here["status"], here["stdout"]) == (there["status"], there["stdout"]), line
        assert (here["files"], here["files_error"]) == (there["files"], there["files_error"])
    assert local_records[6]["stdout"] == "444\n555\ndata\n"
    assert tree(user / "local") == tree(user / "remote")
    assert sorted(tree(user / "remote")) == [
        "w.txt-1/a/b/copy.txt",
        "w.txt-1/n.txt",
        "w.txt-2/kept.txt",
    ]


def test_a_detached_jobs_files_are_kept_and_fetched_later_from_the_stack(
    deployed: tuple[dict[str, str], dict[str, str]], workload: WriteWorkload, tmp_path: Path
) -> None:
    _, environment = deployed
    path = workload("echo one > one.txt", "mkdir d && echo two > d/two.txt", "exit 3", name="w.txt")
    submitted = run_cli(
        "run", path, "--remote", "--stack", "Taskfleet", "--detach", "--keep-files",
        env=environment, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    done = run_cli(
        "results", job, "--stack", "Taskfleet", "--follow", "--files", "out",
        env=environment, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    by_line = records_by_line(done.stdout)
    assert by_line[1]["files"] == [{"path": "one.txt", "size": 4, "sha256": sha(b"one\n")}]
    assert by_line[2]["files"] == [{"path": "d/two.txt", "size": 4, "sha256": sha(b"two\n")}]
    assert (by_line[3]["status"], by_line[3]["files"]) == ("failed", [])
    assert tree(tmp_path / "out") == {"w.txt-1/one.txt": b"one\n", "w.txt-2/d/two.txt": b"two\n"}
    again = run_cli(
        "results", job, "--stack", "Taskfleet", "--files", "out", env=environment, cwd=tmp_path
    )
    assert again.returncode == 2
    assert again.stderr.startswith("taskfleet: --files out: not empty")


def test_a_scheduler_services_fleet_job_gets_its_inputs_and_gives_back_its_files(
    deployed: tuple[dict[str, str], dict[str, str]],
    workload: WriteWorkload,
    scheduler_service: StartScheduler,
    tmp_path: Path,
) -> None:
    _, environment = deployed
    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    (user / "data" / "in.txt").write_text("input\n")
    path = workload(
        "mkdir -p a/b && cat data/in.txt > a/b/copy.txt",
        "stat -c '%a' data/in.txt data && echo kept > kept.txt",
        "echo half > half.txt; exit 3",  # failed: its files are not kept
        name="w.txt",
    )
    service = scheduler_service("--stack", "Taskfleet", env=environment)
    submit = ["submit", path, "--scheduler", service.url, "--upload", "data"]
    local = run_cli(*submit, "--output-dir", "local", env=environment, cwd=user)
    remote = run_cli(*submit, "--remote", "--output-dir", "remote", env=environment, cwd=user,
                     timeout=300)  # fmt: skip
    assert (local.returncode, remote.returncode) == (1, 1), remote.stderr  # line 3
    # The service had the input from the local job: the fleet job sent nothing.
    assert "inputs: 1 files, 0 contents sent, 1 on the scheduler already" in remote.stderr
    local_records, remote_records = records_by_line(local.stdout), records_by_line(remote.stdout)
    assert {r["worker"] for r in remote_records.values()} & {"local-1", "local-2"} == set()
    for line in range(1, 4):
        here, there = local_records[line], remote_records[line]
        assert (here["status"], here["stdout"]) == (there["status"], there["stdout"]), line
        assert (here["files"], here["files_error"]) == (there["files"], there["files_error"])
    assert remote_records[2]["stdout"] == "444\n555\n"
    assert (
        tree(user / "remote")
        == tree(user / "local")
        == {
            "w.txt-1/a/b/copy.txt": b"input\n",
            "w.txt-2/kept.txt": b"kept\n",
        }
    )
    # Hybrid: whichever side a task ran on, the same files. (Which side takes which
    # task is the dispatcher's choice; one run here put two on the fleet, one local.)
    hybrid = run_cli(*submit, "--hybrid", "--output-dir", "hybrid", env=environment, cwd=user,
                     timeout=300)  # fmt: skip
    assert hybrid.returncode == 1, hybrid.stderr
    hybrid_records = records_by_line(hybrid.stdout)
    for line in range(1, 4):
        assert hybrid_records[line]["files"] == local_records[line]["files"], line
    assert tree(user / "hybrid") == tree(user / "local")
