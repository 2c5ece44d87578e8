"""Errors raised by the worker package."""


class TaskfleetError(Exception):
    """Base class for every error taskfleet raises on purpose."""


class WorkloadError(TaskfleetError):
    """A workload file, or one of its lines, cannot be turned into tasks."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {reason}")


class EmptyWorkloadError(TaskfleetError):
    """A submission whose files hold no task at all."""


class TaskLineError(TaskfleetError, ValueError):
    """A workload line that cannot run as a task (the reason, without where it is)."""


class BundleError(TaskfleetError, ValueError):
    """A message that is not a valid bundle or result batch."""


class QueueError(TaskfleetError):
    """SQS refused messages of a batch it was sent."""


class DuplicateBundleError(TaskfleetError):
    """A bundle delivered again after it was done: it must not run twice."""


class WorkerConfigError(TaskfleetError):
    """The remote worker's configuration is missing or invalid."""


class InputError(TaskfleetError):
    """An input to upload (``--upload``) is missing, unreadable or over a bound."""
