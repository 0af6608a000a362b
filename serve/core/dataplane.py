"""The data plane: what the server does, whichever protocol asked.

Health, metadata, v2 inference (tensors in, tensors out), digit classification (images in,
ranked digits out), the model repository and the statistics, over the served model versions
(serve.core.lifecycle: each call holds the version it started on) and the image-decoding pool. It knows
nothing of gRPC or HTTP: the front doors in serve/api turn their messages into the plain requests
here and the results (and serve.core.answers' descriptions) back into messages, and turn the
StatusErrors raised here into status codes.

The served versions come through the narrow `ManagedModels` interface below (serve.core.lifecycle's
ModelManager in the server), so the data plane can be tested with a fake.
"""
from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol, Sequence, TypeVar

import numpy as np

from contracts.digit_format import DIGIT_SHAPE
from contracts.errors import ModelNotFound
from contracts.model_card import PROBABILITIES_OUTPUT
from contracts.model_file import Model, TensorSpec
from contracts.verdicts import (
    VerdictTable,
    VerdictThresholds,
    blank_inputs,
    judge_table,
)
from serve.core import digit_inputs
from serve.core.answers import (
    EXTENSIONS,
    SERVER_NAME,
    InferenceMetadata,
    ModelDescription,
    ServerMetadata,
)
from serve.core.digit_inputs import EncodedImage, RawImage, RequestLimits
from serve.core.model_index import IndexEntry
from serve.core.pool_queue import PoolQueue
from serve.core.statistics import VersionStatistics
from serve.core.tensors import InferInput, decode_inputs, requested_outputs

_Result = TypeVar("_Result")

DEFAULT_TOP_K = 3
# Below this many images, ranking in plain Python beats numpy's per-call overhead (single-image
# requests are the common case, and every microsecond there is per request).
_NUMPY_RANKING_FROM = 16


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    inputs: Sequence[InferInput]
    model_version: str = ""
    id: str = ""
    # Names of the outputs to return; empty: all of them.
    outputs: Sequence[str] = ()


@dataclass(frozen=True)
class InferResult:
    model: Model
    id: str
    outputs: list[tuple[TensorSpec, np.ndarray]]


@dataclass(frozen=True)
class Classification:
    """Ranked classes of each image. Each front door writes one prediction per image from it: the
    first of the image's `classes` as `digit`, with its label and probability, then as `top_k` every
    one of its classes (`digit`, `label`, `probability`), most probable first, then the image's
    verdict (contracts.verdicts: `verdict`, `reason`, `candidates`)."""

    model: Model
    labels: list[str]
    # N x C, every class.
    probabilities: np.ndarray
    # Per image: the top-k classes, most probable first (ties: the lower class first), and their probabilities.
    classes: list[list[int]]
    top_probabilities: list[list[float]]
    # What the model received: float32 N x 1 x H x W in [0, 1].
    pixels: np.ndarray
    # Per image: digit, unsure or no digit, judged from `probabilities`, the blank inputs among `pixels`
    # and the model card's thresholds (a caller's min_confidence in place of the card's).
    verdicts: VerdictTable


def resolve_top_k(requested: int, label_count: int) -> int:
    """0 -> the default; anything above the number of labels -> all labels."""
    if requested == 0:
        requested = DEFAULT_TOP_K
    return max(1, min(int(requested), label_count))


def model_labels(model: Model, classes: int) -> list[str]:
    labels = model.labels
    if len(labels) >= classes:
        return labels
    return labels + [str(i) for i in range(len(labels), classes)]


