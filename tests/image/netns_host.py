"""A fleet instance in miniature, inside a network namespace of its own.

Run by ``test_task_isolation.py`` under ``unshare --net``, as root: the
namespace's loopback carries the metadata address 169.254.169.254 with a
fake instance metadata service on it, the image's task firewall is loaded
(for the task user named on the command line), and moto_server stands in
for SQS and DynamoDB. A real ``taskfleet worker --task-user USER`` runs the
bundle given on stdin; the results are printed on stdout as JSON Lines.

usage: netns_host.py FIREWALL_FILE TASK_USER < BUNDLE_JSON
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx

METADATA_ADDRESS = "169.254.169.254"
INSTANCE_ID = "i-0namespace"


class FakeMetadata(http.server.BaseHTTPRequestHandler):
    """IMDSv2 as far as the worker asks: a token, then its instance id."""

    def do_PUT(self) -> None:
        self._answer(b"token-of-the-fake")

    def do_GET(self) -> None:
        if self.path.endswith("/meta-data/instance-id"):
            self._answer(INSTANCE_ID.encode())
        else:
            self.send_error(404)

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def main() -> None:
    firewall, task_user = Path(sys.argv[1]), sys.argv[2]
    bundle = sys.stdin.read()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{METADATA_ADDRESS}/32", "dev", "lo"], check=True)
    rules = firewall.read_text().replace('"taskfleet-task"', json.dumps(task_user))
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
    metadata = http.server.ThreadingHTTPServer((METADATA_ADDRESS, 80), FakeMetadata)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    moto = subprocess.Popen(
        [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://localhost:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
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
        metadata.shutdown()


if __name__ == "__main__":
    main()
