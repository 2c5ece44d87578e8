"""A fleet task moving its own files, as a user writes it by hand (the peer of bench/files_path.py).

    python -m bench.files_by_hand BUCKET INPUT_KEY NAME OUTPUT_PREFIX COMMAND

Run as a task's command: it downloads the shared input ``INPUT_KEY`` of
``BUCKET`` into its working directory as ``NAME`` (one GetObject), runs
``COMMAND`` with the shell there, then uploads every file the command left,
one PutObject a file, to ``OUTPUT_PREFIX/<name>``. It reaches S3 with the
credentials and endpoint of its environment: the worker's, on the emulated
fleet. It prints what it moved and how long each direction took, as one JSON
object, for the bench to read from the task's record: the download timed
from the GET's answer to its last write (as the bench times taskfleet's
fetch), and from the request too.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

#: Bytes read from the download's stream at a time.
BLOCK_BYTES = 1024 * 1024


def main() -> None:
    bucket, key, name, prefix, command = sys.argv[1:]
    s3: Any = boto3.client("s3")
    here = Path.cwd()
    asked = time.perf_counter()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    answered = time.perf_counter()  # the answer's head is here: its body follows
    fetched = 0
    with (here / name).open("wb") as file:
        while block := body.read(BLOCK_BYTES):
            file.write(block)
            fetched += len(block)
    ended = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", command], check=True, cwd=here)
    outputs = sorted(path for path in here.rglob("*") if path.is_file() and path != here / name)
    began = time.perf_counter()
    sent = 0
    for path in outputs:
        data = path.read_bytes()
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(here).as_posix()}", Body=data)
        sent += len(data)
    sent_in = time.perf_counter() - began
    print(json.dumps({"input_bytes": fetched, "input_seconds": ended - answered,
                      "input_request_seconds": ended - asked, "output_bytes": sent,
                      "output_seconds": sent_in, "output_files": len(outputs)}))  # fmt: skip


if __name__ == "__main__":
    main()
