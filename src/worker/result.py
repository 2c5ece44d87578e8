"""The result wire format: one JSON object per task, one per line (JSON Lines).

Every record has the same keys: ``id``, ``job``, ``file``, ``line``, ``task``,
``status``, ``exit_code``, ``worker``, ``started_at``, ``finished_at`` (epoch
seconds), ``duration_ms``, ``error``, and for shell commands ``stdout``,
``stderr`` (cut to a limit, ``truncated`` says so); those three are null and
false for built-in sleeps; ``worker`` and ``started_at`` are null for a task that
never ran to an outcome of its own (lost, cancelled, dead-lettered); ``attempt``
(1 unless the task was run again, see ``--retries``) and ``earlier_exit_codes``
(of the attempts before, null for one that timed out or was lost); ``files``
(with ``--output-dir``: the files the task left in its working directory that
came back, each ``path``, ``size``, ``sha256``; null without it),
``files_error`` (what of them did not come back, and why) and
``files_object`` (on the fleet: the key, in the stack's job-files bucket, of
the tar its files travelled in; null locally and for a task that left none).
Encoding is
on the hot path of every task, so the record is a msgspec Struct, encoded a
chunk at a time by msgspec's JSON encoder.
"""

import time
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated

import msgspec

from worker.task import MAX_FILE_NAME_CHARS, FileName, JobId, LineNumber, task_id

#: Bytes of stdout and of stderr kept per task; the rest is dropped and the
#: record says ``"truncated": true``.
OUTPUT_LIMIT_BYTES = 64 * 1024

#: Bounds a record read from elsewhere (the fleet's response queue) must keep.
Output = Annotated[str, msgspec.Meta(max_length=OUTPUT_LIMIT_BYTES)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e11)]
Short = Annotated[str, msgspec.Meta(max_length=256)]
Message = Annotated[str, msgspec.Meta(max_length=64 * 1024)]
ExitCode = Annotated[int, msgspec.Meta(ge=-(2**31), lt=2**31)]
TaskId = Annotated[str, msgspec.Meta(max_length=MAX_FILE_NAME_CHARS)]


#: Files one record may name (a task that leaves more has the rest refused).
MAX_FILES_PER_TASK = 10_000


class OutputFile(msgspec.Struct, gc=False):
    """A file a task left in its working directory, as it came back."""

    path: Annotated[str, msgspec.Meta(max_length=4096)]  # relative, '/' between parts
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class Status(StrEnum):
    """How a task ended."""

    SUCCEEDED = "succeeded"  #: sleep finished, or the command exited 0
    FAILED = "failed"  #: the command exited non-zero or could not start
    TIMED_OUT = "timed_out"  #: the command ran past its time limit and was killed
    LOST = "lost"  #: its worker died, or the scheduler stopped, while it could have run
    CANCELLED = "cancelled"  #: its job was cancelled before it ran


class Outcome(msgspec.Struct, gc=False):
    """What running one task produced, before it is tagged with ids.

    ``duration_ms`` is rounded to the microsecond where it is measured;
    ``started_at`` is None for a task that was never seen to start.
    """

    status: Status
    exit_code: int | None
    started_at: float | None
    finished_at: float
    duration_ms: float
    stdout: str | None = None
    stderr: str | None = None
    truncated: bool = False
    error: str | None = None
    files: tuple[OutputFile, ...] | None = None  # with --output-dir: what came back
    files_error: str | None = None  # what of them did not, and why
    files_object: str | None = None  # on the fleet: the tar they travel in (output_pack)


class Result(msgspec.Struct, gc=False):
    """One task's result record, as taskfleet's own processes pass it on."""

    id: str
    job: str
    file: str
    line: int
    task: str
    status: Status
    exit_code: int | None
    worker: str | None
    started_at: float | None
    finished_at: float
    duration_ms: float
    error: str | None
    stdout: str | None
    stderr: str | None
    truncated: bool
    attempt: int = 1
    # A tuple: its default is shared, where a list would be made for every record.
    earlier_exit_codes: tuple[int | None, ...] = ()
    files: tuple[OutputFile, ...] | None = None
    files_error: str | None = None
    files_object: str | None = None


#: Most attempts of one task (``--retries`` at most this less one).
MAX_ATTEMPTS = 101


class CheckedResult(Result, gc=False):
    """A record read from elsewhere (the fleet's response queue): decoding it
    checks every field's bounds. Records from local workers and the journal
    skip those checks, which would cost their hot path a microsecond each."""

    id: TaskId
    job: JobId
    file: FileName
    line: LineNumber
    task: str  # a line the worker refused as too long comes back whole
    exit_code: ExitCode | None
    worker: Short | None
    started_at: Seconds | None
    finished_at: Seconds
    duration_ms: Seconds
    error: Message | None
    stdout: Output | None
    stderr: Output | None
    attempt: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)] = 1
    earlier_exit_codes: Annotated[
        tuple[ExitCode | None, ...], msgspec.Meta(max_length=MAX_ATTEMPTS - 1)
    ] = ()
    files: Annotated[tuple[OutputFile, ...], msgspec.Meta(max_length=MAX_FILES_PER_TASK)] | None = (
        None
    )
    files_error: Message | None = None
    files_object: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


def make_result(
    task_id: str, job: str, file: str, line: int, task: str, worker: str | None, outcome: Outcome
) -> Result:
    """The record of a task from its ids and its outcome."""
    return Result(
        task_id,
        job,
        file,
        line,
        task,
        outcome.status,
        outcome.exit_code,
        worker,
        outcome.started_at,
        outcome.finished_at,
        outcome.duration_ms,
        outcome.error,
        outcome.stdout,
        outcome.stderr,
        outcome.truncated,
        files=outcome.files,
        files_error=outcome.files_error,
        files_object=outcome.files_object,
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Result)


def encode_lines(results: Sequence[Result]) -> bytes:
    """Records as JSON Lines, each line ending in a newline."""
    return _encoder.encode_lines(results)


def decode(line: bytes | str) -> Result:
    """One record from its JSON line; raises ``msgspec.ValidationError`` on a bad one."""
    return _decoder.decode(line)


def unfinished_results(
    job: str, tasks: Iterable[tuple[int, str, int, str]], status: Status, reason: str
) -> list[Result]:
    """Records of tasks that never ran to an outcome of their own (lost,
    cancelled, dead-lettered): (file number, file, line, text) each, all ended
    now for ``reason``. No worker and no start time: none is known."""
    outcome = Outcome(status, None, None, time.time(), 0.0, error=reason)
    return [
        make_result(task_id(job, number, line), job, file, line, text, None, outcome)
        for number, file, line, text in tasks
    ]
