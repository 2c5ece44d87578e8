"""Fleet tasks' directories on an instance, against the session's moto_server."""

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from scheduler.fleet.job_inputs import ship_inputs
from tests.conftest import needs_root_tools
from worker.bundle import BundleFiles
from worker.execute import TaskRunner, TaskUser, plan
from worker.fleet_dirs import FleetTaskDirs
from worker.inputs import check_uploads
from worker.output_pack import key_sha256
from worker.result import Outcome, Status


def run(dirs: FleetTaskDirs, files: BundleFiles, command: str, line: int = 1) -> Outcome:
    place = dirs.make("job1", files)
    runner = TaskRunner(10)
    try:
        outcome = runner.run(command, plan(command), None, str(place.path))
        return dirs.finish(place, files, ("job1", 1, line), outcome)
    finally:
        runner.close()
        dirs.discard(place)


def test_a_task_sees_its_inputs_and_its_files_go_back_as_one_tar(s3: Any, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("shared\n")
    ship_inputs(s3, "files", "job1", check_uploads([str(tmp_path / "in.txt")]))
    dirs = FleetTaskDirs(tmp_path / "worker", lambda: s3)
    files = BundleFiles("files", inputs=True, outputs=True)
    command = "mkdir d && cat in.txt > d/copy.txt && ln -s /etc/passwd pw && echo x > ../x"
    outcome = run(dirs, files, command)
    assert outcome.status == Status.SUCCEEDED, outcome
    assert (outcome.files, outcome.files_error) == (None, "refused: pw (a symbolic link)")
    assert outcome.files_object is not None
    assert outcome.files_object.startswith("outputs/job1/1-1/")
    tar = tmp_path / "got.tar"
    tar.write_bytes(s3.get_object(Bucket="files", Key=outcome.files_object)["Body"].read())
    with tarfile.open(tar) as opened:
        assert opened.getnames() == ["d/copy.txt"]  # its input is not sent back
    assert key_sha256(outcome.files_object) is not None
    assert list((tmp_path / "worker" / "tasks").iterdir()) == []  # removed


@pytest.mark.parametrize("command", ["echo half > half.txt; exit 3", "true"])
def test_a_task_that_failed_or_left_nothing_sends_nothing_and_leaves_nothing(
    s3: Any, tmp_path: Path, command: str
) -> None:
    dirs = FleetTaskDirs(tmp_path / "worker", lambda: s3)
    outcome = run(dirs, BundleFiles("files", outputs=True), command)
    assert (outcome.files, outcome.files_object) == ((), None)
    if outcome.status == Status.FAILED:
        assert outcome.files_error == "1 files not kept: the task did not succeed"
    assert "Contents" not in s3.list_objects_v2(Bucket="files")
    assert list((tmp_path / "worker" / "tasks").iterdir()) == []


def test_a_job_whose_inputs_are_missing_fails_its_tasks(s3: Any, tmp_path: Path) -> None:
    dirs = FleetTaskDirs(tmp_path / "worker", lambda: s3)
    with pytest.raises(Exception, match="NoSuchKey"):
        dirs.make("job1", BundleFiles("files", inputs=True))
    assert list((tmp_path / "worker" / "tasks").iterdir()) == []


def test_leftovers_of_an_earlier_worker_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "worker" / "tasks" / "task-old").mkdir(parents=True)
    FleetTaskDirs(tmp_path / "worker", lambda: None)
    assert list((tmp_path / "worker" / "tasks").iterdir()) == []


def test_a_directory_that_cannot_be_removed_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A process the task left behind, still writing there, makes rmtree fail.
    dirs = FleetTaskDirs(tmp_path / "worker", lambda: None)
    place = dirs.make("job1", None)

    def still_written(path: Path) -> None:
        raise OSError(39, "Directory not empty", str(path))

    monkeypatch.setattr("worker.fleet_dirs.remove_tree", still_written)
    dirs.discard(place)  # the task's outcome stands; the next start clears the rest
    assert "was not removed: [Errno 39] Directory not empty" in caplog.text


def test_a_task_user_reads_its_inputs_and_its_outputs_come_back(s3: Any) -> None:
    """As on an instance: the task runs as a user of its own, which may read the
    job's inputs, not change them, and write its outputs in its own directory."""
    needs_root_tools()
    user = TaskUser.named("nobody")
    # A worker's folder the task user may pass through (pytest's are 0700).
    root = Path(tempfile.mkdtemp(prefix="taskfleet-test-"))
    root.chmod(0o711)
    try:
        (root / "in.txt").write_text("shared\n")
        ship_inputs(s3, "files", "job1", check_uploads([str(root / "in.txt")]))
        dirs = FleetTaskDirs(root / "worker", lambda: s3, owner=(user.uid, user.gid))
        files = BundleFiles("files", inputs=True, outputs=True)
        place = dirs.make("job1", files)
        runner = TaskRunner(10, user)
        try:
            command = "id -un > who.txt; cat in.txt >> who.txt; echo x >> in.txt || echo refused"
            outcome = runner.run(command, plan(command), None, str(place.path))
            assert (place.path / "who.txt").read_text() == "nobody\nshared\n"
            outcome = dirs.finish(place, files, ("job1", 1, 1), outcome)
        finally:
            runner.close()
            dirs.discard(place)
        assert outcome.status == Status.SUCCEEDED, outcome
        assert outcome.stdout == "refused\n"  # the input is read-only to it
        assert outcome.files_object is not None
        tar = root / "got.tar"
        tar.write_bytes(s3.get_object(Bucket="files", Key=outcome.files_object)["Body"].read())
        with tarfile.open(tar) as opened:
            assert opened.getnames() == ["who.txt"]
    finally:
        shutil.rmtree(root)
