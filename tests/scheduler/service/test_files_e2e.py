"""End to end: files in and out of a scheduler service's jobs (``submit --upload
--output-dir``, ``results --files``), the installed CLI and a real service."""

import stat
from pathlib import Path

import httpx
import pytest

from scheduler.jobs.file_store import store_of
from scheduler.jobs.retention import SECONDS_PER_DAY
from tests.conftest import (
    StartScheduler,
    WriteWorkload,
    records_by_line,
    run_cli,
    service_headers,
    sha,
    tree,
    wait_for,
)

pytestmark = pytest.mark.e2e


def user_files(tmp_path: Path) -> Path:
    """A user's folder: a directory and a file to upload."""
    user = tmp_path / "user"
    (user / "data" / "sub").mkdir(parents=True)
    (user / "data" / "a.txt").write_text("alpha\n")
    (user / "data" / "sub" / "b.txt").write_text("beta\n")
    (user / "big.bin").write_bytes(bytes(range(256)) * 1000)
    return user


def test_a_service_jobs_tasks_read_their_inputs_and_their_files_come_back(
    scheduler_service: StartScheduler, workload: WriteWorkload, tmp_path: Path
) -> None:
    service = scheduler_service()
    user = user_files(tmp_path)
    tasks = workload(
        "cat data/a.txt data/sub/b.txt > both.txt && cat big.bin > copy.bin",  # 1
        "mkdir -p d && wc -c < big.bin > d/size.txt",  # 2
        "stat -c %a data/a.txt data big.bin",  # 3: inputs are read-only
        "echo half > half.txt; exit 3",  # 4: failed: its files are not kept
        name="w.txt",
    )
    submit = ["submit", tasks, "--scheduler", service.url, "--upload", "data", "--upload",
              "big.bin"]  # fmt: skip
    done = run_cli(*submit, "--output-dir", "out", cwd=user)
    assert done.returncode == 1, done.stderr  # line 4 fails
    assert "inputs: 3 files, 3 contents sent, 0 on the scheduler already" in done.stderr
    by_line = records_by_line(done.stdout)
    big = bytes(range(256)) * 1000
    assert by_line[1]["files"] == [
        {"path": "both.txt", "size": 11, "sha256": sha(b"alpha\nbeta\n")},
        {"path": "copy.bin", "size": len(big), "sha256": sha(big)},
    ]
    assert by_line[2]["files"] == [{"path": "d/size.txt", "size": 7, "sha256": sha(b"256000\n")}]
    assert by_line[3]["stdout"] == "444\n555\n444\n"
    assert by_line[4]["files"] == []
    assert "not kept" in by_line[4]["files_error"]
    out = user / "out"
    assert tree(out) == {
        "w.txt-1/both.txt": b"alpha\nbeta\n",
        "w.txt-1/copy.bin": big,
        "w.txt-2/d/size.txt": b"256000\n",
    }
    assert (user / "data" / "a.txt").read_text() == "alpha\n"  # the user's own untouched

    # The same inputs again: nothing is sent twice.
    again = run_cli(*submit, "--keep-files", cwd=user)
    assert "inputs: 3 files, 0 contents sent, 3 on the scheduler already" in again.stderr
    job = records_by_line(again.stdout)[1]["job"]
    # Its files, fetched later, are those its records name.
    later = run_cli("results", job, "--scheduler", service.url, "--files", "later", cwd=user)
    assert later.returncode == 0, later.stderr
    assert tree(user / "later") == tree(out)
    assert {line: r["files"] for line, r in records_by_line(later.stdout).items()} == {
        line: r["files"] for line, r in by_line.items()
    }

    store = store_of(service.journal)
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    blobs = list((store / "blobs").iterdir())
    assert len(blobs) == 3
    assert all(stat.S_IMODE(b.stat().st_mode) == 0o600 for b in blobs)


