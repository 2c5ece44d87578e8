"""Errors raised by the scheduler package."""

from worker.errors import TaskfleetError


class SchedulerError(TaskfleetError):
    """Base class for scheduler errors."""


class PoolError(SchedulerError):
    """The local worker pool could not start or lost all its workers."""


class UnsafeBindError(SchedulerError):
    """The service was asked to listen beyond loopback without a token."""


class JobNotFoundError(SchedulerError):
    """No job with the given id is known to the journal."""
