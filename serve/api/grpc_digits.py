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
from contracts.model_file import TensorSpec
from contracts.verdicts import Verdict, VerdictTable
from serve.api.grpc_calls import deadline_from, stream, unary
from serve.api.metrics import Metrics
from serve.api.services import DIGITS_SERVICE
from serve.core.admission import Admission
from serve.core.answers import ModelDescription
from serve.core.dataplane import Classification, DataPlane
from serve.core.digit_inputs import EncodedImage, RawImage

log = logging.getLogger(__name__)

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


VERDICTS = {
    Verdict.DIGIT: digits_pb2.VERDICT_DIGIT,
    Verdict.UNSURE: digits_pb2.VERDICT_UNSURE,
    Verdict.NO_DIGIT: digits_pb2.VERDICT_NO_DIGIT,
}


def min_confidence_of(request: digits_pb2.ClassifyRequest | digits_pb2.ClassifyStreamRequest) -> float | None:
    """The request's own min_confidence, or None when it leaves the model card's (the field is `optional`)."""
    return request.min_confidence if request.HasField("min_confidence") else None


def write_prediction(prediction: digits_pb2.Prediction, classes: Sequence[int], probs: Sequence[float],
                     labels: Sequence[str], verdicts: VerdictTable, index: int) -> None:
    """Fill an empty Prediction (one row's top-k, most probable first, and verdict `index`) in place."""
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
    prediction.verdict = VERDICTS[verdicts.verdicts[index]]
    prediction.reason = verdicts.reasons[index]
    prediction.candidates.extend(verdicts.candidates[index])


def write_predictions(predictions, classification: Classification) -> None:
    """Append one Prediction per classified image to the repeated field `predictions`.

    Built in place, field by field: protobuf's Python API copies every message handed to its parent
    (each Candidate into its Prediction, each Prediction into the response), and keyword arguments
    cost more than attribute assignments (docs/performance.md has the figures).
    """
    add = predictions.add
    labels, verdicts = classification.labels, classification.verdicts
    for index, (classes, probs) in enumerate(zip(classification.classes, classification.top_probabilities)):
        write_prediction(add(), classes, probs, labels, verdicts, index)


def _tensor_info(spec: TensorSpec) -> digits_pb2.TensorInfo:
    return digits_pb2.TensorInfo(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def model_metadata(description: ModelDescription) -> digits_pb2.ModelMetadata:
    metadata = digits_pb2.ModelMetadata(
        name=description.name,
        task=description.task,
        classifies_images=description.classifies_images,
        labels=description.labels,
        input_size=description.input_size,
        inputs=[_tensor_info(spec) for spec in description.inputs],
        outputs=[_tensor_info(spec) for spec in description.outputs],
        execution_provider=description.execution_provider,
        provider_note=description.provider_note,
        dataset=description.dataset,
        file_sha256=description.file_sha256,
        max_batch_size=description.max_batch_size,
    )
    if description.test_accuracy is not None:
        metadata.test_accuracy = description.test_accuracy
    return metadata


class DigitsServicer(digits_pb2_grpc.DigitClassifierServicer):
    def __init__(self, dataplane: DataPlane, metrics: Metrics | None = None, admission: Admission | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.admission = admission

    @unary(DIGITS_SERVICE)
    async def Classify(self, request: digits_pb2.ClassifyRequest, context) -> digits_pb2.ClassifyResponse:
        classification = await self.dataplane.classify(
            request.model, core_images(request.images), request.top_k, deadline_from(context), request.model_version,
            min_confidence_of(request),
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
                                                           deadline, request.model_version, min_confidence_of(request))
            response = digits_pb2.ClassifyStreamResponse(id=request.id, model=classification.model.name,
                                                         model_version=classification.model.version)
            write_prediction(response.prediction, classification.classes[0], classification.top_probabilities[0],
                             classification.labels, classification.verdicts, 0)
            return response
        except StatusError as exc:
            return digits_pb2.ClassifyStreamResponse(
                id=request.id, model=request.model, error=digits_pb2.Error(code=exc.status, message=str(exc))
            )

    @stream(DIGITS_SERVICE)
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

    @unary(DIGITS_SERVICE)
    async def ListModels(self, request, context) -> digits_pb2.ListModelsResponse:
        return digits_pb2.ListModelsResponse(
            models=[model_metadata(description) for description in self.dataplane.model_descriptions()]
        )

    @unary(DIGITS_SERVICE)
    async def GetModelMetadata(self, request, context) -> digits_pb2.ModelMetadata:
        return model_metadata(self.dataplane.model_description(request.name))
