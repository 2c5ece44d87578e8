"""The task wire format: one workload line, parsed and checked.

A line is either ``sleep N`` (N whole milliseconds, run inside the worker
process without a fork) or any other text, which is a shell command for
``/bin/sh -c``. Blank lines and ``#`` comments carry no task.
"""

import os
from typing import Annotated

import msgspec

from worker.errors import TaskLineError

#: Longest accepted line, in characters. A longer line is almost certainly
#: a file that is not a workload (a binary, a minified blob).
MAX_LINE_CHARS = 8192

#: Longest accepted ``sleep``, in milliseconds (24 hours). Anything longer is
#: a typo or a unit mix-up (seconds written as milliseconds times 1000).
MAX_SLEEP_MS = 86_400_000

#: Largest line number a task may carry: 2**53 - 1, the largest integer every
#: JSON reader holds exactly (and far below what the journal can store).
MAX_LINE_NUMBER = 2**53 - 1


#: Longest accepted workload file name, in characters.
MAX_FILE_NAME_CHARS = 1024

#: A file name: not empty, no control characters (they would reach terminals).
FILE_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"

#: A job id on the wire: short, and safe in file names, keys and logs.
JOB_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"

#: Types of the fields every wire format checks the same way.
LineNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_LINE_NUMBER)]
FileName = Annotated[str, msgspec.Meta(max_length=MAX_FILE_NAME_CHARS, pattern=FILE_NAME_PATTERN)]
JobId = Annotated[str, msgspec.Meta(pattern=JOB_ID_PATTERN)]


def new_job_id() -> str:
    """A short random job id, unique enough to tell runs and jobs apart."""
    return os.urandom(4).hex()  # what secrets.token_hex does, without loading OpenSSL


def task_id(job_id: str, file_number: int, line: int) -> str:
    """The id of a task: its job, which file of the job (from 1), and its line."""
    return f"{job_id}:{file_number}:{line}"


def is_task_line(text: str) -> bool:
    """True when a (stripped) line carries a task rather than a comment or nothing."""
    return bool(text) and not text.startswith("#")


def check_line(text: str) -> int | None:
    """The duration of a ``sleep N`` line in milliseconds, or None for a shell command.

    Raises ``TaskLineError`` with the reason when the line cannot run. Called for
    every task, twice (check, then dispatch): the common case comes first.
    """
    if len(text) > MAX_LINE_CHARS:
        raise TaskLineError(
            f"line is {len(text)} characters long, above the limit of {MAX_LINE_CHARS}"
        )
    if "\x00" in text:
        raise TaskLineError("line contains a NUL byte")
    if text[:5] != "sleep" or text[5:6] not in ("", " ", "\t"):
        return None  # a shell command, including ones like 'sleepy' or 'sleep.sh'
    argument = text[6:].strip()
    if argument.isdigit() and argument.isascii():
        duration = int(argument)
        if duration > MAX_SLEEP_MS:
            raise TaskLineError(
                f"sleep duration {duration} ms is above the maximum of {MAX_SLEEP_MS} ms"
            )
        return duration
    if not argument:
        raise TaskLineError("sleep needs a duration in milliseconds, e.g. 'sleep 100'")
    raise TaskLineError(
        f"sleep duration must be a whole number of milliseconds >= 0, got {argument!r}"
    )


class TaskLine(msgspec.Struct, gc=False):
    """A task as a client sends it to the scheduler service: one JSON object a line."""

    file: FileName  # the workload file it came from, as the client named it
    line: LineNumber  # in that file, from 1
    task: str  # the line itself


_task_line_encoder = msgspec.json.Encoder()
_task_line_decoder = msgspec.json.Decoder(TaskLine)


def encode_task_lines(tasks: list[TaskLine]) -> bytes:
    """Tasks as JSON Lines, each line ending in a newline."""
    return _task_line_encoder.encode_lines(tasks)


def decode_task_line(data: bytes) -> TaskLine:
    """One task from its JSON line; raises ``msgspec.DecodeError`` on a bad one."""
    return _task_line_decoder.decode(data)
