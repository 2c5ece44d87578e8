"""Text from elsewhere, shown on a terminal as what it is.

A file name, a task's output or a scheduler's message may hold characters a
terminal acts on instead of showing: C0 controls and DEL (ESC starts an escape
sequence), C1 controls (U+009B is a CSI on many terminals), and the
bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), which
make a line read differently from what it holds. ``visible`` writes each as
the escape ``\\uXXXX``: visible on a terminal, and the way JSON writes a
character, so a JSON line it passes through still decodes to the same text.
Everything the client commands print goes through it.
"""

import codecs
import io
import logging
import re
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: What a terminal may act on instead of showing.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str) -> str:
    """``text`` with every character a terminal acts on, newlines included, as ``\\uXXXX``."""
    return UNSAFE.sub(_escape, text)


def visible_lines(text: str) -> str:
    """``text`` made visible line by line: its newlines stay newlines."""
    return "\n".join(visible(line) for line in text.split("\n"))


class VisibleLogFormatter(logging.Formatter):
    """Log records made visible: a message is one line whatever it holds; a
    traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return visible(super().formatMessage(record))

    def formatException(  # noqa: N802 - logging's name
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return visible_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return visible_lines(super().formatStack(stack_info))


def show_logs_visibly() -> None:
    """Warnings logged with no handler set up (logging's last resort, on
    stderr: what a client command logs) are made visible."""
    if logging.lastResort is not None:
        logging.lastResort.setFormatter(VisibleLogFormatter())


class _VisibleRaw(io.RawIOBase):
    """The bytes of UTF-8 text, written on made visible line by line."""

    def __init__(self, target: BinaryIO) -> None:
        super().__init__()
        self._target = target
        # A character cut in two by a write is made whole by the next one.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, buffer: "ReadableBuffer", /) -> int:
        data = bytes(buffer)
        self._target.write(visible_lines(self._decoder.decode(data)).encode())
        return len(data)

    def flush(self) -> None:
        self._target.flush()


def visible_stream(target: BinaryIO) -> BinaryIO:
    """A stream that writes UTF-8 text (JSON lines, say) to ``target`` made
    visible: a results record shown on a terminal is the same JSON, each
    character a terminal would act on written as its JSON escape."""
    return io.BufferedWriter(_VisibleRaw(target))
