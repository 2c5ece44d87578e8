"""Errors raised by the scheduler package."""

from worker.errors import TaskfleetError


class SchedulerError(TaskfleetError):
    """Base class for scheduler errors."""


class PoolError(SchedulerError):
    """The local worker pool could not start or lost all its workers."""


class JobNotFoundError(SchedulerError):
    """No job with the given id is known to the journal."""


class TokenError(SchedulerError):
    """A token (given, or in a token file) is unusable: too short, unreadable, or exposed."""


class FleetError(SchedulerError):
    """A deployed stack cannot be used: not found, unreadable, or missing an output."""


class JobStateError(SchedulerError):
    """A job is not in a state that allows what was asked (retry a job still running)."""
