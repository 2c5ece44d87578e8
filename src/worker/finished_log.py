"""The results a remote worker has finished but not yet sent, kept on its instance.

A worker sends results about once a second. If its process dies in between
(a crash, an out-of-memory kill) and is started again on the same instance
(systemd's ``Restart=on-failure``; the local fleet does the same), the new
process takes its bundles back and finds here what the old one had finished:
it sends those results instead of running their tasks again. Only the tasks
that were running when the process died run twice.

One file per held bundle, ``<bundle id>.jsonl`` in the worker's state folder,
one line per finished task (``index`` and the result), written with a single
``write`` as each task ends so that a killed process leaves whole lines. The
file goes when the bundle is done or given back, and every file when the
worker ends (a bundle taken back but received by another instance leaves
one behind until then).
"""

import logging
import os
from pathlib import Path

import msgspec

from worker.result import Result

log = logging.getLogger("taskfleet.worker")


class FinishedTask(msgspec.Struct, array_like=True):
    """One line of the log: which task of the bundle, and its result."""

    index: int
    result: Result


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FinishedTask)


class FinishedLog:
    """The per-bundle logs in one folder (created 0700: results may be private)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, bundle_id: str) -> Path:
        # Bundle ids are checked at decoding: 1-128 letters, digits, '-', '_', ':', '.'.
        return self.folder / f"{bundle_id}.jsonl"

    def append(self, bundle_id: str, index: int, result: Result) -> None:
        """Note a finished task, before its result waits to be sent."""
        line = _encoder.encode(FinishedTask(index, result)) + b"\n"
        descriptor = os.open(self._path(bundle_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)

    def read(self, bundle_id: str) -> dict[int, Result]:
        """The tasks an earlier process finished, by index; a torn last line is skipped."""
        try:
            lines = self._path(bundle_id).read_bytes().splitlines()
        except FileNotFoundError:
            return {}
        finished: dict[int, Result] = {}
        for line in lines:
            try:
                task = _decoder.decode(line)
            except msgspec.DecodeError:
                log.warning("bundle %s: skipped a torn line of its finished log", bundle_id)
                continue
            finished[task.index] = task.result
        return finished

    def forget(self, bundle_id: str) -> None:
        """The bundle is done or given back: its results are sent."""
        self._path(bundle_id).unlink(missing_ok=True)

    def clear(self) -> None:
        """The worker ends holding nothing: no log is anyone's any more."""
        for path in self.folder.glob("*.jsonl"):
            path.unlink(missing_ok=True)
