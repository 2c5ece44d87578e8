"""An instance's boot, run for real in a Debian 12 root file system (the
default image's userland): the user data the stack makes (its settings, the
setup script, image/bootstrap.sh) runs as root in a debootstrapped root,
downloads the project source from the emulator's S3, installs it with
image/install.sh, runs the setup script and writes the worker's unit and
environment. The installed worker then takes a bundle from the emulator and
sends its results; a failing setup script ends its instance instead.

What is not an EC2 instance here: systemd does not run in a chroot (its
systemctl enables the unit; bootstrap.sh starts it only where systemd runs), so the test starts the
unit's ExecStart itself as systemd would (its user, its environment file and
Environment= lines), without the unit's sandbox and without its ExecStartPre
(the task firewall, which would load into the host's network namespace; it is
tested in a namespace of its own by test_task_isolation.py). The instance's
metadata comes from the stand-in the local fleet uses, and its role's
credentials are the emulator's test ones, given in the environment.
"""

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import pytest
from cdk.setup_script import setup_script_commands
from cdk.source import write_source_zip

from scripts.metadata_stand_in import MetadataStandIn
from tests.conftest import bundle, create_job_table, fake_metadata, needs_root_tools, wait_for
from tests.image.debian_root import PATH, PIP_CERT, in_root_command, mirror_reachable, unpack_root
from worker.bundle import decode_result_batch
from worker.contracts import BOOTSTRAP_SETTINGS, Setting

pytestmark = pytest.mark.e2e

REPOSITORY = Path(__file__).resolve().parents[2]
IMAGE = REPOSITORY / "image"
REGION = "us-east-1"
GROUP = "boot-fleet"
JOB_QUEUE_PREFIX = "Boot_job_"

#: Seconds a whole boot may take: cold, it fetches Python, the aws CLI and the
#: project's dependencies.
BOOT_TIMEOUT = 1200


class Fleet(NamedTuple):
    """What the stack would have made, on the emulator, and one instance of it."""

    settings: dict[str, str]  # the user data's exports
    instance_id: str
    requests: str


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One unpacked root for the module's tests (removed after them: it is large)."""
    needs_root_tools("debootstrap", "unshare", "chroot")
    if problem := mirror_reachable():
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    folder = tmp_path_factory.mktemp("debian")
    yield unpack_root(folder / "root")
    subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=False)


def emulated_fleet(tmp_path: Path, metadata: MetadataStandIn) -> Fleet:
    """Queues, tables, the source object and a group with one instance on the
    emulator, and that instance's metadata."""
    s3: Any = boto3.client("s3")
    s3.create_bucket(Bucket="assets")
    s3.upload_file(str(write_source_zip(REPOSITORY, tmp_path / "source.zip")), "assets", "src.zip")
    sqs: Any = boto3.client("sqs")
    requests = sqs.create_queue(QueueName="requests")["QueueUrl"]
    responses = sqs.create_queue(QueueName="responses")["QueueUrl"]
    sqs.create_queue(QueueName=f"{JOB_QUEUE_PREFIX}job1")
    dynamodb: Any = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="claims",
        KeySchema=[{"AttributeName": "bundle", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "bundle", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    create_job_table(dynamodb, "jobs")
    boto3.client("ec2").create_launch_template(
        LaunchTemplateName="workers",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.small"},
    )
    autoscaling: Any = boto3.client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateName": "workers"},
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=[f"{REGION}a"],
    )
    (instance,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])[
        "AutoScalingGroups"
    ][0]["Instances"]
    instance_id: str = instance["InstanceId"]
    metadata.answer("instance-id", instance_id)
    metadata.answer("tags/instance/aws:autoscaling:groupName", GROUP)
    settings = {
        Setting.SOURCE_URL: "s3://assets/src.zip",
        Setting.REGION: REGION,
        Setting.REQUEST_QUEUE_URL: requests,
        Setting.RESPONSE_QUEUE_URL: responses,
        Setting.CLAIM_TABLE: "claims",
        Setting.JOB_TABLE: "jobs",
        Setting.JOB_QUEUE_PREFIX: JOB_QUEUE_PREFIX,
        Setting.IDLE_TIMEOUT: "300",
        Setting.VISIBILITY_TIMEOUT: "30",
        Setting.CONCURRENCY: "1",
        Setting.LIFECYCLE_HOOK: "taskfleet-termination",
    }
    assert sorted(settings) == sorted(BOOTSTRAP_SETTINGS)
    return Fleet(settings, instance_id, requests)


