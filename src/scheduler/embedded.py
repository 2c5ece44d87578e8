"""``taskfleet run``: scheduler and local workers in one process, no server.

The workload is checked in full first (nothing runs if any line is bad), then
streamed from disk to the workers; results stream to the output as they
arrive. Memory stays flat whatever the workload's size.
"""

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from scheduler.dispatch import Dispatcher
from scheduler.local_pool import LocalPool
from scheduler.summary import Summary
from worker.local import Chunk, Progress, lost_results
from worker.result import Status, encode_lines
from worker.workload import TaskReader, WorkloadCounts

#: Seconds the loop waits for results before it refreshes progress anyway.
POLL_SECONDS = 0.1


def new_job_id() -> str:
    """A short random job id, unique enough to tell runs and jobs apart."""
    return secrets.token_hex(4)


class FileSource:
    """Chunks read lazily from checked workload files, one file at a time."""

    def __init__(self, job_id: str, paths: Sequence[str], total: int) -> None:
        self.job_id = job_id
        self._files: Iterator[tuple[int, str]] = enumerate(paths, start=1)
        self._reader: TaskReader | None = None
        self._file_number = 0
        self._undispatched = total
        self._returned: deque[Chunk] = deque()
        self._ids = itertools.count(1)

    def take(self, count: int) -> Chunk | None:
        if self._returned:
            return self._returned.popleft()
        while True:
            if self._reader is None:
                self._file_number, path = next(self._files, (0, ""))
                if not self._file_number:
                    return None
                self._reader = TaskReader(path, check=False)
            batch = self._reader.read(count)
            if batch.lines:
                break
            self.close()
        self._undispatched -= len(batch.lines)
        chunk_id = next(self._ids)
        return Chunk(chunk_id, self.job_id, self._file_number, self._reader.path, batch)

    def remaining(self) -> int:
        return self._undispatched + sum(len(chunk.tasks.lines) for chunk in self._returned)

    def give_back(self, chunk: Chunk) -> None:
        self._returned.append(chunk)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class StreamSink:
    """Writes result records as JSON Lines and counts them."""

    def __init__(self, output: BinaryIO, summary: Summary) -> None:
        self.output = output
        self.summary = summary

    def results(self, chunk: Chunk, progress: Progress) -> None:
        del chunk  # the records carry their own ids
        self.summary.add(progress.by_status, progress.task_seconds)
        self.output.write(progress.records)
        self.output.flush()  # a person may be watching the file

    def lost(self, chunk: Chunk, first: int, reason: str) -> None:
        results = lost_results(chunk, first, reason)
        self.summary.add({Status.LOST: len(results)}, 0.0)
        self.output.write(encode_lines(results))


def run_embedded(
    paths: Sequence[str],
    *,
    counts: WorkloadCounts,
    workers: int,
    timeout: float | None,
    output: BinaryIO,
    on_progress: Callable[[Summary], None] | None = None,
) -> Summary:
    """Run a checked workload on local worker processes; write results; return the summary.

    ``counts`` comes from ``check_workload(paths)``, so bad input has been
    refused before this is called.
    Ctrl-C stops the workers (and their commands) at once; every task that
    finished has its record, the ones cut off are recorded lost, and the
    summary says it was interrupted.
    """
    summary = Summary(total=counts.total, workers=workers)
    source = FileSource(new_job_id(), paths, counts.total)
    pool = LocalPool(workers, timeout)
    dispatcher = Dispatcher(pool, source, StreamSink(output, summary))
    try:
        pool.start()
        summary.start()
        while summary.done < summary.total:
            dispatcher.step(POLL_SECONDS)
            if on_progress is not None:
                on_progress(summary)
    except KeyboardInterrupt:
        summary.interrupted = True
        summary.end()
        dispatcher.interrupt()
    else:
        pool.stop()
    finally:
        source.close()
        output.flush()
    return summary
