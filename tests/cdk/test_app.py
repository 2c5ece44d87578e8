"""The CDK app as the CDK CLI runs it (its `app` command, in a process of its
own): a synth it cannot do ends in one line that says why and what to do."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).parents[2]


def synth(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDK_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "cdk.app"],
        cwd=REPOSITORY,
        env={**base, "CDK_OUTDIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_without_an_account_synth_says_what_to_do_in_one_line(tmp_path: Path) -> None:
    done = synth(tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("taskfleet stack: no AWS account and region to deploy to")
    assert "make local-aws-up" in line


def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    done = synth(
        tmp_path,
        CDK_DEFAULT_ACCOUNT="123456789012",
        CDK_DEFAULT_REGION="us-east-1",
        CDK_CONTEXT_JSON=json.dumps({"taskfleet:maxWorkers": "abc"}),
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()  # and no end-of-life banner of jsii's
    assert line.startswith("taskfleet stack: context taskfleet:maxWorkers='abc':")


def test_a_missing_setup_script_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    done = synth(
        tmp_path,
        CDK_DEFAULT_ACCOUNT="123456789012",
        CDK_DEFAULT_REGION="us-east-1",
        CDK_CONTEXT_JSON=json.dumps({"taskfleet:setupScript": "no-such-setup.sh"}),
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line == "taskfleet stack: context taskfleet:setupScript='no-such-setup.sh': no such file"
