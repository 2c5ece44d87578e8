"""A local fleet: one `taskfleet worker` process per in-service instance of the group.

Emulated instances run nothing, so on an emulator this stands in for them:
it watches the stack's Auto Scaling group, starts the same worker an instance
would run (its instance id and group handed in) for each instance that comes
into service, restarts one that fails while its instance lives (as systemd's
Restart=on-failure would), and stops it (SIGTERM) when its instance leaves
the group. A worker that goes idle terminates its own instance, and so the
group shrinks back to zero. When an instance's worker is gone, it says how
long the worker ran: the instance-seconds the fleet's clock gives.

Each worker watches a stand-in for its instance metadata (files under
``LOGS/metadata/INSTANCE/``), so a notice can be given to one instance
(``python -m scripts.local_aws interrupt INSTANCE``): the worker gives its
bundles back and exits, and the fleet then ends the instance as EC2 would —
a spot instance is replaced (the group keeps its size), an instance the group
was ending leaves it.

    python -m scripts.local_fleet OUTPUTS_JSON     # until SIGTERM or Ctrl-C
"""

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from scripts.metadata_stand_in import MetadataStandIn
from worker.contracts import Output
from worker.sqs import aws_client

#: Seconds between two looks at the group.
POLL_SECONDS = 1.0

TASKFLEET = str(Path(sys.executable).parent / "taskfleet")


class LocalFleet:
    """Worker processes mirroring a group's in-service instances."""

    def __init__(
        self,
        outputs: dict[str, str],
        logs: Path,
        idle_timeout: float | None,
        metadata: MetadataStandIn,
    ) -> None:
        self.outputs = outputs
        self.logs = logs
        self.metadata = metadata
        self.idle_timeout = idle_timeout or float(outputs[Output.IDLE_TIMEOUT_SECONDS])
        self.autoscaling = aws_client("autoscaling", outputs[Output.REGION])
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}  # instance -> when its worker started
        self.stopping = threading.Event()

    def in_service(self) -> set[str]:
        (group,) = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.outputs[Output.GROUP_NAME]]
        )["AutoScalingGroups"]
        instances: list[dict[str, Any]] = group["Instances"]
        return {i["InstanceId"] for i in instances if i["LifecycleState"] == "InService"}

    def start(self, instance_id: str) -> None:
        outputs = self.outputs
        self.metadata.answer("instance-id", instance_id, instance_id)
        self.started.setdefault(instance_id, time.monotonic())
        # Where the instance's worker runs: a directory of its own, as on an
        # instance, never the checkout a test or a person runs from.
        home = self.logs / f"{instance_id}.home"
        home.mkdir(exist_ok=True)
        with (self.logs / f"{instance_id}.log").open("ab") as log:
            self.workers[instance_id] = subprocess.Popen(
                [
                    TASKFLEET,
                    "worker",
                    "--request-queue-url",
                    outputs[Output.REQUEST_QUEUE_URL],
                    "--response-queue-url",
                    outputs[Output.RESPONSE_QUEUE_URL],
                    "--claim-table",
                    outputs[Output.CLAIM_TABLE_NAME],
                    "--job-table",
                    outputs[Output.JOB_TABLE_NAME],
                    "--job-queue-prefix",
                    outputs[Output.JOB_QUEUE_PREFIX],
                    "--region",
                    outputs[Output.REGION],
                    "--instance-id",
                    instance_id,
                    "--group-name",
                    outputs[Output.GROUP_NAME],
                    "--idle-timeout",
                    str(self.idle_timeout),
                    "--visibility-timeout",
                    outputs[Output.VISIBILITY_TIMEOUT_SECONDS],
                    # As many slots as an instance of the stack has.
                    "--concurrency",
                    outputs.get(Output.SLOTS_PER_INSTANCE, "1"),
                    # Restarted after a failure, it takes its bundles back at once.
                    "--state-dir",
                    str(self.logs / f"{instance_id}.state"),
                    "--metadata-url",
                    self.metadata.url_for(instance_id),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
            )

    def step(self) -> None:
        """Bring the worker processes in line with the group, once."""
        alive = self.in_service()
        for instance_id, process in list(self.workers.items()):
            if instance_id not in alive:
                if process.poll() is None:
                    process.terminate()  # its instance left the group
                process.wait()
                del self.workers[instance_id]
                self.ended(instance_id)
            elif process.poll() is not None:
                if process.returncode != 0:
                    del self.workers[instance_id]  # failed: started again below
                elif (notice := self.notice(instance_id)) is not None:
                    self.end_instance(instance_id, notice)
        for instance_id in sorted(alive - self.workers.keys()):
            self.start(instance_id)

    def notice(self, instance_id: str) -> str | None:
        """The notice the instance was given, if any: "spot" or "lifecycle"."""
        if self.metadata.lookup(f"/{instance_id}/latest/meta-data/spot/instance-action"):
            return "spot"
        path = f"/{instance_id}/latest/meta-data/autoscaling/target-lifecycle-state"
        if self.metadata.lookup(path) == "Terminated":
            return "lifecycle"
        return None

    def end_instance(self, instance_id: str, notice: str) -> None:
        """What EC2 does once a noticed instance's worker has left: a spot instance
        is reclaimed and replaced; one the group was ending is gone for good."""
        replaced = notice == "spot"
        self.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=not replaced
        )
        del self.workers[instance_id]
        self.ended(instance_id)
        print(
            f"{instance_id}: its worker left after a {notice} notice; instance ended"
            + (" and replaced" if replaced else ""),
            flush=True,
        )

    def ended(self, instance_id: str) -> None:
        """Say how long the instance's worker (restarts included) ran."""
        began = self.started.pop(instance_id, None)
        if began is not None:
            print(f"{instance_id}: worker ran {time.monotonic() - began:.3f} s", flush=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.step()
            self.stopping.wait(POLL_SECONDS)
        for process in self.workers.values():
            if process.poll() is None:
                process.terminate()
        for instance_id, process in self.workers.items():
            process.wait()
            self.ended(instance_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outputs", type=Path, help="the stack outputs (cdk --outputs-file)")
    parser.add_argument("--logs", type=Path, help="folder for worker logs (default: beside)")
    parser.add_argument("--idle-timeout", type=float, help="override the stack's idle timeout")
    args = parser.parse_args()
    stacks: dict[str, dict[str, str]] = json.loads(args.outputs.read_text())
    (outputs,) = stacks.values()
    logs = args.logs or args.outputs.parent
    logs.mkdir(parents=True, exist_ok=True)
    with MetadataStandIn(logs / "metadata") as metadata:
        fleet = LocalFleet(outputs, logs, args.idle_timeout, metadata)

        def stop(_signum: int, _frame: FrameType | None) -> None:
            fleet.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        fleet.run()


if __name__ == "__main__":
    main()
