"""One bundle a remote worker holds: which tasks are left to start, which
results wait to be sent, and which are sent (the progress the claim records).

Slot threads take tasks from it and hand results back; the worker's reporter
sends them and records progress; a release (the worker stopping) makes the
rest someone else's. Every method takes the run's lock: several slots share
one bundle.
"""

import threading
import time
from collections import deque
from typing import Any

from worker.bundle import Bundle
from worker.claims import Claim, is_done, progress_bitmap
from worker.contracts import MAX_MESSAGE_BYTES
from worker.result import Result
from worker.usage import Usage

#: Seconds a finished task's result may wait before its bundle reports it.
REPORT_INTERVAL_SECONDS = 1.0

#: Bytes of results that make a bundle report at once: most of a message's
#: worth (``result_bytes`` is an estimate), so a burst of tiny tasks' results
#: goes in one message, one receive and one store for the reader.
REPORT_BYTES = MAX_MESSAGE_BYTES * 3 // 4


def result_bytes(result: Result) -> int:
    """About what a result adds to a result message."""
    return len(result.stdout or "") + len(result.stderr or "") + 256


class BundleRun:
    """The state of one held bundle."""

    def __init__(
        self,
        message: dict[str, Any],
        bundle: Bundle,
        claim: Claim,
        recovered: dict[int, Result] | None = None,
    ) -> None:
        """``recovered``: results an earlier process on this instance finished and
        may not have sent; those not in the claim's progress are sent, not run."""
        self.message = message
        self.receipt: str = message["ReceiptHandle"]
        self.duplicates: list[str] = []  # receipts of the same bundle delivered again
        self.bundle = bundle
        size = len(bundle.tasks)
        self.sent = {index for index in range(size) if is_done(claim.done, index)}
        self._unsent = [
            (index, result)
            for index, result in sorted((recovered or {}).items())
            if index < size and index not in self.sent
        ]
        self._unsent_bytes = sum(result_bytes(result) for _, result in self._unsent)
        self._oldest_unsent = time.monotonic() - REPORT_INTERVAL_SECONDS  # due at once
        done = self.sent | {index for index, _ in self._unsent}
        self.pending = deque(index for index in range(size) if index not in done)
        self.running = 0
        self.released = False  # given up: nothing more of it starts or is reported
        self.cancelled = False  # its job was cancelled: nothing more of it starts
        self.unsent_report: Any = None  # a usage report whose send failed: sent again as is
        self.ending_ahead: Usage | None = None  # the ending calls, counted in its last report
        self._lock = threading.Lock()

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    def next_task(self) -> int | None:
        """The index of a task to start now, or None."""
        with self._lock:
            if self.released or not self.pending:
                return None
            self.running += 1
            return self.pending.popleft()

    def finished(self, index: int, result: Result | None) -> bool:
        """A task ended (``None``: it did not run, or was cut off); True when the
        bundle should report now (all its tasks have ended, or enough results wait)."""
        with self._lock:
            self.running -= 1
            if self.released:
                # Cut off by a stop, or ended after the bundle was given back (its
                # result then goes nowhere): it is still to run, by the bundle's
                # next holder. Counted as ended, the last task of a bundle given
                # back would have its claim marked done, and never run again.
                self.pending.appendleft(index)
            elif result is not None:
                if not self._unsent:
                    self._oldest_unsent = time.monotonic()
                self._unsent.append((index, result))
                self._unsent_bytes += result_bytes(result)
            return self._ended() or self._unsent_bytes >= REPORT_BYTES

    def cancel(self) -> list[int]:
        """Its job was cancelled: start nothing more; returns the indexes of the
        tasks that will not start, whose records the caller adds (``add_results``)."""
        with self._lock:
            self.cancelled = True
            never_started = list(self.pending)
            self.pending.clear()
            return never_started

    def add_results(self, results: list[tuple[int, Result]]) -> None:
        """Results of tasks that did not run here (cancelled before they started)."""
        with self._lock:
            if not results or self.released:
                return
            if not self._unsent:
                self._oldest_unsent = time.monotonic()
            self._unsent.extend(results)
            self._unsent_bytes += sum(result_bytes(result) for _, result in results)

    def tasks_waiting(self) -> int:
        """Tasks taken or waiting to be taken: what keeps slots busy."""
        with self._lock:
            return 0 if self.released else len(self.pending) + self.running

    def ended(self) -> bool:
        """Every task has run (here or under an earlier holder)."""
        with self._lock:
            return self._ended()

    def _ended(self) -> bool:
        return not self.pending and self.running == 0

    def due(self) -> bool:
        """Whether results wait long enough, or are many enough, to be sent now."""
        with self._lock:
            if not self._unsent:
                return False
            waited = time.monotonic() - self._oldest_unsent
            return (
                self._ended()
                or waited >= REPORT_INTERVAL_SECONDS
                or (self._unsent_bytes >= REPORT_BYTES)
            )

    def take_unsent(self) -> list[tuple[int, Result]]:
        """The results waiting to be sent; the caller sends them, then ``mark_sent``."""
        with self._lock:
            unsent, self._unsent, self._unsent_bytes = self._unsent, [], 0
            return unsent

    def untake(self, unsent: list[tuple[int, Result]]) -> None:
        """Results taken to be sent that were not: they wait for the next send, first."""
        with self._lock:
            self._unsent[:0] = unsent
            self._unsent_bytes += sum(result_bytes(result) for _, result in unsent)

    def mark_sent(self, indexes: list[int]) -> bytes:
        """Note results as sent; returns the progress bitmap to record."""
        with self._lock:
            self.sent.update(indexes)
            return progress_bitmap(self.sent, len(self.bundle.tasks))

    def release(self) -> None:
        """Start nothing more of it; results still arriving are dropped."""
        with self._lock:
            self.released = True
