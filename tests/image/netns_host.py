"""A fleet instance in miniature, inside a network namespace of its own.

Run by ``test_task_isolation.py`` under ``unshare --net``, as root: the
namespace's loopback carries the metadata address 169.254.169.254 with a
fake instance metadata service on it, the image's task firewall is loaded
(for the task user named on the command line), and moto_server stands in
for SQS and DynamoDB. A real ``taskfleet worker --task-user USER`` runs the
bundle given on stdin; the results are printed on stdout as JSON Lines.

usage: netns_host.py FIREWALL_FILE TASK_USER < BUNDLE_JSON
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3

from tests.conftest import emulator_environment, fake_metadata, start_moto_server

METADATA_ADDRESS = "169.254.169.254"
INSTANCE_ID = "i-0namespace"


def main() -> None:
    firewall, task_user = Path(sys.argv[1]), sys.argv[2]
    bundle = sys.stdin.read()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{METADATA_ADDRESS}/32", "dev", "lo"], check=True)
    rules = firewall.read_text().replace('"taskfleet-task"', json.dumps(task_user))
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
    moto, url = start_moto_server(Path(tempfile.mkdtemp()) / "moto.log")
    os.environ.update(emulator_environment(url))
    bin_dir = Path(sys.executable).parent
    try:
        with fake_metadata((METADATA_ADDRESS, 80)) as metadata:
            metadata.answer("instance-id", INSTANCE_ID)
            sqs = boto3.client("sqs")
            requests = sqs.create_queue(QueueName="requests")["QueueUrl"]
            responses = sqs.create_queue(QueueName="responses")["QueueUrl"]
            boto3.client("dynamodb").create_table(
                TableName="claims",
                KeySchema=[{"AttributeName": "bundle", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "bundle", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            sqs.send_message(QueueUrl=requests, MessageBody=bundle)
            # No --instance-id: the worker asks the metadata service, as on EC2.
            worker = subprocess.run(
                [
                    str(bin_dir / "taskfleet"),
                    "worker",
                    "--request-queue-url",
                    requests,
                    "--response-queue-url",
                    responses,
                    "--claim-table",
                    "claims",
                    "--region",
                    "us-east-1",
                    "--idle-timeout",
                    "2",
                    "--task-user",
                    task_user,
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if worker.returncode != 0:
                sys.exit(f"worker failed ({worker.returncode}): {worker.stderr}")
            while messages := sqs.receive_message(
                QueueUrl=responses, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", []):
                for message in messages:
                    for result in json.loads(message["Body"])["results"]:
                        print(json.dumps(result))
                    sqs.delete_message(QueueUrl=responses, ReceiptHandle=message["ReceiptHandle"])
    finally:
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
