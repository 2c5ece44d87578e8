"""A service job's files from the client's side (``submit --upload/--output-dir``,
``results --files``).

Inputs go content-addressed: the client hashes each file, sends the job's
list of them, and sends only the contents the scheduler answers it lacks (it
checks each against its sha256), so a file an earlier job sent is not sent
again. Outputs come back a task at a time, as its record arrives: its tar is
fetched, unpacked beside the output directory the way every path does
(``worker.output_pack.bring_back``: never outside it, never through a link),
and must hold exactly the files the record names.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from client.errors import ClientError
from client.service_client import SchedulerClient
from scheduler.output_budget import OutputBudget
from worker.input_manifest import ManifestEntry, encode_manifest
from worker.inputs import InputFile
from worker.output_pack import MAX_TAR_BYTES, bring_back, sha256_of
from worker.result import Result
from worker.workdir import PARTIAL, remove_tree, task_label


class SentInputs(NamedTuple):
    """A job's inputs on the scheduler: their list's id, and what sending them did."""

    id: str
    files: int  # in the list
    sent: int  # contents sent
    present: int  # contents the scheduler had already


def send_inputs(client: SchedulerClient, uploads: Sequence[InputFile]) -> SentInputs:
    """Give the scheduler checked inputs (``worker.inputs.check_uploads``), sending
    only the contents it lacks."""
    entries: list[ManifestEntry] = []
    sources: dict[str, InputFile] = {}
    for file in uploads:
        sha256 = sha256_of(file.source)
        entries.append(ManifestEntry(file.name, file.size, sha256))
        sources.setdefault(sha256, file)
    inputs_id, missing = client.add_inputs(encode_manifest(entries))
    for sha256 in missing:
        source = sources.get(sha256)
        if source is None:
            raise ClientError(f"scheduler asked for a content no input has: {sha256}")
        client.put_blob(sha256, source.source, source.size)
    return SentInputs(inputs_id, len(entries), len(missing), len(sources) - len(missing))


class ServiceOutputs:
    """A service job's tasks' files brought back under ``output_dir`` as its
    records are written, the job's limit kept (``OutputBudget``)."""

    def __init__(self, client: SchedulerClient, job_id: str, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.client = client
        self.job_id = job_id
        self.output_dir = output_dir
        self.budget = OutputBudget(output_dir)

    def records(self, records: list[Result]) -> list[Result]:
        """The records, the files each names brought back."""
        return self.budget.admit([self._bring_back(record) for record in records])

    def _bring_back(self, record: Result) -> Result:
        """A task's files: on the scheduler's workers, those its record names; on
        the fleet, those in the tar its record names (the scheduler checks it)."""
        if not record.files and not record.files_object:
            return record
        label = task_label(record.file, record.line)

        def fetch(tar: Path) -> None:
            self.client.task_files(self.job_id, label, tar, MAX_TAR_BYTES)

        expected = record.files or None
        return bring_back(record, self.output_dir, fetch, (ClientError,), expected)

    def close(self) -> None:
        """Remove what fetches cut off (Ctrl-C) had begun to bring back."""
        remove_tree(self.output_dir / PARTIAL)