def user_data(settings: dict[str, str], setup_script: str) -> str:
    """The user data as cdk/stack.py puts it together."""
    return "\n".join(
        [
            "#!/bin/bash",
            *(f"export {name}='{value}'" for name, value in settings.items()),
            setup_script_commands(setup_script),
            (IMAGE / "bootstrap.sh").read_text(),
        ]
    )


def role_credentials(moto_endpoint: str) -> dict[str, str]:
    """What the instance's role gives its processes through the metadata
    service; here the emulator's test credentials, in the environment."""
    return {
        "AWS_ENDPOINT_URL": moto_endpoint.replace("localhost", "127.0.0.1"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def boot(
    root: Path, text: str, moto_endpoint: str, metadata: MetadataStandIn
) -> subprocess.CompletedProcess[str]:
    """Run the user data in the root, as cloud-init would: as root, from /."""
    environment = {
        **role_credentials(moto_endpoint),
        Setting.METADATA_URL: metadata.url,
        "PIP_CERT": PIP_CERT,
    }
    (root / "var" / "lib" / "user-data.sh").write_text(text)
    return subprocess.run(
        in_root_command(root, ["/bin/bash", "/var/lib/user-data.sh"]),
        env={"PATH": PATH, "HOME": "/root", **environment},
        capture_output=True,
        text=True,
        timeout=BOOT_TIMEOUT,
        check=False,
    )


def unit_service(root: Path) -> tuple[str, list[str], dict[str, str]]:
    """The installed unit's User=, ExecStart= and environment (its
    EnvironmentFile=, then its Environment= lines, as systemd reads them)."""
    lines = (root / "etc/systemd/system/taskfleet-worker.service").read_text().splitlines()
    fields = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    environment: dict[str, str] = {}
    for key, value in fields:
        if key == "EnvironmentFile":
            for entry in (root / value.lstrip("/")).read_text().splitlines():
                name, _, setting = entry.partition("=")
                environment[name] = setting
        elif key == "Environment":
            name, _, setting = value.partition("=")
            environment[name] = setting
    (user,) = [value for key, value in fields if key == "User"]
    (start,) = [value for key, value in fields if key == "ExecStart"]
    return user, shlex.split(start), environment


def collect(queue_url: str, found: list[dict[str, Any]]) -> int:
    """Add the results waiting on a queue to ``found``; how many it now holds."""
    sqs: Any = boto3.client("sqs")
    for message in sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", []):
        found.extend(
            {"line": r.line, "status": r.status, "stdout": r.stdout}
            for r in decode_result_batch(message["Body"]).results
        )
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(found)


def health(instance_id: str) -> str:
    (instance,) = boto3.client("autoscaling").describe_auto_scaling_instances(
        InstanceIds=[instance_id]
    )["AutoScalingInstances"]
    return str(instance["HealthStatus"])


SETUP_SCRIPT = """\
# Software the tasks need, from the image's own packages.
apt-get install -y -q --no-install-recommends jq
echo "setup ran as $(id -un)" > /var/lib/setup-ran
"""


def test_the_boot_installs_a_worker_that_runs_a_bundle(
    debian_root: Path, moto_endpoint: str, tmp_path: Path
) -> None:
    root = debian_root
    with fake_metadata() as metadata:
        fleet = emulated_fleet(tmp_path, metadata)
        booted = boot(root, user_data(fleet.settings, SETUP_SCRIPT), moto_endpoint, metadata)
        assert booted.returncode == 0, booted.stdout[-3000:] + booted.stderr[-3000:]
        assert "taskfleet: setup script done" in booted.stdout
        assert_installed(root, fleet)
        # The setup script ran, as root, before the worker: its package is there.
        assert (root / "var/lib/setup-ran").read_text() == "setup ran as root\n"
        assert os.access(root / "usr/bin/jq", os.X_OK)

        user, start, unit_environment = unit_service(root)
        assert user == "root"
        assert start == ["/opt/taskfleet/venv/bin/taskfleet", "worker"]
        sqs: Any = boto3.client("sqs")
        sqs.send_message(
            QueueUrl=fleet.requests,
            MessageBody=bundle("boot-1", "jq --version", "cat /etc/debian_version", "id -un"),
        )
        job_queue = sqs.get_queue_url(QueueName=f"{JOB_QUEUE_PREFIX}job1")["QueueUrl"]
        log = tmp_path / "worker.log"
        # What systemd gives every service, its unit's environment, and the role.
        service_environment = {
            "PATH": PATH,
            "LANG": "C.UTF-8",
            **unit_environment,
            **role_credentials(moto_endpoint),
        }
        with log.open("wb") as output:
            worker = subprocess.Popen(
                in_root_command(root, start),
                env=service_environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        found: list[dict[str, Any]] = []
        try:
            wait_for(lambda: collect(job_queue, found) == 3, timeout=120)
        finally:
            worker.terminate()  # systemctl stop: SIGTERM
            worker.wait(timeout=150)
    by_line = {r["line"]: r for r in found}
    assert all(r["status"] == "succeeded" for r in found), (found, log.read_text())
    assert by_line[1]["stdout"].startswith("jq-")  # the setup script's software
    assert by_line[2]["stdout"].startswith("12.")  # Debian 12's userland
    assert by_line[3]["stdout"] == "taskfleet-task\n"  # the task user, not root
    assert worker.returncode == 0, log.read_text()


def assert_installed(root: Path, fleet: Fleet) -> None:
    """The worker, its task user, its unit (enabled) and its environment."""
    assert os.access(root / "opt/taskfleet/venv/bin/taskfleet", os.X_OK)
    assert "taskfleet-task:" in (root / "etc/passwd").read_text()
    unit = root / "etc/systemd/system/taskfleet-worker.service"
    assert unit.read_text() == (IMAGE / "taskfleet-worker.service").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/taskfleet-worker.service"
    assert wants.is_symlink()
    env_file = root / "etc/taskfleet/worker.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    written = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert written[Setting.INSTANCE_ID] == fleet.instance_id  # learnt from its metadata
    assert written[Setting.GROUP_NAME] == GROUP
    assert written[Setting.REQUEST_QUEUE_URL] == fleet.requests  # the stack's setting


def test_a_failing_setup_script_ends_the_instance_and_no_worker_starts(
    debian_root: Path, moto_endpoint: str, tmp_path: Path
) -> None:
    root = debian_root
    # Whatever an earlier boot of this root left: this boot must not make them.
    for left in ("etc/taskfleet/worker.env", "var/log/taskfleet-setup.log"):
        (root / left).unlink(missing_ok=True)
    wants = root / "etc/systemd/system/multi-user.target.wants/taskfleet-worker.service"
    wants.unlink(missing_ok=True)
    failing = "echo fetching the model\necho 'no such package: ffmpeg-9' >&2\nexit 7\n"
    with fake_metadata() as metadata:
        fleet = emulated_fleet(tmp_path, metadata)
        assert health(fleet.instance_id) == "Healthy"
        booted = boot(root, user_data(fleet.settings, failing), moto_endpoint, metadata)
    assert booted.returncode == 1, booted.stdout[-3000:] + booted.stderr[-3000:]
    # The reason, on the console: the exit code and the tail of the output.
    assert "taskfleet: setup script failed with exit code 7" in booted.stderr
    tail = booted.stderr.split("taskfleet: setup script failed", 1)[1]
    assert "fetching the model\nno such package: ffmpeg-9\n" in tail
    # Its group was told (and ends it); no worker was configured or enabled.
    assert health(fleet.instance_id) == "Unhealthy"
    assert not (root / "etc/taskfleet/worker.env").exists()
    assert not wants.exists()
