"""Makes any Python process started with this folder on PYTHONPATH count its AWS requests
into the folder that TASKFLEET_BENCH_REQUESTS names (see bench/aws_calls.py): a
`taskfleet worker` as the party "worker", any other process as "client"."""

import os
import sys
from pathlib import Path

if os.environ.get("TASKFLEET_BENCH_REQUESTS"):
    from bench.aws_calls import record_requests

    party = "worker" if sys.argv[1:2] == ["worker"] else "client"
    record_requests(Path(os.environ["TASKFLEET_BENCH_REQUESTS"]), party)
