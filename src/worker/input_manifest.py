"""The wire format of a fleet job's inputs in the job-files bucket.

Each input file lies under its content's sha256, ``inputs/sha256/<hash>``;
a job's list of its inputs (name, size, sha256 each: JSON) under
``inputs/jobs/<job>.json``. The client writes both; instances read them.
"""

from typing import Annotated

import msgspec

from worker.contracts import JobFiles

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class ManifestEntry(msgspec.Struct, frozen=True):
    """One input as a job's list names it."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]  # where a task sees it
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Sha256


def blob_key(sha256: str) -> str:
    """Where an input with this content lies."""
    return f"{JobFiles.INPUTS}sha256/{sha256}"


def manifest_key(job: str) -> str:
    """Where a job's list of its inputs lies."""
    return f"{JobFiles.INPUTS}jobs/{job}.json"


def encode_manifest(entries: list[ManifestEntry]) -> bytes:
    return msgspec.json.encode(entries)


def decode_manifest(data: bytes) -> list[ManifestEntry]:
    """A job's list; ``msgspec.ValidationError`` if it is not one."""
    return msgspec.json.decode(data, type=list[ManifestEntry])
