"""Errors of the serving core, each tied to the gRPC status a caller should see.

The core (preprocessing, batching, inference) raises these without knowing about gRPC; the
servicers translate them with `grpc.StatusCode[error.status]`. The message is the detail the
caller reads, so it says what was wrong and what to send instead.
"""
from __future__ import annotations


class ServeError(Exception):
    status = "INTERNAL"


class InvalidInput(ServeError):
    """Malformed request content: corrupt image, wrong shape, datatype or size, non-finite values."""

    status = "INVALID_ARGUMENT"


class TooLarge(ServeError):
    """A request beyond a configured limit: image bytes or pixels, image count, batch size."""

    status = "RESOURCE_EXHAUSTED"


class ModelNotFound(ServeError):
    status = "NOT_FOUND"


class Unavailable(ServeError):
    """The server is shutting down or the model is not ready: try again elsewhere or later."""

    status = "UNAVAILABLE"


class DeadlineExceeded(ServeError):
    status = "DEADLINE_EXCEEDED"


class Cancelled(ServeError):
    status = "CANCELLED"


class NotAllowed(ServeError):
    """A request the server's configuration forbids (loading a model when models are fixed)."""

    status = "FAILED_PRECONDITION"


class LoadFailed(ServeError):
    """A model (or one of its versions) could not be loaded; whatever served before still serves."""

    status = "INVALID_ARGUMENT"
