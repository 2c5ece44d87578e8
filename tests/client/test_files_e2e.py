"""End to end: ``taskfleet run --upload ... --output-dir ...``, the installed CLI."""

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import StartScheduler, WriteWorkload, run_cli

pytestmark = pytest.mark.e2e


def records_by_line(text: str) -> dict[int, dict]:  # type: ignore[type-arg]
    records = (json.loads(line) for line in text.splitlines() if line)
    return {record["line"]: record for record in records}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_tasks_read_the_uploads_and_their_files_come_back(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    (user / "data" / "in.txt").write_text("input\n")
    (user / "big.bin").write_bytes(bytes(range(256)) * 4000)
    tasks = workload(
        "cat data/in.txt big.bin > out.bin",  # 1
        "mkdir -p deep/er && seq 1 3 > deep/er/n.txt && ln -s /etc/passwd pw",  # 2
        "echo half > half.csv; exit 3",  # 3
        "echo loose > ../escaped; echo gone > /dev/null",  # 4
        "pwd > where.txt",  # 5
        "stat -c '%a %h' big.bin data/in.txt data",  # 6: inputs are read-only and shared
        "sleep 5",  # 7: a built-in sleep has no directory
        name="w.txt",
    )
    done = run_cli(
        "run", tasks, "--upload", "data", "--upload", "big.bin", "--output-dir", "out",
        "-w", "2", cwd=user,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # line 3 fails
    by_line = records_by_line(done.stdout)
    out = user / "out"
    expected = b"input\n" + bytes(range(256)) * 4000
    assert by_line[1]["files"] == [
        {"path": "out.bin", "size": len(expected), "sha256": sha(expected)}
    ]
    assert (out / "w.txt-1" / "out.bin").read_bytes() == expected
    assert by_line[2]["files"] == [
        {"path": "deep/er/n.txt", "size": 6, "sha256": sha(b"1\n2\n3\n")}
    ]
    assert by_line[2]["files_error"] == "refused: pw (a symbolic link)"
    assert not (out / "w.txt-2" / "pw").exists()
    assert (by_line[3]["status"], by_line[3]["files"]) == ("failed", [])
    assert by_line[3]["files_error"] == "1 files not kept: the task did not succeed"
    assert (by_line[4]["files"], by_line[4]["files_error"]) == ([], None)
    where = (out / "w.txt-5" / "where.txt").read_text().strip()
    assert where != str(user)
    assert not Path(where).exists()
    # Read-only (root writes through any mode: tests/worker/test_inputs.py tries a
    # write where it can), and files are links to one copy (its link count: the
    # staged copy and this task's at least), not a copy a task.
    modes = [line.split() for line in by_line[6]["stdout"].splitlines()]
    assert [mode for mode, _ in modes] == ["444", "444", "555"]
    assert all(int(links) >= 2 for _, links in modes[:2])
    assert by_line[7]["files"] is None
    assert sorted(p.name for p in out.iterdir()) == ["w.txt-1", "w.txt-2", "w.txt-5"]
    assert sorted(p.name for p in user.iterdir()) == ["big.bin", "data", "out"]  # nothing else
    assert (user / "data" / "in.txt").read_text() == "input\n"


def test_a_resumed_run_adds_the_files_of_the_tasks_it_runs(
    workload: WriteWorkload, tmp_path: Path
) -> None:
    (tmp_path / "flag.txt").write_text("on")
    tasks = workload("echo one > one.txt", "cat flag.txt > two.txt", name="w.txt")
    results = str(tmp_path / "results.jsonl")
    first = run_cli("run", tasks, "--output-dir", "out", "-o", results, cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # no flag.txt without --upload
    again = run_cli("run", tasks, "--output-dir", "out", "-o", results, cwd=tmp_path)
    assert again.returncode == 2
    assert "--output-dir out: not empty" in again.stderr
    assert "or --resume that run" in again.stderr
    resumed = run_cli(
        "run", tasks, "--output-dir", "out", "--resume", results, "-o", results,
        "--upload", "flag.txt", cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["w.txt-1", "w.txt-2"]
    assert (out / "w.txt-2" / "two.txt").read_text() == "on"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--upload", "nothing-here"], "--upload nothing-here: no such file or directory"),
        (["--upload", "data", "--upload-max-bytes", "3"], "more than 3 bytes in all"),
        (["--upload", "data", "--upload-max-files", "0"], "more than 0 files"),
        (["--output-dir", "data/a"], "--output-dir data/a: not a directory"),
        (["--remote", "--stack", "s", "--detach"], "--output-dir needs an attached run"),
        (["--keep-files"], "--keep-files needs --remote"),
    ],
)
def test_what_cannot_be_done_is_refused_in_one_line_before_anything_runs(
    workload: WriteWorkload, tmp_path: Path, arguments: list[str], message: str
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("abcd")
    tasks = workload("echo ran > ran.txt", name="w.txt")
    done = run_cli("run", tasks, "--output-dir", "out", *arguments, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("taskfleet: ")
    assert message in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()


def test_files_of_a_service_job_that_kept_none_are_refused(
    tmp_path: Path, workload: WriteWorkload, scheduler_service: StartScheduler
) -> None:
    service = scheduler_service()
    done = run_cli("submit", workload("echo ran > ran.txt"), "-s", service.url)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout.splitlines()[0])["job"]
    refused = run_cli("results", job, "-s", service.url, "--files", "out", cwd=tmp_path)
    assert (refused.returncode, refused.stderr) == (
        2,
        f"taskfleet: --files: job {job} kept no files (submit --output-dir/--keep-files)\n",
    )
    assert not (tmp_path / "out").exists()
