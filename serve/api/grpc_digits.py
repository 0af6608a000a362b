"""digits.v1.DigitClassifier: protobuf in, numpy through the model, protobuf out.

Thin on purpose: the images become pixels in serve.core.digit_inputs (in a worker thread when they need
decoding), the model runs in serve.core.runner, and errors are ServeErrors that serve.api.grpc_calls turns into
status codes.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Mapping, Sequence

import numpy as np

from serve.core import digit_inputs
from serve.core.errors import InvalidInput, ServeError
from serve.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from serve.core.runner import ModelRunner
from serve.api.metrics import Metrics
from serve.core.model_card import PROBABILITIES_OUTPUT
from serve.core.repository import Model, ModelRepository
from serve.api.grpc_calls import deadline_from, stream, unary
from serve.core.admission import Admission
from serve.images.digit_format import DIGIT_SHAPE

log = logging.getLogger(__name__)

SERVICE = "digits.v1.DigitClassifier"
DEFAULT_TOP_K = 3
# Answers a stream may have in progress before the server stops reading its next image.
STREAM_WINDOW = 64


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


# Below this many images, ranking in plain Python beats numpy's per-call overhead (single-image
# requests are the common case, and every microsecond there is per request).
_NUMPY_RANKING_FROM = 16


def _top_k(probabilities: np.ndarray, top_k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row, the top_k class indices and their probabilities, most probable first, ties by index."""
    if len(probabilities) < _NUMPY_RANKING_FROM:
        rows = probabilities.tolist()
        # sorted() is stable, and reverse=True keeps equal keys in their original (index) order.
        order = [sorted(range(len(row)), key=row.__getitem__, reverse=True)[:top_k] for row in rows]
        return order, [[row[c] for c in classes] for row, classes in zip(rows, order)]
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return order.tolist(), np.take_along_axis(probabilities, order, axis=1).tolist()


def write_prediction(prediction: digits_pb2.Prediction, classes: Sequence[int], probs: Sequence[float], labels: Sequence[str]) -> None:
    """Fill an empty Prediction (one row's top-k, most probable first) in place."""
    best = classes[0]
    prediction.digit = best
    prediction.label = labels[best]
    prediction.probability = probs[0]
    candidates = prediction.top_k
    for digit, probability in zip(classes, probs):
        candidate = candidates.add()
        candidate.digit = digit
        candidate.label = labels[digit]
        candidate.probability = probability


def write_predictions(predictions, probabilities: np.ndarray, labels: Sequence[str], top_k: int) -> None:
    """Append one Prediction per row of N x C `probabilities` to the repeated field `predictions`.

    Built in place, field by field: protobuf's Python API copies every message handed to its parent
    (each Candidate into its Prediction, each Prediction into the response), and keyword arguments
    cost more than attribute assignments. For a 256-image request, building messages and then the
    response took 4 ms of the event loop's time; in place it takes 1 ms. Ties: the lower class first.
    """
    order, top = _top_k(probabilities, top_k)
    add = predictions.add
    for classes, probs in zip(order, top):
        write_prediction(add(), classes, probs, labels)


