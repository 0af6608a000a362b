"""Errors of the serving core (batching, inference, lifecycle), on the base the contracts define.

Like contracts.errors, each is tied to the gRPC status a caller should see, and its message is the
detail the caller reads.
"""
from __future__ import annotations

from contracts.errors import StatusError


class Unavailable(StatusError):
    """The server is shutting down or the model is not ready: try again elsewhere or later."""

    status = "UNAVAILABLE"


class DeadlineExceeded(StatusError):
    status = "DEADLINE_EXCEEDED"


class Cancelled(StatusError):
    status = "CANCELLED"


class NotAllowed(StatusError):
    """A request the server's configuration forbids (loading a model when models are fixed)."""

    status = "FAILED_PRECONDITION"


class LoadFailed(StatusError):
    """A model (or one of its versions) could not be loaded; whatever served before still serves."""

    status = "INVALID_ARGUMENT"
