"""The taskfleet stack on this machine, with no AWS account.

    python -m scripts.local_aws up      # moto_server, cdk bootstrap, cdk deploy, local fleet
    python -m scripts.local_aws down    # local fleet and cdk destroy, stop moto_server
    python -m scripts.local_aws interrupt INSTANCE [--lifecycle]
                                        # a spot notice (or the group's termination) to one
                                        # instance of the local fleet

moto_server stands in for AWS; the real CDK CLI (from node_modules, see
package.json) deploys the real app to it with `--method=direct` (a change-set
deploy loses the stack's outputs there). Everything lives under .local-aws/:
the emulator's log and pid, the stack outputs, and the CDK context cache. The
cache must never be reused by a real deployment (the emulator's VPC and subnet
ids mean nothing elsewhere), which is why the CLI runs in that folder and not
in the repository.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
CDK_CLI = REPOSITORY / "node_modules" / ".bin" / "cdk"
DEFAULT_STATE = REPOSITORY / ".local-aws"
VENV_PYTHON = REPOSITORY / ".venv" / "bin" / "python"

#: The account and region moto answers for.
ACCOUNT = "123456789012"
REGION = "us-east-1"

#: Emulators started by this process, by pid: kept so they can be reaped when
#: stopped here (as tests do); a command-line `up` leaves its emulator running.
_started: dict[int, subprocess.Popen[bytes]] = {}

#: Seconds moto_server has to answer after it starts.
START_TIMEOUT_SECONDS = 60

#: Seconds the emulator and the fleet have to exit after SIGTERM, before SIGKILL.
STOP_TIMEOUT_SECONDS = 30


class LocalAwsError(Exception):
    """The emulator or the CDK CLI failed."""


def environment(port: int) -> dict[str, str]:
    """What the CDK CLI, boto3 and taskfleet need to talk to the emulator."""
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        # localhost, not 127.0.0.1: with the IP, CloudFormation in the emulator
        # cannot find the template the CLI published to its S3.
        "AWS_ENDPOINT_URL": f"http://localhost:{port}",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])
        ),
        "CDK_DISABLE_VERSION_CHECK": "1",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }


def start_emulator(state: Path, port: int) -> tuple[int, int]:
    """Start moto_server in the background (on ``port``; 0: one it picks, so no other
    process can take it first); return its pid and port once it answers."""
    moto = Path(sys.executable).parent / "moto_server"
    log = state / "moto.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command until `down`
            # Where it records the requests it is sent, when asked to
            # (POST /moto-api/recorder/start-recording): the cost tests count them.
            env={**os.environ, "MOTO_RECORDER_FILEPATH": str(state / "requests.jsonl")},
        )
    _started[process.pid] = process
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalAwsError(f"moto_server exited; see {log}")
        if found := re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log.read_bytes()):
            bound = int(found.group(1))
            try:
                with urllib.request.urlopen(f"http://localhost:{bound}/moto-api/", timeout=2):
                    return process.pid, bound
            except OSError:
                pass
        time.sleep(0.2)
    process.kill()
    raise LocalAwsError(f"moto_server did not answer within {START_TIMEOUT_SECONDS} s")


def cdk(state: Path, port: int, *args: str) -> None:
    """Run the CDK CLI against the emulator, from the state folder."""
    if not CDK_CLI.exists():
        raise LocalAwsError(f"{CDK_CLI} is missing: run `npm ci` (or `make install`) first")
    app = f"{sys.executable} -m cdk.app"
    (state / "cdk.json").write_text(json.dumps({"app": app}) + "\n")
    done = subprocess.run([str(CDK_CLI), *args], cwd=state, env=environment(port), check=False)
    if done.returncode != 0:
        raise LocalAwsError(f"cdk {args[0]} failed with exit code {done.returncode}")


def up(state: Path, port: int | None, context: dict[str, str] | None = None) -> dict[str, str]:
    """Emulator up, stack deployed (with extra CDK ``context``), local fleet running;
    returns the stack's outputs. A failure leaves nothing behind: no emulator, no
    fleet, no state folder."""
    if (state / "emulator.json").exists():
        if is_running(emulator_of(state)["pid"]):
            raise LocalAwsError(f"already up ({state}); run `down` first")
        shutil.rmtree(state)  # left by an `up` that was killed: its emulator is gone
    state.mkdir(parents=True, exist_ok=True)
    try:
        return _deploy(state, port or 0, context or {})
    except BaseException:
        if (state / "emulator.json").exists():
            stop(state)
        else:
            shutil.rmtree(state, ignore_errors=True)
        raise


def _deploy(state: Path, port: int, context: dict[str, str]) -> dict[str, str]:
    pid, port = start_emulator(state, port)
    (state / "emulator.json").write_text(json.dumps({"port": port, "pid": pid}) + "\n")
    cdk(state, port, "bootstrap", f"aws://{ACCOUNT}/{REGION}")
    outputs_file = state / "outputs.json"
    # The emulator serves Amazon Linux's public image parameters, not Debian's;
    # which image is immaterial there (emulated instances run nothing).
    context = {"taskfleet:image": "al2023", **context}
    settings = [f"--context={key}={value}" for key, value in context.items()]
    cdk(
        state,
        port,
        "deploy",
        "--method=direct",
        "--require-approval",
        "never",
        "--outputs-file",
        str(outputs_file),
        *settings,
    )
    stacks: dict[str, dict[str, str]] = json.loads(outputs_file.read_text())
    (outputs,) = stacks.values()
    fleet = start_fleet(state, port, outputs_file)
    (state / "emulator.json").write_text(json.dumps({"port": port, "pid": pid, "fleet": fleet}))
    return outputs


def start_fleet(state: Path, port: int, outputs_file: Path) -> int:
    """The local fleet (scripts/local_fleet.py) in the background; returns its pid."""
    with (state / "fleet.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.local_fleet", str(outputs_file)],
            cwd=REPOSITORY,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment(port),
            start_new_session=True,
        )
    _started[process.pid] = process
    return process.pid


def emulator_of(state: Path) -> dict[str, int]:
    """The port and pid of the emulator that `up` started."""
    try:
        emulator: dict[str, int] = json.loads((state / "emulator.json").read_text())
    except FileNotFoundError as error:
        raise LocalAwsError(f"nothing is up ({state / 'emulator.json'} is missing)") from error
    return emulator


def destroy(state: Path) -> None:
    """`cdk destroy` against the emulator; the emulator keeps running."""
    cdk(state, emulator_of(state)["port"], "destroy", "--force")


def stop(state: Path) -> None:
    """Stop the emulator (and wait until it has exited) and remove the state folder."""
    # The fleet first: its workers stop while the emulator still answers them.
    stop_fleet(state)
    end_group(emulator_of(state)["pid"])
    shutil.rmtree(state)


def end_group(pid: int) -> None:
    """SIGTERM a process group this script started; return once its leader has
    exited (SIGKILL after STOP_TIMEOUT_SECONDS)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while is_running(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        time.sleep(0.05)
    if pid in _started:
        _started.pop(pid).wait()


def is_running(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet waited for, does not)."""
    if pid in _started:
        return _started[pid].poll() is None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def down(state: Path) -> None:
    """Fleet stopped, stack destroyed, emulator stopped, state folder removed."""
    stop_fleet(state)
    try:
        destroy(state)
    finally:
        stop(state)


def stop_fleet(state: Path) -> None:
    """Stop the local fleet (its workers get SIGTERM and finish what they hold)."""
    processes = emulator_of(state)
    pid = processes.pop("fleet", None)
    if pid is None:
        return
    end_group(pid)
    (state / "emulator.json").write_text(json.dumps(processes))


def interrupt(state: Path, instance_id: str, lifecycle: bool) -> None:
    """Give one instance of the local fleet a spot interruption notice, or say its
    group is ending it (a termination lifecycle hook): its worker sees it within
    seconds through the fleet's metadata stand-in."""
    from scripts.metadata_stand_in import MetadataAnswers, spot_notice

    emulator_of(state)  # something is up
    metadata = MetadataAnswers(state / "metadata")
    if not metadata.knows(instance_id):
        raise LocalAwsError(f"no instance {instance_id} in the local fleet")
    if lifecycle:
        metadata.answer("autoscaling/target-lifecycle-state", "Terminated", instance_id)
    else:
        metadata.answer("spot/instance-action", spot_notice(), instance_id)


def in_project_python() -> None:
    """Run this command again as ``-m scripts.local_aws``, with the project's
    .venv when this Python lacks the packages the CDK app and the fleet need
    (a plain `python3 scripts/local_aws.py`)."""
    ready = all(importlib.util.find_spec(name) for name in ("aws_cdk", "moto", "worker"))
    if ready and __package__ == "scripts":
        return
    python = Path(sys.executable) if ready else VENV_PYTHON
    if not python.exists():
        raise SystemExit("local_aws: .venv is missing: run `make install` first")
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    argv = [str(python), "-m", "scripts.local_aws", *sys.argv[1:]]
    os.execve(python, argv, {**os.environ, "PYTHONPATH": path})


def main() -> None:
    in_project_python()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "interrupt"])
    parser.add_argument("instance", nargs="?", help="interrupt: the instance id")
    parser.add_argument(
        "--lifecycle",
        action="store_true",
        help="interrupt: the group is ending the instance (default: a spot notice)",
    )
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state folder")
    parser.add_argument("--port", type=int, help="moto_server port (default: a free one)")
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CDK context for the deploy, e.g. -c taskfleet:idleTimeoutSeconds=30",
    )
    args = parser.parse_args()
    try:
        if args.command == "up":
            bad = [item for item in args.context if "=" not in item]
            if bad:
                parser.error(f"-c {bad[0]}: a setting is KEY=VALUE")
            context = dict(item.split("=", 1) for item in args.context)
            outputs = up(args.state, args.port, context)
            port = json.loads((args.state / "emulator.json").read_text())["port"]
            print(f"stack deployed to the emulator on http://localhost:{port}; local fleet running")
            for name, value in sorted(outputs.items()):
                print(f"  {name} = {value}")
            print(
                f"use it with: export AWS_ENDPOINT_URL=http://localhost:{port}"
                f" AWS_DEFAULT_REGION={REGION} AWS_ACCESS_KEY_ID=testing"
                " AWS_SECRET_ACCESS_KEY=testing"
            )
        elif args.command == "interrupt":
            if args.instance is None:
                parser.error("interrupt needs an instance id")
            interrupt(args.state, args.instance, args.lifecycle)
            print(f"{args.instance}: notice given; its worker gives its bundles back")
        else:
            down(args.state)
            print("fleet stopped, stack destroyed, emulator stopped")
    except LocalAwsError as error:
        print(f"local_aws: {error}", file=sys.stderr)
        raise SystemExit(1) from error


if __name__ == "__main__":
    main()
