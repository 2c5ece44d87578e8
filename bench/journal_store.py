"""What journaling a fleet result costs the process that reads it: CPU per record
of ``Journal.finish_sent``, with the task filters' indexes (a scheduler
service's journal) and without (a `run --remote`'s own).

    .venv/bin/python -m bench.journal_store [--records N]

Records like built-in sleeps' on the fleet (``bench.scale_model.sample_results``),
stored a thousand at a time as the dispatch thread stores a delivery, in a
journal in a temporary folder; the best of three rounds.
"""

import argparse
import tempfile
import time
from pathlib import Path

from bench.scale_model import sample_results
from scheduler.jobs.journal import SENT, Journal, Placement
from worker.result import encode_lines

JOB = "0123abcd"
DELIVERY = 1000


def seconds_per_record(records: int, *, task_filters: bool) -> float:
    results = sample_results(1, records)
    rows = [(r.line, r.task, r.status, encode_lines([r])) for r in results]
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder) / "journal.sqlite3", task_filters=task_filters)
        journal.create_job(JOB, Placement.REMOTE)
        journal.add_tasks(JOB, [(1, line, "sleep 1") for line in range(1, records + 1)])
        journal.mark_dispatched(JOB, 1, [1, records], SENT)
        started = time.process_time()
        seq = 1
        for start in range(0, records, DELIVERY):
            seq, _ = journal.finish_sent(JOB, 1, rows[start : start + DELIVERY], seq)
        spent = time.process_time() - started
        journal.db.close()
    return spent / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    for task_filters, who in ((True, "a service's journal"), (False, "a `run --remote`'s")):
        best = min(seconds_per_record(args.records, task_filters=task_filters) for _ in range(3))
        print(f"{who:>22} (task filters {'on' if task_filters else 'off'}):"
              f" {best * 1e6:5.1f} us of CPU a record")  # fmt: skip


if __name__ == "__main__":
    main()
