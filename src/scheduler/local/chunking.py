"""How many tasks go to a worker at once, from the task durations seen so far.

Tiny tasks travel in big chunks, so dispatch costs one pipe message per
thousands of tasks; long tasks travel one at a time, so no worker sits idle
behind another's queue. Near the end of a job chunks shrink (guided
self-scheduling: at most a half share of what is left per chunk a worker may
hold) down to a single task, so the last results arrive together. The tail is where a file
sorted by task size keeps its longest tasks: a chunk cut by the mean of the
tiny tasks before them would hand them all to one worker. Shrinking costs a
few dozen more round trips at the end of a job, whatever its size.
"""

import math

# The bound on tasks per chunk, which bounds a chunk's memory and pipe message,
# and what a worker's task log must hold.
from worker.task_log import MAX_CHUNK_TASKS

#: Work one chunk should hold, in seconds of task time.
TARGET_CHUNK_SECONDS = 0.5

#: Tasks longer than this on average are never queued behind another on a worker.
LONG_TASK_SECONDS = 0.1

#: Weight of the newest observation in the running mean of task duration.
SMOOTHING = 0.3


class ChunkSizer:
    """Chooses chunk sizes and prefetch depth from observed task durations."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        #: Running mean of seconds per task, None until a chunk has reported.
        self.mean_task_seconds: float | None = None

    def observe(self, tasks: int, busy_seconds: float) -> None:
        """Record that ``tasks`` tasks took ``busy_seconds`` of a worker's time."""
        if tasks <= 0:
            return
        sample = busy_seconds / tasks
        if self.mean_task_seconds is None:
            self.mean_task_seconds = sample
        else:
            self.mean_task_seconds += SMOOTHING * (sample - self.mean_task_seconds)

    def size(self, remaining: int | None) -> int:
        """Tasks for the next chunk; ``remaining`` is the undispatched count if known."""
        if self.mean_task_seconds is None:
            return 1  # learn what a task costs before committing many to one worker
        mean = max(self.mean_task_seconds, 1e-9)
        size = max(1, min(MAX_CHUNK_TASKS, int(TARGET_CHUNK_SECONDS / mean)))
        if remaining is not None:
            # Half a share of what is left per chunk a worker may hold (one running,
            # one waiting): held chunks are work no other worker can take.
            share = math.ceil(remaining / (2 * self.workers * self.prefetch()))
            size = min(size, max(1, share))
        return size

    def prefetch(self) -> int:
        """Chunks a worker may hold at once: one running, and one waiting if tasks are short."""
        if self.mean_task_seconds is None or self.mean_task_seconds > LONG_TASK_SECONDS:
            return 1
        return 2
