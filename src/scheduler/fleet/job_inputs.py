"""Shipping a fleet job's inputs (``--upload``) to the stack's job-files bucket.

Files go up content-addressed, ``inputs/sha256/<hash>``: a file a job before
this one shipped (this client or another) is found by a HEAD and not sent
again. The job's list of its inputs (name, size, sha256 each) goes up as
``inputs/jobs/<job>.json``: what each instance fetches once, then the files it
names that it has not got.

An object found again keeps its first upload's age, and the bucket expires
objects the job retention after they were written: one older than a day is
copied onto itself, which renews its age, so a job that reuses it finds it
for a whole retention too (a day, not every time: a copy bills as a PUT).
"""

import base64
import datetime
from collections.abc import Sequence
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from worker.input_manifest import ManifestEntry, blob_key, encode_manifest, manifest_key
from worker.inputs import InputFile
from worker.output_pack import sha256_of

#: The largest object one PutObject may send: a larger input would need a
#: multipart upload, which is not built.
MAX_OBJECT_BYTES = 5 * 1024**3

#: Age past which an input found in the bucket is renewed (see above).
RENEW_AFTER = datetime.timedelta(days=1)


class Shipped(NamedTuple):
    """What shipping a job's inputs did."""

    sent: int  # files sent
    reused: int  # files found in the bucket already (renewed or not)


def too_large(files: Sequence[InputFile]) -> InputFile | None:
    """The first input too large to go up in one request, if any."""
    return next((file for file in files if file.size > MAX_OBJECT_BYTES), None)


def ship_inputs(s3: Any, bucket: str, job: str, files: Sequence[InputFile]) -> Shipped:
    """Send what the bucket lacks of ``files`` (checked: worker.inputs), then the job's list."""
    entries: list[ManifestEntry] = []
    sent = reused = 0
    shipped: set[str] = set()  # one job's two copies of a file go up once
    for file in files:
        sha256 = sha256_of(file.source)
        entries.append(ManifestEntry(file.name, file.size, sha256))
        if sha256 in shipped:
            continue
        shipped.add(sha256)
        key = blob_key(sha256)
        written = last_written(s3, bucket, key)
        if written is not None:
            reused += 1
            if datetime.datetime.now(datetime.UTC) - written > RENEW_AFTER:
                s3.copy_object(
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": bucket, "Key": key},
                    MetadataDirective="REPLACE",  # S3 copies an object onto itself only so
                )
            continue
        with file.source.open("rb") as body:
            # S3 refuses the upload if what it reads is not what was hashed (a
            # file written to meanwhile): no object holds other bytes than its
            # key names, for this job and every later one that finds it.
            s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumSHA256=checksum(sha256))
        sent += 1
    s3.put_object(Bucket=bucket, Key=manifest_key(job), Body=encode_manifest(entries))
    return Shipped(sent, reused)


def checksum(sha256: str) -> str:
    """A hex sha256 as S3's ``x-amz-checksum-sha256`` takes it (base64)."""
    return base64.b64encode(bytes.fromhex(sha256)).decode()


def last_written(s3: Any, bucket: str, key: str) -> datetime.datetime | None:
    """When an object was last written, or None if there is none."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    written: datetime.datetime = head["LastModified"]
    return written
