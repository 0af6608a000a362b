"""What the server tells its callers, whichever protocol carries it: descriptions of the served models
and of the server, and the detail of an error.

Plain data built by the data plane. Each front door has one writer per shape (serve.api.grpc_* fill
protobuf messages, serve.api.http_* write JSON objects), so the two protocols answer alike and
neither front door needs the other. Predictions have no rows of their own here: both writers read the
data plane's Classification directly (see its docstring), since building an object per prediction
before the protobuf message would double the cost of writing a gRPC answer.
"""
from __future__ import annotations

from dataclasses import dataclass

from contracts.model_config import PLATFORM
from contracts.model_file import Model, TensorSpec

SERVER_NAME = "digit-zoo"
# Triton's protocol extensions the data plane implements, by the names its server metadata reports.
EXTENSIONS = ("model_repository", "statistics")

INTERNAL_DETAIL = "internal server error; the server log has the details"

# Details often quote what the caller sent (a model or input name, a shape), and a caller can send
# megabytes of it. Over gRPC the detail travels in the trailing metadata, which clients cap (8 KiB by
# default) after percent-encoding every non-ASCII byte as 3 characters; beyond the cap the caller would
# get RESOURCE_EXHAUSTED "received metadata size exceeds limit" instead of the real status. 1,800 UTF-8
# bytes stay under 5.5 KiB whatever they hold, and an HTTP error body is bounded the same way.
_DETAIL_HEAD_BYTES = 1200
_DETAIL_TAIL_BYTES = 600


def bounded_detail(detail: str) -> str:
    """`detail`, with its middle cut when it is too long (the end often says what to send instead)."""
    encoded = detail.encode("utf-8")
    if len(encoded) <= _DETAIL_HEAD_BYTES + _DETAIL_TAIL_BYTES:
        return detail
    head = encoded[:_DETAIL_HEAD_BYTES].decode("utf-8", "ignore")
    tail = encoded[-_DETAIL_TAIL_BYTES:].decode("utf-8", "ignore")
    cut = len(encoded) - _DETAIL_HEAD_BYTES - _DETAIL_TAIL_BYTES
    return f"{head}...[{cut} bytes cut]...{tail}"


@dataclass(frozen=True)
class ModelDescription:
    """The digits API's description of a served model (its ModelMetadata)."""

    name: str
    task: str
    classifies_images: bool
    labels: tuple[str, ...]
    # The model's input height and width; empty when they are dynamic (or the model has no card).
    input_size: tuple[int, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    execution_provider: str
    # Why the provider differs from the one asked for; empty when it does not.
    provider_note: str
    # Measured at export on `dataset`; None for models without a card or without the measurement.
    test_accuracy: float | None
    dataset: str
    file_sha256: str
    # Most images one inference call takes.
    max_batch_size: int

    @classmethod
    def of(cls, model: Model, max_batch_size: int) -> "ModelDescription":
        card = model.card
        return cls(
            name=model.name,
            task=model.task,
            classifies_images=model.classifies_images,
            labels=tuple(model.labels),
            input_size=tuple(card.input_size) if card and card.input_size else (),
            inputs=tuple(model.inputs),
            outputs=tuple(model.outputs),
            execution_provider=model.provider,
            provider_note=model.provider_note,
            test_accuracy=float(card.test_accuracy) if card and card.test_accuracy is not None else None,
            dataset=(card.dataset or "") if card else "",
            file_sha256=model.file_sha256,
            max_batch_size=max_batch_size,
        )


@dataclass(frozen=True)
class InferenceMetadata:
    """The v2 inference API's metadata of a served model."""

    name: str
    # The versions being served, oldest first.
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Not a field of the v2 metadata: the front doors send it beside it (a header, response metadata).
    execution_provider: str

    @classmethod
    def of(cls, model: Model, versions: list[str]) -> "InferenceMetadata":
        return cls(model.name, tuple(versions), PLATFORM, tuple(model.inputs), tuple(model.outputs), model.provider)


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]
