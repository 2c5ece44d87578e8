"""``taskfleet run``: scheduler and local workers in one process, no server.

The workload is checked in full first (nothing runs if any line is bad), then
streamed from disk to the workers; results stream to the output as they
arrive. Memory stays flat whatever the workload's size.
"""

import gc
import heapq
import itertools
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from scheduler.local.dispatch import Dispatcher
from scheduler.local.pool import LocalPool
from scheduler.output_budget import OutputBudget
from scheduler.resume import not_done
from scheduler.retries import attempted, retry_delay, should_retry
from scheduler.summary import Summary
from worker.inputs import InputFile, stage
from worker.local import Chunk, ChunkReport, lost_results, part
from worker.result import Result, Status, decode, encode_lines
from worker.task import new_job_id
from worker.workdir import PARTIAL, TaskFiles, remove_tree
from worker.workload import TaskReader, WorkloadCounts

#: Seconds the loop waits for results before it refreshes progress anyway.
POLL_SECONDS = 0.1


class FileSource:
    """Chunks read lazily from checked workload files, one file at a time.

    ``skip`` holds tasks (file as given, line, text) not to run (``--resume``);
    ``total`` counts the rest. Chunks given back come first; retries once due.
    """

    def __init__(
        self,
        job_id: str,
        paths: Sequence[str],
        total: int,
        skip: frozenset[tuple[str, int, str]] = frozenset(),
    ) -> None:
        self.job_id = job_id
        self._files: Iterator[tuple[int, str]] = enumerate(paths, start=1)
        self._reader: TaskReader | None = None
        self._file_number = 0
        self._undispatched = total
        self._skip = skip
        self._returned: deque[Chunk] = deque()
        self._retries: list[tuple[float, int, Chunk]] = []  # a heap: when due
        self._ids = itertools.count(1)

    def take(self, count: int) -> Chunk | None:
        if self._retries and self._retries[0][0] <= time.monotonic():
            self._returned.append(heapq.heappop(self._retries)[2])
        if self._returned:
            return self._returned.popleft()
        while True:
            if self._reader is None:
                self._file_number, path = next(self._files, (0, ""))
                if not self._file_number:
                    return None
                self._reader = TaskReader(path, check=False)
            read = self._reader.read(count)
            if not read.lines:
                self.close()  # the end of this file
                continue
            batch = not_done(self._reader.path, read, self._skip)
            if batch.lines:
                break
        self._undispatched -= len(batch.lines)
        chunk_id = next(self._ids)
        return Chunk(chunk_id, self.job_id, self._file_number, self._reader.path, batch)

    def remaining(self) -> int:
        waiting = [*self._returned, *(chunk for _, _, chunk in self._retries)]
        return self._undispatched + sum(len(chunk.tasks.lines) for chunk in waiting)

    def give_back(self, chunk: Chunk) -> None:
        self._returned.append(chunk)

    def retry(self, chunk: Chunk, delay: float) -> None:
        """Run a chunk again in ``delay`` seconds."""
        heapq.heappush(self._retries, (time.monotonic() + delay, next(self._ids), chunk))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class StreamSink:
    """Writes result records as JSON Lines and counts them.

    With ``retries``, a task that failed, timed out or was lost runs again (up to
    that many more times, after a short wait) before its record is written; the
    record then says which attempt it is and the exit codes of the ones before.
    """

    def __init__(
        self,
        output: BinaryIO,
        summary: Summary,
        source: FileSource,
        retries: int = 0,
        budget: OutputBudget | None = None,
    ) -> None:
        self.output = output
        self.summary = summary
        self.source = source
        self.retries = retries
        self.budget = budget  # with --output-dir: what the job's tasks may bring back
        # Tasks waiting for another attempt: the exit codes of theirs so far, and
        # the last attempt's record.
        self._earlier: dict[str, tuple[list[int | None], Result]] = {}

    def results(self, chunk: Chunk, progress: ChunkReport) -> None:
        if self.budget or (
            self.retries and (self._earlier or set(progress.by_status) - {Status.SUCCEEDED})
        ):
            self._write(chunk, [decode(line) for line in progress.records.splitlines()])
            return
        self.summary.add(progress.by_status, progress.task_seconds)
        self.summary.cpu_seconds += progress.cpu_seconds
        self.output.write(progress.records)
        self.output.flush()  # a person may be watching the file

    def lost(self, chunk: Chunk, first: int, reason: str) -> None:
        results = lost_results(chunk, first, reason)
        if self.retries:
            self._write(chunk, results)
            return
        self.summary.add({Status.LOST: len(results)}, 0.0)
        self.output.write(encode_lines(results))

    def _write(self, chunk: Chunk, results: list[Result]) -> None:
        """Write final records; send the others back for another attempt."""
        final: list[Result] = []
        for result in results:
            earlier, _ = self._earlier.pop(result.id, ([], result))
            if should_retry(result.status, len(earlier) + 1, self.retries):
                self._earlier[result.id] = ([*earlier, result.exit_code], result)
                index = chunk.tasks.lines.index(result.line)
                self.source.retry(part(chunk, index, index + 1), retry_delay(len(earlier) + 1))
                continue
            final.append(attempted(result, earlier))
        self._write_final(final)

    def stop_retrying(self) -> None:
        """The run is cut short: tasks waiting for another attempt keep their last one's."""
        self.retries = 0
        waiting, self._earlier = self._earlier, {}
        self._write_final([attempted(last, codes[:-1]) for codes, last in waiting.values()])

    def _write_final(self, final: list[Result]) -> None:
        if self.budget is not None:
            final = self.budget.admit(final)
        by_status = Counter(result.status for result in final)
        self.summary.add(by_status, sum(result.duration_ms for result in final) / 1000.0)
        self.output.write(encode_lines(final))
        self.output.flush()


