"""Errors raised by the client package."""

from worker.errors import TaskfleetError


class ClientError(TaskfleetError):
    """The scheduler service could not be reached, or refused a request."""
