"""The service's store of jobs' files: inputs by content, staged per job, outputs
packed per task, and what it removes (only its own)."""

import hashlib
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from scheduler.jobs.file_store import MIN_KEEP_SECONDS, FilesError, FileStore, store_of
from scheduler.jobs.journal import JobState


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(*files: tuple[str, bytes]) -> bytes:
    return json.dumps(
        [{"name": name, "size": len(data), "sha256": sha(data)} for name, data in files]
    ).encode()


def put(store: FileStore, data: bytes, name: str | None = None) -> None:
    writer = store.blob_writer(name or sha(data), len(data))
    try:
        writer.write(data)
        writer.finish()
    finally:
        writer.discard()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_lies_beside_its_journal_closed_to_others(tmp_path: Path) -> None:
    store = FileStore(store_of(tmp_path / "journal.sqlite3"))
    assert store.root == tmp_path / "journal-files"
    put(store, b"abc")
    assert mode(store.root) == mode(store.blobs) == 0o700
    assert mode(store.blobs / sha(b"abc")) == 0o600
    store.add_inputs(manifest(("a", b"abc")))
    assert all(mode(path) == 0o600 for path in store.manifests.iterdir())


def test_a_list_of_inputs_names_what_is_missing_and_only_that(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    listed = manifest(("data/a", b"one"), ("data/b", b"two"), ("copy", b"one"))
    first = store.add_inputs(listed)
    assert sorted(first.missing) == sorted({sha(b"one"), sha(b"two")})
    put(store, b"one")
    again = store.add_inputs(listed)
    assert again == (first.id, [sha(b"two")])  # the same list, the same id


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{}", 400, "not a list of inputs"),
        (b"[]", 400, "empty"),
        (manifest(("../x", b"a")), 400, "not a plain relative name"),
        (manifest(("/etc/x", b"a")), 400, "not a plain relative name"),
        (manifest(("a//b", b"a")), 400, "not a plain relative name"),
        (manifest(("a", b"a"), ("a", b"b")), 400, "named twice"),
        (manifest(("d", b"a"), ("d/e", b"b")), 400, "folder"),
        (json.dumps([{"name": "a", "size": 1, "sha256": "x"}]).encode(), 400, "not a list"),
        (manifest(("a", b"12345"), ("b", b"123456")), 413, "above the limit of 10"),
        (manifest(*((f"f{n}", b"") for n in range(4))), 413, "more than 3 inputs"),
        (manifest(("d/" + "n" * 256, b"a")), 400, "a part is over 255 bytes"),
    ],
)
def test_a_bad_list_of_inputs_is_refused_naming_what_is_wrong(
    tmp_path: Path, body: bytes, status: int, says: str
) -> None:
    store = FileStore(tmp_path / "files", max_bytes=10, max_files=3)
    with pytest.raises(FilesError, match=says) as refused:
        store.add_inputs(body)
    assert refused.value.status == status
    assert list(store.manifests.iterdir()) == []


