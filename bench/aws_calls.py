"""Counting the AWS requests of every process of a benchmark, with botocore's event hooks.

Each process that calls ``record_requests(folder, party)`` appends one line per
SQS, DynamoDB or S3 request it sends ("service operation") to
``folder/PARTY-PID.requests``; ``count_requests(folder)`` adds them up, and
``count_by_party(folder)`` keeps the parties apart. Processes the benchmark
does not start itself (the local fleet's workers, a `taskfleet` command) do
the same through ``aws_calls_site/sitecustomize.py`` when
``TASKFLEET_BENCH_REQUESTS`` names the folder and that directory is on their
PYTHONPATH: a `taskfleet worker` counts as the party "worker", any other
process as "client".
"""

import os
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

#: The services whose requests are counted.
COUNTED = ("sqs", "dynamodb", "s3")

#: The environment variable naming the folder, for processes started elsewhere.
FOLDER_VARIABLE = "TASKFLEET_BENCH_REQUESTS"

#: The folder to put on a process's PYTHONPATH so it counts its requests.
SITE = Path(__file__).resolve().parent / "aws_calls_site"


def record_requests(folder: Path, party: str = "client") -> None:
    """Count every SQS, DynamoDB and S3 request of this process's boto3 clients
    made from now, as ``party``'s."""
    path = folder / f"{party}-{os.getpid()}.requests"

    def count(event_name: str, **_context: Any) -> None:
        # before-send fires once per HTTP request, retries included.
        _, service, operation = event_name.split(".", 2)
        with path.open("a") as log:
            log.write(f"{service} {operation}\n")

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    for service in COUNTED:
        boto3.DEFAULT_SESSION.events.register(f"before-send.{service}", count)


def count_in_children(folder: Path) -> None:
    """Make every process started from now on (the local fleet's workers, their
    tasks, a `taskfleet` command) count its requests into ``folder``."""
    os.environ[FOLDER_VARIABLE] = str(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SITE), os.environ.get("PYTHONPATH")])
    )


def count_by_party(folder: Path) -> dict[str, Counter[str]]:
    """Requests recorded so far under ``folder``: by party, by "service operation"."""
    parties: dict[str, Counter[str]] = {}
    for path in folder.glob("*.requests"):
        party = path.stem.rsplit("-", 1)[0]
        lines = (line.strip() for line in path.read_text().splitlines())
        parties.setdefault(party, Counter()).update(line for line in lines if line)
    return parties


def count_requests(folder: Path) -> Counter[str]:
    """Requests recorded so far under ``folder``, by "service operation"."""
    counts: Counter[str] = Counter()
    for each in count_by_party(folder).values():
        counts.update(each)
    return counts
