import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from worker.output_pack import PackError, pack, unpack
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


def test_files_travel_in_one_tar_and_come_out_as_the_record_says(tmp_path: Path) -> None:
    gathered, files = gathered_task(tmp_path)
    pack(gathered, files, tmp_path / "task.tar")
    unpack(tmp_path / "task.tar", files, tmp_path / "out")
    assert (tmp_path / "out" / "deep" / "299.txt").read_text() == "299"
    assert len(list((tmp_path / "out" / "deep").iterdir())) == 300


def forged(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "forged.tar"
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        entry("../x"),
        entry("/etc/cron.d/x"),
        entry("pw", tarfile.SYMTYPE, "/etc/passwd"),
        entry("hard", tarfile.LNKTYPE, "/etc/passwd"),
        entry("dev", tarfile.CHRTYPE),
    ],
)
def test_a_tar_with_an_escape_or_a_link_is_refused_and_writes_nothing(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    data = b"x"
    record = [OutputFile(member.name, len(data), hashlib.sha256(data).hexdigest())]
    with pytest.raises(PackError):
        unpack(forged(tmp_path, member, data), record, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "x").exists()


def test_a_file_altered_on_the_way_is_refused(tmp_path: Path) -> None:
    path = forged(tmp_path, entry("a.txt"), b"evil")
    record = [OutputFile("a.txt", 4, hashlib.sha256(b"good").hexdigest())]
    with pytest.raises(PackError, match="does not match its sha256"):
        unpack(path, record, tmp_path / "out")
