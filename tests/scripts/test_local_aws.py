"""scripts/local_aws.py as a new user meets it: any Python, bad settings, a
failed `up`, a `down` that returns only once everything has stopped."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import local_aws

REPOSITORY = Path(__file__).parents[2]


def test_a_plain_python_runs_it_with_the_project_venv(tmp_path: Path) -> None:
    plain = shutil.which("python3", path="/usr/bin:/bin")
    if plain is None or Path(plain).resolve() == Path(sys.executable).resolve():
        pytest.skip("no system Python apart from this one")
    state = tmp_path / "state"
    (state / "metadata").mkdir(parents=True)
    (state / "emulator.json").write_text(json.dumps({"port": 1, "pid": 1}))
    # As a file, from another folder: the script itself finds the project's
    # packages (its metadata module, here) by running again in the venv.
    done = subprocess.run(
        [plain, str(REPOSITORY / "scripts" / "local_aws.py"), "interrupt", "i-nope",
         "--state", str(state)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "local_aws: no instance i-nope in the local fleet"


def test_a_failed_up_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # Left by an `up` that was killed: its emulator is gone, so this is no "already up".
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state / "emulator.json").write_text(json.dumps({"port": 1, "pid": dead.pid}))

    def emulator_fails(folder: Path, _port: int) -> tuple[int, int]:
        (folder / "moto.log").write_text("address in use\n")
        raise local_aws.LocalAwsError("moto_server exited")

    monkeypatch.setattr(local_aws, "start_emulator", emulator_fails)
    with pytest.raises(local_aws.LocalAwsError, match="moto_server exited"):
        local_aws.up(state, port=None)
    assert not state.exists()


def test_down_returns_only_once_the_emulator_has_exited(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # An emulator slow to stop: it takes a second after SIGTERM.
    slow = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1), sys.exit(0)))\n"
         "print('up', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert slow.stdout is not None
    assert slow.stdout.readline() == b"up\n"
    (state / "emulator.json").write_text(json.dumps({"port": 1, "pid": slow.pid}))
    began = time.monotonic()
    local_aws.stop(state)
    assert time.monotonic() - began >= 0.9
    assert slow.poll() == 0  # exited by itself, before stop returned
    slow.stdout.close()
    assert not state.exists()


@pytest.mark.e2e
@pytest.mark.emulator
def test_up_with_a_bad_setting_fails_in_one_line_and_stops_its_emulator(
    tmp_path: Path,
) -> None:
    if not local_aws.CDK_CLI.exists() and not os.environ.get("CI"):
        pytest.skip("the CDK CLI is not installed (npm ci)")
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.local_aws", "up", "--state", str(state),
         "-c", "taskfleet:maxWorkers=abc"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "taskfleet stack: context taskfleet:maxWorkers='abc'" in done.stdout + done.stderr
    assert done.stderr.rstrip().endswith("local_aws: cdk deploy failed with exit code 1")
    assert not state.exists()
    assert not moto_servers_of(state)  # its emulator is gone, not left running


def moto_servers_of(state: Path) -> set[int]:
    """The pids of the moto_server processes running now that ``local_aws`` started
    for ``state`` (their environment names it: where they record requests), so
    that other tests' emulators running beside this one are not counted."""
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                entry.name.isdigit()
                and b"moto_server" in (entry / "cmdline").read_bytes()
                and str(state).encode() in (entry / "environ").read_bytes()
            ):
                found.add(int(entry.name))
    return found
