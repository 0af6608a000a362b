"""digits.v1.DigitClassifier over gRPC: protobuf in, a DataPlane call, protobuf out.

Thin on purpose: images become the core's EncodedImage/RawImage, the data plane decodes, batches
and ranks, and errors are StatusErrors that serve.api.grpc_calls turns into status codes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from contracts.errors import InvalidInput, StatusError
from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.model_file import Model
from serve.api.grpc_calls import deadline_from, stream, unary
from serve.api.metrics import Metrics
from serve.core.admission import Admission
from serve.core.dataplane import Classification, DataPlane
from serve.core.digit_inputs import EncodedImage, RawImage

log = logging.getLogger(__name__)

SERVICE = "digits.v1.DigitClassifier"
# Answers a stream may have in progress before the server stops reading its next image.
STREAM_WINDOW = 64


def core_images(images: Sequence[digits_pb2.Image]) -> list[EncodedImage | RawImage]:
    converted = []
    for index, image in enumerate(images):
        source = image.WhichOneof("source")
        if source == "raw":
            raw = image.raw
            converted.append(RawImage(raw.pixels, raw.height, raw.width, raw.already_mnist))
        elif source == "encoded":
            converted.append(EncodedImage(image.encoded))
        else:
            where = f"image {index}: " if len(images) > 1 else ""
            raise InvalidInput(f"{where}the image has neither `encoded` bytes nor `raw` pixels; set one of them")
    return converted


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


def write_predictions(predictions, classification: Classification) -> None:
    """Append one Prediction per classified image to the repeated field `predictions`.

    Built in place, field by field: protobuf's Python API copies every message handed to its parent
    (each Candidate into its Prediction, each Prediction into the response), and keyword arguments
    cost more than attribute assignments (docs/performance.md has the figures).
    """
    add = predictions.add
    labels = classification.labels
    for classes, probs in zip(classification.classes, classification.top_probabilities):
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
        max_batch_size=max_batch_size,
    )
    if card is not None and card.test_accuracy is not None:
        metadata.test_accuracy = float(card.test_accuracy)
    return metadata


class DigitsServicer(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(self, dataplane: DataPlane, metrics: Metrics | None = None, admission: Admission | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.admission = admission

    @unary(SERVICE)
    async def Classify(self, request: digits_pb2.ClassifyRequest, context) -> digits_pb2.ClassifyResponse:
        classification = await self.dataplane.classify(
            request.model, core_images(request.images), request.top_k, deadline_from(context), request.model_version,
        )
        response = digits_pb2.ClassifyResponse(model=classification.model.name,
                                                model_version=classification.model.version)
        write_predictions(response.predictions, classification)
        return response

    async def _classify_streamed(self, request: digits_pb2.ClassifyStreamRequest, deadline: float | None):
        """One streamed image; its errors become the answer's `error`, so the stream goes on."""
        try:
            if not request.HasField("image"):
                raise InvalidInput("the stream message carries no image; set `image`")
            classification = await self.dataplane.classify(request.model, core_images([request.image]), request.top_k,
                                                           deadline, request.model_version)
            response = digits_pb2.ClassifyStreamResponse(id=request.id, model=classification.model.name,
                                                         model_version=classification.model.version)
            write_prediction(response.prediction, classification.classes[0], classification.top_probabilities[0],
                             classification.labels)
            return response
        except StatusError as exc:
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
        dataplane = self.dataplane
        return digits_pb2.ListModelsResponse(
            models=[model_metadata(model, dataplane.model_max_batch_size(model)) for model in dataplane.models()]
        )

    @unary(SERVICE)
    async def GetModelMetadata(self, request, context) -> digits_pb2.ModelMetadata:
        dataplane = self.dataplane
        model = dataplane.model(request.name) if request.name else dataplane.classifier("")
        return model_metadata(model, dataplane.model_max_batch_size(model))
