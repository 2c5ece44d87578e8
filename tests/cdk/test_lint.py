"""Static checks of what `cdk deploy` ships: the template, the shell scripts, the unit."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from aws_cdk.assertions import Template

REPOSITORY = Path(__file__).resolve().parents[2]
IMAGE = REPOSITORY / "image"
CHECKOV_CONFIG = REPOSITORY / "cdk" / "checkov.yaml"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A checking tool: from the project's venv, else the system; in CI it must exist."""
    found = VENV_BIN / name if (VENV_BIN / name).exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return str(found)


@pytest.mark.parametrize("which", ["synthesized", "synthesized_with_key"])
def test_cfn_lint_finds_nothing(which: str, request: pytest.FixtureRequest) -> None:
    _, template_file = request.getfixturevalue(which)
    done = subprocess.run(
        [tool("cfn-lint"), "--format", "parseable", str(template_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class CheckovReport(NamedTuple):
    passed: int
    failed: list[str]  # the ids of the checks that failed
    skipped: list[str]  # the ids of the checks a resource's metadata skips


def checkov(template_file: Path, *options: str) -> CheckovReport:
    """What checkov finds in a template (offline: it downloads nothing)."""
    done = subprocess.run(
        [
            tool("checkov"),
            "--skip-download",
            "--output",
            "json",
            "-f",
            str(template_file),
            *options,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(done.stdout)
    failed = [check["check_id"] for check in report["results"]["failed_checks"]]
    skipped = sorted(check["check_id"] for check in report["results"]["skipped_checks"])
    assert done.returncode == (1 if failed else 0), done.stderr
    return CheckovReport(report["summary"]["passed"], failed, skipped)


def test_checkov_finds_nothing_but_what_its_file_skips(synthesized: tuple[Template, Path]) -> None:
    _, template_file = synthesized
    found = checkov(template_file, "--config-file", str(CHECKOV_CONFIG))
    assert found.failed == []
    assert found.passed >= 30  # it did look: 30 checks passed beside the 4 failures before


def test_with_a_customer_managed_key_checkov_passes_with_nothing_skipped(
    synthesized_with_key: tuple[Template, Path],
) -> None:
    _, template_file = synthesized_with_key
    found = checkov(template_file, "--framework", "cloudformation")
    assert found.failed == []
    # Only the two the job-files buckets skip, each with its reason (cdk/job_files.py).
    assert found.skipped == ["CKV_AWS_18", "CKV_AWS_21"]
    # The two the file skips on the default template: on 3 queues and 2 tables.
    assert checkov(template_file, "--check", "CKV_AWS_27,CKV_AWS_119")[:2] == (5, [])


@pytest.mark.parametrize("script", ["install.sh", "bootstrap.sh"])
def test_image_scripts_pass_shellcheck(script: str) -> None:
    done = subprocess.run(
        [tool("shellcheck"), "--shell=bash", "--severity=style", str(IMAGE / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


INSTALLED_WORKER = "/opt/taskfleet/venv/bin/taskfleet"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    text = (IMAGE / "taskfleet-worker.service").read_text()
    assert f"ExecStart={INSTALLED_WORKER} worker" in text
    # A restarted worker takes its bundles back from here, inside the writable state.
    assert "Environment=TASKFLEET_STATE_DIR=/var/lib/taskfleet/worker" in text
    assert "ReadWritePaths=/var/lib/taskfleet" in text
    assert "/opt/taskfleet" in (IMAGE / "install.sh").read_text()  # where install.sh puts it
    # Verified with a stand-in for the worker this machine has not installed.
    stand_in = tmp_path / "taskfleet"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "taskfleet-worker.service"
    unit.write_text(text.replace(INSTALLED_WORKER, str(stand_in)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "taskfleet-worker.service" not in output, output  # not even a warning