def test_a_retry_gets_its_jobs_inputs_again(
    scheduler_service: StartScheduler, workload: WriteWorkload, tmp_path: Path
) -> None:
    service = scheduler_service()
    user = user_files(tmp_path)
    flag = tmp_path / "second-time"
    tasks = workload(f"test -e {flag} && cat data/a.txt > got.txt", name="w.txt")
    first = run_cli("submit", tasks, "-s", service.url, "--upload", "data", "--keep-files",
                    cwd=user)  # fmt: skip
    assert first.returncode == 1, first.stderr
    job = records_by_line(first.stdout)[1]["job"]
    flag.touch()
    retried = run_cli("retry", job, "-s", service.url, cwd=user)
    assert retried.returncode == 0, retried.stderr
    new_job = records_by_line(retried.stdout)[1]["job"]
    fetched = run_cli("results", new_job, "-s", service.url, "--files", "out", cwd=user)
    assert fetched.returncode == 0, fetched.stderr
    assert tree(user / "out") == {"w.txt-1/got.txt": b"alpha\n"}


def test_bad_uploads_are_refused_before_anything_is_submitted(
    scheduler_service: StartScheduler, workload: WriteWorkload, tmp_path: Path
) -> None:
    service = scheduler_service()
    user = user_files(tmp_path)
    tasks = workload("true")
    (user / "used").mkdir()
    (user / "used" / "x").write_text("another run's")
    for extra, says in (
        (["--upload", "missing"], "--upload missing: no such file or directory"),
        # submit has no --resume: the message does not offer it.
        (
            ["--output-dir", "used"],
            "not empty (another run's files would mix with this one's; give an empty one)",
        ),
        (["--upload", "data", "--upload-max-files", "1"], "more than 1 files"),
        (["--upload", "big.bin", "--upload-max-bytes", "1000"], "more than 1000 bytes"),
    ):
        refused = run_cli("submit", tasks, "-s", service.url, *extra, cwd=user)
        assert refused.returncode == 2
        [line] = refused.stderr.strip().splitlines()  # one line
        assert line.startswith("taskfleet: ")
        assert says in line
    headers = service_headers()
    assert httpx.get(f"{service.url}/jobs", headers=headers).json()["jobs"] == []
    assert not list((store_of(service.journal) / "blobs").iterdir())


def test_a_content_whose_bytes_do_not_match_its_sha256_is_refused(
    scheduler_service: StartScheduler,
) -> None:
    service = scheduler_service()
    headers = {**service_headers(), "Content-Type": "application/octet-stream"}
    answer = httpx.put(f"{service.url}/blobs/{sha(b'genuine')}", content=b"forged", headers=headers)
    assert answer.status_code == 400
    assert "does not have sha256" in answer.json()["error"]
    store = store_of(service.journal)
    assert not list((store / "blobs").iterdir())
    assert not list((store / "incoming").iterdir())


def test_a_jobs_files_go_when_the_service_forgets_the_job(
    scheduler_service: StartScheduler, workload: WriteWorkload, tmp_path: Path
) -> None:
    # Kept 10 s, not 0: with no retention at all the job may be forgotten
    # between its last record and the summary `submit` asks for after it.
    service = scheduler_service("--keep-days", str(10 / SECONDS_PER_DAY))
    store = store_of(service.journal)
    not_ours = store / "jobs" / "notes.txt"  # something the service did not store
    not_ours.write_text("mine")
    done = run_cli("submit", workload("echo x > x.txt"), "-s", service.url, "--keep-files")
    assert done.returncode == 0, done.stderr
    job = records_by_line(done.stdout)[1]["job"]
    headers = service_headers()
    wait_for(lambda: httpx.get(f"{service.url}/jobs/{job}", headers=headers).status_code == 404)
    wait_for(lambda: not (store / "jobs" / job).exists())
    assert not_ours.read_text() == "mine"
    gone = run_cli("results", job, "-s", service.url, "--files", str(tmp_path / "out"))
    assert gone.returncode == 2
    assert "no job" in gone.stderr.lower()
