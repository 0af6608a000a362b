"""Errors the contracts raise, each tied to the gRPC status a caller should see.

Decoding, preprocessing and model lookup raise these without knowing about any protocol; the
servicers translate them with `grpc.StatusCode[error.status]` and the HTTP front door with the
matching HTTP code. The message is the detail the caller reads, so it says what was wrong and what
to send instead.
"""
from __future__ import annotations


class StatusError(Exception):
    status = "INTERNAL"


class InvalidInput(StatusError):
    """Malformed request content: corrupt image, wrong shape, datatype or size, non-finite values."""

    status = "INVALID_ARGUMENT"


class TooLarge(StatusError):
    """A request beyond a configured limit: image bytes or pixels, image count, batch size."""

    status = "RESOURCE_EXHAUSTED"


class ModelNotFound(StatusError):
    status = "NOT_FOUND"