def run_embedded(
    paths: Sequence[str],
    *,
    counts: WorkloadCounts,
    workers: int,
    timeout: float | None,
    output: BinaryIO,
    on_progress: Callable[[Summary], None] | None = None,
    retries: int = 0,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
    uploads: Sequence[InputFile] = (),
    output_dir: Path | None = None,
) -> Summary:
    """Run a checked workload on local worker processes; write results; return the summary.

    ``counts`` comes from ``check_workload(paths)``, so bad input has been
    refused before this is called; with ``skip`` (tasks not to run: ``--resume``)
    its total counts only the others. ``retries``: how often a task that did not
    succeed runs again. Each command runs in a directory of its own under this
    run's, ``uploads`` (checked: worker.inputs) in it read-only; the files of
    each that succeeds come back under ``output_dir`` (made if missing).
    Ctrl-C stops the workers (and their commands) at once; every task that
    finished has its record, the ones cut off are recorded lost, and the
    summary says it was interrupted.
    """
    # What exists now (modules, the command line's objects) lives as long as this
    # process: frozen, no collection walks it again, nor writes to the pages the
    # workers share. A one-task run took 16 ms less.
    gc.freeze()
    summary = Summary(total=counts.total, workers=workers)
    source = FileSource(new_job_id(), paths, counts.total, skip)
    run_dir = Path(tempfile.mkdtemp(prefix="taskfleet-run-"))  # 0700
    try:
        pool = LocalPool(workers, timeout, task_files(run_dir, uploads, output_dir))
    except BaseException:
        remove_tree(run_dir)
        raise
    budget = OutputBudget(output_dir) if output_dir is not None else None
    sink = StreamSink(output, summary, source, retries, budget)
    dispatcher = Dispatcher(pool, source, sink)
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
        sink.stop_retrying()
        dispatcher.interrupt()
    else:
        pool.stop()
    finally:
        source.close()
        output.flush()
        remove_tree(run_dir)
        if output_dir is not None:  # what tasks cut off had begun to bring back
            remove_tree(output_dir / PARTIAL)
    return summary


def task_files(run_dir: Path, uploads: Sequence[InputFile], output_dir: Path | None) -> TaskFiles:
    """Where a run's tasks get and leave files: inputs staged once under ``run_dir``."""
    inputs = None
    if uploads:
        inputs = run_dir / "inputs"
        stage(uploads, inputs)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    return TaskFiles(
        str(run_dir),
        None if inputs is None else str(inputs),
        None if output_dir is None else str(output_dir),
    )
