"""A service job's files on its stack's fleet (``submit --remote/--hybrid`` with files).

The fleet gets a job's inputs as ``run --remote --upload`` gives them: the
service, which holds the stack's credentials, ships them from its store to
the job-files bucket, content-addressed (``scheduler.fleet.job_inputs``), before
the job's first bundle; its bundles say so. A task on the fleet leaves its
files in the bucket as one tar (``worker.output_pack``); the service fetches it
when the client asks for the task's files, checked against the sha256 its key
names (``scheduler.fleet.job_outputs``), and serves it as it serves the tar of a
task that ran on its own workers. Tars in the bucket expire with the stack's
retention of jobs' files (its lifecycle rule), whichever is shorter.
"""

from collections.abc import Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from scheduler.errors import SchedulerError
from scheduler.fleet.aws import RemoteFleet
from scheduler.fleet.job_inputs import MAX_OBJECT_BYTES, ship_inputs, too_large
from scheduler.fleet.job_outputs import TarFetcher
from scheduler.jobs.file_store import FilesError
from worker.inputs import InputFile
from worker.output_pack import PackError
from worker.usage import Usage


class FleetFilesError(SchedulerError):
    """The bucket could not be reached, or gave what it should not."""


class FleetFiles:
    """Ships a service's jobs' inputs to its stack's bucket and fetches their tars."""

    def __init__(self, fleet: RemoteFleet) -> None:
        self.fleet = fleet
        self.bucket = fleet.resources.job_files_bucket
        self.s3 = fleet.s3  # made now, in one thread: boto3 makes clients unsafely

    @classmethod
    def of(cls, fleet: RemoteFleet) -> "FleetFiles | None":
        """The fleet's files, or None for a stack without a job-files bucket."""
        return cls(fleet) if fleet.resources.job_files_bucket else None

    def ship(self, job_id: str, inputs: Sequence[InputFile]) -> Usage:
        """Send a job's inputs the bucket lacks, then its list; what that used."""
        if (file := too_large(inputs)) is not None:
            raise FilesError(413, f"input {file.name}: over {MAX_OBJECT_BYTES} bytes for the fleet")
        try:
            with self.fleet.meter.charged_to(job_id):
                ship_inputs(self.s3, self.bucket, job_id, inputs)
        except (BotoCoreError, ClientError) as error:
            raise FleetFilesError(f"could not send the inputs to {self.bucket}: {error}") from error
        finally:
            spent = self.fleet.meter.take(job_id)
        return spent

    def fetch(self, job_id: str, key: str, tar: Path) -> None:
        """Write a task's tar (at ``key``) to ``tar``, checked."""
        fetcher = TarFetcher(self.s3, self.fleet.meter, self.bucket, job_id)
        try:
            fetcher.fetch(key, tar)
        except (BotoCoreError, ClientError, PackError) as error:
            raise FleetFilesError(f"{key}: {error}") from error
