import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from worker.output_pack import PackError, key_sha256, object_key, pack, unpack
from worker.outputs import collect
from worker.result import OutputFile


def gathered_task(tmp_path: Path) -> tuple[Path, tuple[OutputFile, ...]]:
    task = tmp_path / "task"
    (task / "deep").mkdir(parents=True)
    for number in range(300):  # many small files: one tar
        (task / "deep" / f"{number}.txt").write_text(str(number))
    (task / "a.bin").write_bytes(b"\1" * 5000)
    collected = collect(task, tmp_path / "gathered")
    return tmp_path / "gathered", collected.files


def test_files_travel_in_one_tar_and_come_out_as_they_went_in(tmp_path: Path) -> None:
    gathered, files = gathered_task(tmp_path)
    sha256 = pack(gathered, files, tmp_path / "task.tar")
    assert sha256 == hashlib.sha256((tmp_path / "task.tar").read_bytes()).hexdigest()
    unpacked = unpack(tmp_path / "task.tar", tmp_path / "out")
    assert sorted(unpacked, key=lambda f: f.path) == sorted(files, key=lambda f: f.path)
    assert (tmp_path / "out" / "deep" / "299.txt").read_text() == "299"
    assert len(list((tmp_path / "out" / "deep").iterdir())) == 300


def test_the_same_files_make_the_same_tar(tmp_path: Path) -> None:
    gathered, files = gathered_task(tmp_path)
    first = pack(gathered, files, tmp_path / "first.tar")
    (gathered / "a.bin").touch()  # a later time: not in the tar
    assert pack(gathered, files, tmp_path / "second.tar") == first


def test_a_tars_key_names_its_job_its_task_and_its_content() -> None:
    key = object_key("j1", 2, 17, "a" * 64)
    assert key == f"outputs/j1/2-17/{'a' * 64}.tar"
    assert key_sha256(key) == "a" * 64
    assert key_sha256("outputs/j1/2-17/x.tar") is None


def forged(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "forged.tar"
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            member.size = len(data) if member.isreg() else 0
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (entry("../x"), "leads out of its folder"),
        (entry("/etc/cron.d/x"), "leads out of its folder"),
        (entry("a/./b"), "leads out of its folder"),
        (entry("pw", tarfile.SYMTYPE, "/etc/passwd"), "not a regular file"),
        (entry("hard", tarfile.LNKTYPE, "/etc/passwd"), "not a regular file"),
        (entry("dev", tarfile.CHRTYPE), "not a regular file"),
        (entry("dir", tarfile.DIRTYPE), "not a regular file"),
    ],
)
def test_a_tar_with_an_escape_or_a_link_is_refused_and_writes_nothing_outside(
    tmp_path: Path, member: tarfile.TarInfo, reason: str
) -> None:
    with pytest.raises(PackError, match=reason):
        unpack(forged(tmp_path, (member, b"x")), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "x").exists()


def test_a_name_twice_or_a_file_past_the_limits_is_refused(tmp_path: Path) -> None:
    twice = forged(tmp_path, (entry("a"), b"1"), (entry("a"), b"2"))
    with pytest.raises(PackError, match="twice"):
        unpack(twice, tmp_path / "out1")
    many = forged(tmp_path, (entry("a"), b"1"), (entry("b"), b"2"))
    with pytest.raises(PackError, match="more than 1 files"):
        unpack(many, tmp_path / "out2", max_files=1)
    with pytest.raises(PackError, match="or 1 bytes"):
        unpack(many, tmp_path / "out3", max_bytes=1)


def test_a_file_where_a_folder_is_named_is_refused(tmp_path: Path) -> None:
    clash = forged(tmp_path, (entry("a"), b"1"), (entry("a/b"), b"2"))
    with pytest.raises(PackError, match="'a/b'"):
        unpack(clash, tmp_path / "out")


def test_what_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(PackError, match="not a tar"):
        unpack(tmp_path / "junk.tar", tmp_path / "out")


def test_a_name_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    # No file name holds NUL; the operating system would refuse it with an error
    # of another kind than the tar's refusals.
    member = tarfile.TarInfo("ab")
    member.pax_headers = {"path": "a\0b"}
    member.size = 1
    path = tmp_path / "nul.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(b"x"))
    with pytest.raises(PackError, match="leads out of its folder"):
        unpack(path, tmp_path / "out")