def top_k(probabilities: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row, the k class indices and their probabilities, most probable first, ties by index."""
    if len(probabilities) < _NUMPY_RANKING_FROM:
        rows = probabilities.tolist()
        # sorted() is stable, and reverse=True keeps equal keys in their original (index) order.
        order = [sorted(range(len(row)), key=row.__getitem__, reverse=True)[:k] for row in rows]
        return order, [[row[c] for c in classes] for row, classes in zip(rows, order)]
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order.tolist(), np.take_along_axis(probabilities, order, axis=1).tolist()


class InferenceRunner(Protocol):
    async def infer(self, feeds: dict[str, np.ndarray], deadline: float | None = None) -> list[np.ndarray]: ...


class ServedModelVersion(Protocol):
    """One served version of a model, as a call uses it; a call holds it (`with`) until it is answered."""

    model: Model
    runner: InferenceRunner
    statistics: VersionStatistics

    @property
    def max_batch_size(self) -> int: ...

    def __enter__(self) -> "ServedModelVersion": ...

    def __exit__(self, *exc_info) -> None: ...


class ManagedModels(Protocol):
    """What the data plane asks of the served models (serve.core.lifecycle's ModelManager).

    Lookups raise ModelNotFound for a model or version not served; `classifier` with an empty
    name means the default classifier, and refuses a model that is not one (InvalidInput).
    """

    def served(self, name: str, version: str = "") -> ServedModelVersion: ...

    def classifier(self, name: str, version: str = "") -> ServedModelVersion: ...

    def newest(self) -> Sequence[ServedModelVersion]: ...

    def versions(self, name: str) -> list[str]: ...

    def index(self, ready_only: bool = False) -> list[IndexEntry]: ...

    def statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]: ...

    def request_load(self, name: str) -> Awaitable[None]: ...

    def request_unload(self, name: str) -> Awaitable[None]: ...


class DataPlane:
    def __init__(
        self,
        manager: ManagedModels,
        limits: RequestLimits,
        preprocess_executor: Executor,
        version: str,
        preprocess_threads: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`clock` times each call for its version's statistics (seconds; a fake in tests)."""
        self.manager = manager
        self.limits = limits
        self.version = version
        self._pool = PoolQueue(preprocess_executor, max_trips=preprocess_threads)
        self._clock = clock
        self._ready = False

    # Health and metadata
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._ready

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def model_ready(self, name: str, version: str = "") -> bool:
        """As Triton answers: an unknown model (or version) is simply not ready."""
        try:
            self.manager.served(name, version)
        except ModelNotFound:
            return False
        return self._ready

    def model(self, name: str, version: str = "") -> Model:
        """The model named (the version named, or the newest served); NOT_FOUND when it is not served."""
        return self.manager.served(name, version).model

    def models(self) -> list[Model]:
        """The newest served version of every model."""
        return [served.model for served in self.manager.newest()]

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, self.version, EXTENSIONS)

    def model_description(self, name: str = "") -> ModelDescription:
        """The digits API's description of the model named (its newest version), or of the default
        classifier when `name` is empty."""
        served = self.manager.served(name) if name else self.manager.classifier("")
        return ModelDescription.of(served.model, served.max_batch_size)

    def model_descriptions(self) -> list[ModelDescription]:
        """The digits API's description of the newest served version of every model."""
        return [ModelDescription.of(served.model, served.max_batch_size) for served in self.manager.newest()]

    def inference_metadata(self, name: str, version: str = "") -> InferenceMetadata:
        """The v2 metadata of the model named (the version named, or the newest served)."""
        model = self.manager.served(name, version).model
        return InferenceMetadata.of(model, self.manager.versions(model.name))

    # The model repository and statistics extensions
    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        return self.manager.index(ready_only)

    async def load_model(self, name: str) -> None:
        await self.manager.request_load(name)

    async def unload_model(self, name: str) -> None:
        await self.manager.request_unload(name)

    def statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        return self.manager.statistics(name, version)

    async def run_in_pool(self, function: Callable[..., _Result], *args) -> _Result:
        """function(*args) in the image-decoding pool, off the event loop: request work that would
        stall every other call (decoding images, parsing a large JSON body, encoding previews).
        Calls queued while the pool is busy go there together (serve.core.pool_queue)."""
        return await self._pool.run(function, *args)

    # Inference
    async def infer(self, request: InferRequest, deadline: float | None = None) -> InferResult:
        """A v2 request's outputs (those it named, in its order), from the model's batcher or alone."""
        with self.manager.served(request.model_name, request.model_version) as served:
            model = served.model
            clock = self._clock
            started = clock()
            succeeded = False
            try:
                feeds = decode_inputs(model, request.inputs, self.limits.max_images_per_request)
                wanted = requested_outputs(model, request.outputs)
                outputs = await served.runner.infer(feeds, deadline)
                succeeded = True
            finally:
                served.statistics.request_done(succeeded, clock() - started)
        return InferResult(model, request.id, [(model.outputs[i], outputs[i]) for i in wanted])

    async def classify(
        self, model_name: str, images: Sequence[EncodedImage | RawImage], requested_top_k: int = 0,
        deadline: float | None = None, model_version: str = "", min_confidence: float | None = None,
    ) -> Classification:
        """Each image brought to the model's digit format, classified, ranked and judged.

        `model_version` empty: the newest version served (of the default classifier, when
        `model_name` is empty too); else that version, NOT_FOUND when it is not served.
        `min_confidence`: the caller's own (None: the model card's); outside [0, 1]: INVALID_ARGUMENT.
        """
        with self.manager.classifier(model_name, model_version) as served:
            model = served.model
            # Checked before any image is decoded: a bad min_confidence costs the server nothing.
            thresholds = VerdictThresholds.from_card(model.card).with_min_confidence(min_confidence)
            clock = self._clock
            started = clock()
            succeeded = False
            try:
                pixels, probabilities = await self._classify(served, images, deadline)
                succeeded = True
            finally:
                served.statistics.request_done(succeeded, clock() - started)
        labels = model_labels(model, probabilities.shape[1])
        classes, top_probabilities = top_k(probabilities, resolve_top_k(requested_top_k, len(labels)))
        verdicts = judge_table(probabilities, blank_inputs(pixels), thresholds, labels)
        return Classification(model, labels, probabilities, classes, top_probabilities, pixels, verdicts)

    async def _classify(self, served: ServedModelVersion, images, deadline: float | None) -> tuple[np.ndarray, np.ndarray]:
        model = served.model
        input_size = model.card.input_size or DIGIT_SHAPE
        if digit_inputs.is_bulk_mnist(images):
            # Already in the digit format: a few numpy calls for the whole request, no thread hop.
            pixels = digit_inputs.images_to_pixels(images, input_size, self.limits, bulk=True)
        else:
            digit_inputs.check_image_count(len(images), self.limits)
            pixels = await self.run_in_pool(digit_inputs.images_to_pixels, images, input_size, self.limits, False)
        outputs = await served.runner.infer({model.card.input_name: pixels}, deadline)
        return pixels, outputs[model.output_index(PROBABILITIES_OUTPUT)]
