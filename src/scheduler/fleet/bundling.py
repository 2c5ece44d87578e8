"""Packing a job's tasks into bundles: many tasks per SQS message.

How many tasks a bundle holds is ``bundle_sizing``'s choice; the packer
turns them into messages, splitting where one would pass the message limit.
"""

import secrets
from typing import NamedTuple

import msgspec

from worker.bundle import MESSAGE_HEADROOM_BYTES, Bundle, BundleFiles, BundleTask, encode_bundle
from worker.contracts import MAX_MESSAGE_BYTES
from worker.record_items import RecordPlace

#: Largest bundle body, in bytes.
MAX_BUNDLE_BYTES = MAX_MESSAGE_BYTES - MESSAGE_HEADROOM_BYTES

_encoder = msgspec.json.Encoder()


class PackedBundle(NamedTuple):
    """A bundle ready for the request queue."""

    bundle_id: str
    body: str  # the message body
    tasks: int  # how many tasks it holds
    job: str = ""  # whose: what sending it is charged to


class BundlePacker:
    """Turns a job's tasks, in order, into bundles."""

    def __init__(
        self,
        job_id: str,
        files: list[str],
        per_bundle: int,
        timeout: float | None = None,
        job_files: BundleFiles | None = None,
        records: RecordPlace | None = None,
    ) -> None:
        """``timeout``: the job's time limit per task, 0 for none (None: the worker's);
        ``job_files``: what files its tasks get and give (None: none); ``records``:
        where its workers store its records (None: its readers store them)."""
        if per_bundle < 1:
            raise ValueError("per_bundle must be at least 1")
        self.job_id = job_id
        # Bundle ids are the claim table's keys: another packer for the same
        # job (the service packs each chunk alone, a scheduler may restart)
        # must not reuse one.
        self.prefix = f"{job_id}-{secrets.token_hex(8)}"
        self.files = files
        self.per_bundle = per_bundle
        self.timeout = timeout
        self.job_files = job_files
        self.records = records
        self._tasks: list[BundleTask] = []
        empty = self._bundle(f"{self.prefix}-000000")
        self._bytes = len(encode_bundle(empty))
        self._base_bytes = self._bytes
        self._count = 0

    def add(self, file_number: int, line: int, text: str) -> PackedBundle | None:
        """Add a task; returns the full bundle when this task starts a new one."""
        task = BundleTask(file_number, line, text)
        size = len(_encoder.encode(task)) + 1  # and its comma
        if self._base_bytes + size > MAX_BUNDLE_BYTES:
            raise ValueError(f"task on line {line} alone is too large for a bundle")
        finished = None
        if self._tasks and (
            len(self._tasks) >= self.per_bundle or self._bytes + size > MAX_BUNDLE_BYTES
        ):
            finished = self.finish()
        self._tasks.append(task)
        self._bytes += size
        return finished

    def finish(self) -> PackedBundle | None:
        """The bundle being packed, if it has tasks."""
        if not self._tasks:
            return None
        self._count += 1
        bundle_id = f"{self.prefix}-{self._count:06d}"
        body = encode_bundle(self._bundle(bundle_id))
        packed = PackedBundle(bundle_id, body, len(self._tasks), self.job_id)
        self._tasks = []
        self._bytes = self._base_bytes
        return packed

    def _bundle(self, bundle_id: str) -> Bundle:
        return Bundle(
            bundle_id,
            self.job_id,
            self.files,
            self._tasks,
            self.timeout,
            self.job_files,
            self.records,
        )