def model_metadata(model: Model, max_batch_size: int) -> digits_pb2.ModelMetadata:
    card = model.card
    metadata = digits_pb2.ModelMetadata(
        name=model.name,
        task=model.task,
        classifies_images=model.classifies_images,
        labels=model.labels,
        input_size=list(card.input_size) if card and card.input_size else [],
        inputs=[digits_pb2.TensorInfo(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs],
        outputs=[digits_pb2.TensorInfo(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs],
        execution_provider=model.provider,
        provider_note=model.provider_note,
        dataset=(card.dataset or "") if card else "",
        file_sha256=model.file_sha256,
        max_batch_size=max_batch_size if model.batchable else 1,
    )
    if card is not None and card.test_accuracy is not None:
        metadata.test_accuracy = float(card.test_accuracy)
    return metadata


class DigitsServicer(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(
        self,
        repository: ModelRepository,
        runners: Mapping[str, ModelRunner],
        limits: digit_inputs.RequestLimits,
        preprocess_executor: Executor,
        max_batch_size: int,
        metrics: Metrics | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.repository = repository
        self.runners = runners
        self.limits = limits
        self.metrics = metrics
        self.admission = admission
        self._executor = preprocess_executor
        self._max_batch_size = max_batch_size

    async def _classify(self, model_name: str, images: Sequence, top_k: int, deadline: float | None):
        model = self.repository.classifier(model_name)
        input_size = model.card.input_size or DIGIT_SHAPE
        bulk = digit_inputs.is_bulk_mnist(images)
        if bulk:
            pixels = digit_inputs.images_to_pixels(images, input_size, self.limits, bulk=True)
        else:
            digit_inputs.check_image_count(len(images), self.limits)
            loop = asyncio.get_running_loop()
            pixels = await loop.run_in_executor(
                self._executor, digit_inputs.images_to_pixels, images, input_size, self.limits, False
            )
        outputs = await self.runners[model.name].infer({model.card.input_name: pixels}, deadline)
        probabilities = outputs[model.output_index(PROBABILITIES_OUTPUT)]
        labels = model_labels(model, probabilities.shape[1])
        return model, probabilities, labels, resolve_top_k(top_k, len(labels))

    @unary(SERVICE)
    async def Classify(self, request: digits_pb2.ClassifyRequest, context) -> digits_pb2.ClassifyResponse:
        model, probabilities, labels, top_k = await self._classify(
            request.model, request.images, request.top_k, deadline_from(context)
        )
        response = digits_pb2.ClassifyResponse(model=model.name)
        write_predictions(response.predictions, probabilities, labels, top_k)
        return response

    async def _classify_streamed(self, request: digits_pb2.ClassifyStreamRequest, deadline: float | None):
        """One streamed image; its errors become the answer's `error`, so the stream goes on."""
        try:
            if not request.HasField("image"):
                raise InvalidInput("the stream message carries no image; set `image`")
            model, probabilities, labels, top_k = await self._classify(request.model, [request.image], request.top_k, deadline)
            response = digits_pb2.ClassifyStreamResponse(id=request.id, model=model.name)
            (classes,), (probs,) = _top_k(probabilities, top_k)
            write_prediction(response.prediction, classes, probs, labels)
            return response
        except ServeError as exc:
            return digits_pb2.ClassifyStreamResponse(
                id=request.id, model=request.model, error=digits_pb2.Error(code=exc.status, message=str(exc))
            )

    @stream(SERVICE)
    async def ClassifyStream(self, request_iterator, context):
        # Images are read ahead and classified concurrently (so they can share batches), but answered in
        # request order. The window bounds what one stream holds; a full window stops the reading, and
        # gRPC's flow control then slows the sender.
        deadline = deadline_from(context)
        window: asyncio.Queue = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_WINDOW)
        done = object()

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    window.put_nowait(asyncio.ensure_future(self._classify_streamed(request, deadline)))
            finally:
                window.put_nowait(done)

        reader = asyncio.ensure_future(read_requests())
        try:
            while True:
                answer = await window.get()
                if answer is done:
                    break
                response = await answer
                slots.release()
                yield response
            await reader  # re-raises what ended the reading, if it failed
        finally:
            if not reader.done():
                reader.cancel()
            while not window.empty():
                leftover = window.get_nowait()
                if leftover is not done:
                    leftover.cancel()

    @unary(SERVICE)
    async def ListModels(self, request, context) -> digits_pb2.ListModelsResponse:
        return digits_pb2.ListModelsResponse(
            models=[model_metadata(model, self._max_batch_size) for model in self.repository]
        )

    @unary(SERVICE)
    async def GetModelMetadata(self, request, context) -> digits_pb2.ModelMetadata:
        model = self.repository.get(request.name) if request.name else self.repository.classifier("")
        return model_metadata(model, self._max_batch_size)
