"""``--retries``: which tasks run again, after how long, and what their record keeps.

A task that failed, timed out or was lost runs again, up to the job's number
of retries, after a wait that doubles each time. A cancelled task never does.
Its final record says which attempt it is (``attempt``) and carries the exit
codes of the attempts before (``earlier_exit_codes``). The local run keeps the
earlier attempts in memory; the service keeps them in its journal.
"""

from worker.result import MAX_ATTEMPTS, Result, Status

#: Most retries of one task.
MAX_RETRIES = MAX_ATTEMPTS - 1

#: How a task may end and still be run again.
RETRIED_STATUSES = frozenset({Status.FAILED, Status.TIMED_OUT, Status.LOST})

#: Seconds before a task's first retry; each further one waits twice as long.
#: The one backoff schedule of the scheduler: its failed AWS calls (the fleet
#: link's) wait the same way.
RETRY_FIRST_SECONDS = 0.5

#: The longest wait before a retry.
RETRY_MAX_SECONDS = 10.0


def should_retry(status: Status, attempts_so_far: int, retries: int) -> bool:
    """Whether a task whose attempt number ``attempts_so_far`` ended in ``status`` runs again."""
    return status in RETRIED_STATUSES and attempts_so_far <= retries


def retry_delay(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` of a task."""
    return float(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (attempt - 1)))


def attempted(result: Result, earlier: list[int | None]) -> Result:
    """The record of a task's last attempt, after ``earlier`` ones that did not succeed."""
    if earlier:
        result.attempt = len(earlier) + 1
        result.earlier_exit_codes = tuple(earlier)
    return result


def check_retries(retries: int) -> None:
    """Raises ValueError unless ``retries`` is a number of retries a job may have."""
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be 0 to {MAX_RETRIES}, got {retries}")
