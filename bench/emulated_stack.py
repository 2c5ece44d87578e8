"""The stack on the emulator for a benchmark, with every AWS request counted."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from bench.aws_calls import count_in_children, record_requests
from scripts import local_aws


class CountedStack(NamedTuple):
    """A benchmark's temporary folder, where its processes count their requests,
    the stack's state folder and its outputs."""

    directory: Path
    requests: Path
    state: Path
    outputs: dict[str, str]


@contextmanager
def counted_stack(
    prefix: str, context: dict[str, str], *, count_here: bool = False
) -> Iterator[CountedStack]:
    """The stack stood up on the emulator (``context``: its CDK settings) in a new
    temporary folder, the environment set to reach it; every process started from
    here on (the fleet's workers too) counts its requests, and this one as well
    with ``count_here``. Torn down and removed after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as temporary:
        directory = Path(temporary)
        requests = directory / "requests"
        requests.mkdir()
        count_in_children(requests)
        if count_here:
            record_requests(requests)
        state = directory / "local-aws"
        print("standing up the emulator, the stack and the local fleet ...", flush=True)
        outputs = local_aws.up(state, port=None, context=context)
        try:
            os.environ.update(local_aws.environment(local_aws.emulator_of(state)["port"]))
            yield CountedStack(directory, requests, state, outputs)
        finally:
            local_aws.down(state)
