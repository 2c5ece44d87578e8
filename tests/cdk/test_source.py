"""The source asset: what git tracks and an instance needs, the same zip for the same files."""

import subprocess
import zipfile
from pathlib import Path

import pytest
from cdk.source import SourceError, write_source_zip


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_only_tracked_files_that_instances_need(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    (repository / "src").mkdir(parents=True)
    (repository / "tests").mkdir()
    (repository / "src" / "a.py").write_text("print('a')\n")
    (repository / "install.sh").write_text("#!/bin/sh\n")
    (repository / "install.sh").chmod(0o755)
    (repository / "tests" / "test_a.py").write_text("")
    git(repository, "init", "-q")
    git(repository, "add", ".")
    (repository / ".env").write_text("AWS_SECRET_ACCESS_KEY=do-not-ship\n")  # untracked
    (repository / "src" / "scratch.py").write_text("")  # untracked

    first = write_source_zip(repository, tmp_path / "one.zip")
    with zipfile.ZipFile(first) as archive:
        assert sorted(archive.namelist()) == ["install.sh", "src/a.py"]
        assert archive.getinfo("install.sh").external_attr >> 16 == 0o100755
    second = write_source_zip(repository, tmp_path / "two.zip")
    assert first.read_bytes() == second.read_bytes()  # the asset hash is stable


def test_outside_a_checkout_it_says_why(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="what git tracks"):
        write_source_zip(tmp_path, tmp_path / "out.zip")