def test_a_content_is_kept_only_if_it_has_the_sha256_it_is_named_by(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", max_bytes=10)
    with pytest.raises(FilesError, match="does not have sha256") as refused:
        put(store, b"forged", name=sha(b"genuine"))
    assert refused.value.status == 400
    with pytest.raises(FilesError, match="above the limit") as too_big:
        put(store, b"x" * 11)
    assert too_big.value.status == 413
    with pytest.raises(FilesError, match="64 lower-case hex"):
        store.blob_writer("../../etc/passwd", 1)
    assert list(store.blobs.iterdir()) == []
    assert list(store.incoming.iterdir()) == []  # nothing half-written stays


def test_a_list_must_give_the_sizes_of_the_contents_it_names(tmp_path: Path) -> None:
    """The bounds on a job's inputs add up the listed sizes: each is checked
    against the content it names (else one large content, listed many times
    as 0 bytes, would be staged past them)."""
    store = FileStore(tmp_path / "files", max_bytes=10)
    put(store, b"12345")
    understated = json.dumps([{"name": "a", "size": 0, "sha256": sha(b"12345")}]).encode()
    with pytest.raises(FilesError, match="listed as 0 bytes, its content has 5") as refused:
        store.add_inputs(understated)
    assert refused.value.status == 400
    # Listed before the content came: refused when the job would be given it.
    unsent = json.dumps([{"name": "b", "size": 0, "sha256": sha(b"678")}]).encode()
    inputs = store.add_inputs(unsent)
    put(store, b"678")
    with pytest.raises(FilesError, match="listed as 0 bytes, its content has 3"):
        store.give_job("0000000a", inputs.id, outputs=False)
    assert not store.has_job("0000000a")


def test_a_content_is_sent_with_its_length(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    with pytest.raises(FilesError, match="Content-Length") as refused:
        store.blob_writer(sha(b"x"), None)
    assert refused.value.status == 411


def test_a_full_store_refuses_more_contents(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", max_store_bytes=8)
    put(store, b"12345")
    with pytest.raises(FilesError, match="full") as full:
        store.blob_writer(sha(b"6789"), 4)
    assert full.value.status == 507


def test_a_job_gets_a_read_only_copy_of_its_inputs_and_a_folder_for_outputs(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "files")
    inputs = store.add_inputs(manifest(("data/a", b"one"), ("b", b"two")))
    with pytest.raises(FilesError, match="2 of the inputs' contents are not here") as missing:
        store.give_job("0b000001", inputs.id, outputs=True)
    assert missing.value.status == 409
    assert not store.has_job("0b000001")  # nothing half-made
    put(store, b"one")
    put(store, b"two")
    store.give_job("0b000001", inputs.id, outputs=True)
    files = store.task_files("0b000001")
    assert files is not None
    assert files.inputs is not None
    assert files.output_dir is not None
    staged = Path(files.inputs)
    assert (staged / "data" / "a").read_bytes() == b"one"
    assert mode(staged / "b") == 0o444
    assert mode(staged / "data") == 0o555
    # A copy: a task that makes its input writable spoils no later job's.
    assert (staged / "b").stat().st_ino != (store.blobs / sha(b"two")).stat().st_ino
    assert Path(files.output_dir).is_dir()
    assert store.keeps_outputs("0b000001")
    store.job_ended("0b000001")
    assert not staged.exists()
    assert store.has_job("0b000001")


def test_a_retry_is_given_its_jobs_inputs_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    put(store, b"one")
    store.give_job("0b000001", store.add_inputs(manifest(("a", b"one"))).id, outputs=False)
    store.job_ended("0b000001")
    assert store.give_again("0b000001", "0b000002")
    files = store.task_files("0b000002")
    assert files is not None
    assert files.inputs is not None
    assert files.output_dir is None
    assert (Path(files.inputs) / "a").read_bytes() == b"one"
    assert not store.give_again("0b000009", "0b00000a")  # a job without files
    assert store.task_files("0b00000a") is None


def test_a_job_on_the_fleet_alone_has_its_list_but_no_local_copy(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    put(store, b"one")
    store.give_job("0b000001", store.add_inputs(manifest(("a", b"one"))).id, False, stage=False)
    files = store.task_files("0b000001")
    assert files is not None
    assert files.inputs is not None
    assert not Path(files.inputs).exists()
    assert [(f.name, f.size) for f in store.inputs_of("0b000001")] == [("a", 3)]


def test_a_tasks_files_are_packed_by_its_label_and_nothing_else(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    store.give_job("0b000001", None, outputs=True)
    task = store.jobs / "0b000001" / "outputs" / "w.txt-3"
    (task / "d").mkdir(parents=True)
    (task / "d" / "x").write_bytes(b"ex")
    (task / "y").write_bytes(b"why")
    os.symlink("/etc/passwd", task / "link")  # not the worker's: never packed
    tar_path = store.pack_outputs("0b000001", "w.txt-3")
    assert tar_path is not None
    assert tar_path.parent == store.incoming
    with tarfile.open(tar_path) as tar:
        assert sorted(tar.getnames()) == ["d/x", "y"]
    assert store.pack_outputs("0b000001", "w.txt-4") is None
    for label in ("..", "../w.txt-3", "a/b"):
        with pytest.raises(FilesError, match="not a task's label"):
            store.pack_outputs("0b000001", label)


def test_only_the_stores_own_folders_are_removed(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    for job in ("0b000001", "0b000002", "0b000003"):
        store.give_job(job, None, outputs=True)
    stranger = store.jobs / "not-a-job-id"
    stranger.mkdir()
    store.remove_jobs(["0b000001", "../../elsewhere", "not-a-job-id"])
    assert not store.has_job("0b000001")
    assert stranger.is_dir()
    states = {"0b000002": JobState.RUNNING, "0b000003": None}
    store.sweep(states.get, JobState.FINAL)  # at start: jobs the journal lost go
    assert store.has_job("0b000002")
    assert not store.has_job("0b000003")
    assert stranger.is_dir()


def test_contents_unused_for_the_retention_are_pruned(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    put(store, b"old")
    put(store, b"new")
    long_ago = time.time() - MIN_KEEP_SECONDS - 60
    os.utime(store.blobs / sha(b"old"), (long_ago, long_ago))
    assert store.prune_blobs(0) == 1
    assert [p.name for p in store.blobs.iterdir()] == [sha(b"new")]
    store.add_inputs(manifest(("a", b"new")))  # a use renews it
    assert (store.blobs / sha(b"new")).stat().st_mtime > long_ago


def test_a_content_a_kept_job_names_stays_for_its_retry(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    put(store, b"input")
    store.give_job("0000000b", store.add_inputs(manifest(("a", b"input"))).id, outputs=False)
    long_ago = time.time() - MIN_KEEP_SECONDS - 60
    os.utime(store.blobs / sha(b"input"), (long_ago, long_ago))
    store.prune_blobs(0)
    assert store.has_blob(sha(b"input"))
    store.remove_jobs(["0000000b"])  # the journal forgot the job
    store.prune_blobs(0)
    assert not store.has_blob(sha(b"input"))


def test_files_someone_else_put_among_the_jobs_stop_nothing_and_stay(tmp_path: Path) -> None:
    """A note, a file or a link with a job's name, beside the jobs' folders: the
    pruning, the sweep at start and the forgetting of jobs neither trip on them
    nor remove them."""
    store = FileStore(tmp_path / "files")
    put(store, b"old")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    strays = {
        store.jobs / "notes.txt": "mine",
        store.jobs / "0000000c": "a file, not a folder",
        store.jobs / "0000000d": "a link",
    }
    for path, text in strays.items():
        if text == "a link":
            path.symlink_to(elsewhere, target_is_directory=True)
        else:
            path.write_text(text)
    long_ago = time.time() - MIN_KEEP_SECONDS - 60
    os.utime(store.blobs / sha(b"old"), (long_ago, long_ago))
    assert store.prune_blobs(0) == 1
    store.sweep({"0000000c": JobState.DONE}.get, JobState.FINAL)  # one ended, one unknown
    store.remove_jobs(["0000000c", "0000000d"])
    assert (store.jobs / "notes.txt").read_text() == "mine"
    assert (store.jobs / "0000000c").read_text() == "a file, not a folder"
    assert (store.jobs / "0000000d").is_symlink()
    assert elsewhere.is_dir()


def test_what_goes_while_contents_are_pruned_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload discarded, or `taskfleet prune` beside the service: an entry
    listed, then gone before it is looked at, stops nothing."""
    store = FileStore(tmp_path / "files")
    put(store, b"gone")
    listed = list(os.scandir(store.blobs))
    (store.blobs / sha(b"gone")).unlink()
    scandir = os.scandir

    def stale(path: Path) -> object:  # the listing made before the unlink
        return listed if path == store.blobs else scandir(path)

    monkeypatch.setattr(os, "scandir", stale)
    assert store.prune_blobs(0) == 0
    store.blob_writer(sha(b"next"), 4).discard()  # the store's size is read past it too


def test_a_task_that_would_take_its_job_past_its_limit_has_its_files_taken_back(
    tmp_path: Path,
) -> None:
    store = FileStore(tmp_path / "files", max_job_outputs=(2, 1000))
    store.give_job("0b000001", None, outputs=True)
    outputs = store.jobs / "0b000001" / "outputs"
    records = []
    for line in (1, 2):
        (outputs / f"w.txt-{line}").mkdir()
        (outputs / f"w.txt-{line}" / "a").write_bytes(b"a")
        (outputs / f"w.txt-{line}" / "b").write_bytes(b"b")
        named = [{"path": p, "size": 1, "sha256": sha(p.encode())} for p in ("a", "b")]
        records.append(json.dumps({
            "id": f"0b000001:1:{line}", "job": "0b000001", "file": "w.txt", "line": line,
            "task": "make", "status": "succeeded", "exit_code": 0, "worker": "local-1",
            "started_at": 0.0, "finished_at": 0.0, "duration_ms": 1.0, "error": None,
            "stdout": "", "stderr": "", "truncated": False, "files": named,
        }).encode() + b"\n")  # fmt: skip
    first, second = (json.loads(r) for r in store.admit("0b000001", records))
    assert len(first["files"]) == 2
    assert second["files"] == []
    assert "over the job's limit of 2 files" in second["files_error"]
    assert sorted(p.name for p in outputs.iterdir()) == ["w.txt-1"]
