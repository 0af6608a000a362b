"""The data plane: what the server does, whichever protocol asked.

Health, metadata, v2 inference (tensors in, tensors out) and digit classification (images in,
ranked digits out) over the loaded models, their batchers and the image-decoding pool. It knows
nothing of gRPC or HTTP: the front doors in serve/api turn their messages into the plain requests
here and the results back into messages, and turn the ServeErrors raised here into status codes.
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np

from serve.core import digit_inputs
from serve.core.digit_inputs import EncodedImage, RawImage, RequestLimits
from serve.core.model_card import PROBABILITIES_OUTPUT
from serve.core.pool_queue import PoolQueue
from serve.core.repository import Model, ModelRepository, TensorSpec
from serve.core.runner import ModelRunner
from serve.core.tensors import InferInput, decode_inputs, requested_outputs
from serve.core.errors import ModelNotFound
from serve.images.digit_format import DIGIT_SHAPE

_Result = TypeVar("_Result")

SERVER_NAME = "digit-zoo"
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
    model: Model
    labels: list[str]
    # N x C, every class.
    probabilities: np.ndarray
    # Per image: the top-k classes, most probable first (ties: the lower class first), and their probabilities.
    classes: list[list[int]]
    top_probabilities: list[list[float]]
    # What the model received: float32 N x 1 x H x W in [0, 1].
    pixels: np.ndarray


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


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        runners: Mapping[str, ModelRunner],
        limits: RequestLimits,
        preprocess_executor: Executor,
        max_batch_size: int,
        version: str,
        preprocess_threads: int = 1,
    ) -> None:
        self.repository = repository
        self.runners = runners
        self.limits = limits
        self.version = version
        self.max_batch_size = max_batch_size
        self._pool = PoolQueue(preprocess_executor, max_trips=preprocess_threads)
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
            self.repository.get(name, version)
        except ModelNotFound:
            return False
        return self._ready

    def model(self, name: str, version: str = "") -> Model:
        return self.repository.get(name, version)

    def classifier(self, name: str) -> Model:
        """The digits API's model: `name`, or the default classifier when empty."""
        return self.repository.classifier(name)

    def models(self) -> list[Model]:
        return list(self.repository)

    def model_max_batch_size(self, model: Model) -> int:
        """Most images one inference call of `model` takes (1 when requests cannot be stacked)."""
        return self.max_batch_size if model.batchable else 1

    async def run_in_pool(self, function: Callable[..., _Result], *args) -> _Result:
        """function(*args) in the image-decoding pool, off the event loop: request work that would
        stall every other call (decoding images, parsing a large JSON body, encoding previews).
        Calls queued while the pool is busy go there together (serve.core.pool_queue)."""
        return await self._pool.run(function, *args)

    # Inference
    async def infer(self, request: InferRequest, deadline: float | None = None) -> InferResult:
        """A v2 request's outputs (those it named, in its order), from the model's batcher or alone."""
        model = self.repository.get(request.model_name, request.model_version)
        feeds = decode_inputs(model, request.inputs, self.limits.max_images_per_request)
        wanted = requested_outputs(model, request.outputs)
        outputs = await self.runners[model.name].infer(feeds, deadline)
        return InferResult(model, request.id, [(model.outputs[i], outputs[i]) for i in wanted])

    async def classify(
        self, model_name: str, images: Sequence[EncodedImage | RawImage], requested_top_k: int = 0,
        deadline: float | None = None,
    ) -> Classification:
        """Each image brought to the model's digit format, classified, and ranked."""
        model = self.repository.classifier(model_name)
        input_size = model.card.input_size or DIGIT_SHAPE
        if digit_inputs.is_bulk_mnist(images):
            # Already in the digit format: a few numpy calls for the whole request, no thread hop.
            pixels = digit_inputs.images_to_pixels(images, input_size, self.limits, bulk=True)
        else:
            digit_inputs.check_image_count(len(images), self.limits)
            pixels = await self.run_in_pool(digit_inputs.images_to_pixels, images, input_size, self.limits, False)
        outputs = await self.runners[model.name].infer({model.card.input_name: pixels}, deadline)
        probabilities = outputs[model.output_index(PROBABILITIES_OUTPUT)]
        labels = model_labels(model, probabilities.shape[1])
        classes, top_probabilities = top_k(probabilities, resolve_top_k(requested_top_k, len(labels)))
        return Classification(model, labels, probabilities, classes, top_probabilities, pixels)
