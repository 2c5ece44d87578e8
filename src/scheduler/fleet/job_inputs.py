"""Shipping a fleet job's inputs (``--upload``) to the stack's job-files bucket.

Files go up content-addressed, ``inputs/sha256/<hash>``: a file a job before
this one shipped (this client or another) is found by a HEAD and not sent
again. The job's list of its inputs (name, size, sha256 each) goes up as
``inputs/jobs/<job>.json``: what each instance fetches once, then the files it
names that it has not got.

Not done: an object found again keeps its first upload's age, so the bucket's
expiry (the job retention after it was written) may take it while a later job
that reuses it is still queued; a copy onto itself would renew it.
"""

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from worker.input_manifest import ManifestEntry, blob_key, encode_manifest, manifest_key
from worker.inputs import InputFile

HASH_BUFFER_BYTES = 1024 * 1024


class Shipped(NamedTuple):
    """What shipping a job's inputs did: its list's key and the S3 traffic."""

    manifest: str
    requests: int
    bytes_sent: int
    reused: int  # files found in the bucket already


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(HASH_BUFFER_BYTES):
            digest.update(block)
    return digest.hexdigest()


def ship_inputs(s3: Any, bucket: str, job: str, files: Sequence[InputFile]) -> Shipped:
    """Send what the bucket lacks of ``files`` (checked: worker.inputs), then the job's list."""
    entries: list[ManifestEntry] = []
    requests = sent = reused = 0
    uploaded: set[str] = set()  # one job's two copies of a file go up once
    for file in files:
        sha256 = sha256_of(file.source)
        entries.append(ManifestEntry(file.name, file.size, sha256))
        if sha256 in uploaded:
            continue
        uploaded.add(sha256)
        requests += 1
        if exists(s3, bucket, blob_key(sha256)):
            reused += 1
            continue
        with file.source.open("rb") as body:
            s3.put_object(Bucket=bucket, Key=blob_key(sha256), Body=body)
        requests += 1
        sent += file.size
    manifest = encode_manifest(entries)
    s3.put_object(Bucket=bucket, Key=manifest_key(job), Body=manifest)
    return Shipped(manifest_key(job), requests + 1, sent + len(manifest), reused)


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
