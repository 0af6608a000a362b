"""digits.v1.DigitClassifier over HTTP: the gRPC API's Classify, ListModels and GetModelMetadata as JSON.

    POST /digits/v1/classify                  the default model
    POST /digits/v1/models/{model}/classify   a named model
         ?top_k=K (0 or absent: 3)  &details=1 (adds every class's probability and the picture the model got)
         &min_confidence=P (in [0, 1]; absent: the model card's) judges the verdicts with the caller's own threshold
    GET  /digits/v1/models                    {"models": [ModelMetadata, ...]}
    GET  /digits/v1/models/{model}            ModelMetadata

A prediction has the fields of gRPC's Prediction with the same values (probabilities are the model's
float32 values, written exactly; the verdict as "digit", "unsure" or "no_digit"); metadata is what protobuf's JSON mapping makes of gRPC's
ModelMetadata (field names as in the .proto, int64 shapes as strings), both written here from the
data plane's answers. Metrics count these calls under the gRPC service and method names.
"""
from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
from aiohttp import web
from PIL import Image

from contracts.errors import InvalidInput
from contracts.model_file import TensorSpec
from serve.api.http_digit_images import DigitsBody, non_negative_int, read_digits_body
from serve.api.http_server import DATAPLANE, DEADLINE, route
from serve.api.services import DIGITS_SERVICE
from serve.core.answers import ModelDescription
from serve.core.dataplane import Classification, DataPlane

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
# Answers for up to this many images, without previews, are written on the event loop: in less
# time than a hop to the pool. A preview is a PNG to encode (about 0.1 ms each): always in the pool.
ANSWER_INLINE_IMAGES = 16


def query_top_k(request: web.Request) -> int | None:
    value = request.query.get("top_k")
    if value is None:
        return None
    try:
        return non_negative_int(int(value), "the `top_k` query parameter")
    except ValueError:
        raise InvalidInput(f"the `top_k` query parameter must be a whole number >= 0 (0: the default), got {value!r}") from None


def query_details(request: web.Request) -> bool:
    value = request.query.get("details", "").lower()
    if value not in _TRUE + _FALSE:
        raise InvalidInput(f"the `details` query parameter must be 1 or 0, got {value!r}")
    return value in _TRUE


def query_min_confidence(request: web.Request) -> float | None:
    value = request.query.get("min_confidence")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"the `min_confidence` query parameter must be a number between 0 and 1, got {value!r}") from None


def as_float32(value: float | None) -> float | None:
    """A probability as gRPC's float field carries it, so that both front doors judge alike; anything
    else unchanged, for the data plane to refuse with the value the caller sent."""
    if value is None or not 0.0 <= value <= 1.0:
        return value
    return float(np.float32(value))


def _agreed(from_url, from_body, what: str):
    """An option given in the URL and in the JSON body must be the same; either alone is fine."""
    if from_url is not None and from_body is not None and from_url != from_body:
        raise InvalidInput(f"the URL asks for {what} {from_url!r} but the JSON body for {from_body!r}; give it once")
    return from_url if from_url is not None else from_body


def png_data_url(pixels: np.ndarray) -> str:
    """A H x W picture with values in [0, 1] -> an 8-bit grayscale PNG as a data: URL (an <img> shows it)."""
    gray = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def predictions_json(classification: Classification, details: bool) -> list[dict]:
    """One dict per image: the prediction that serve.core.dataplane.Classification describes."""
    labels = classification.labels
    verdicts, reasons, candidates = (classification.verdicts.verdicts, classification.verdicts.reasons,
                                     classification.verdicts.candidates)
    predictions = []
    for index, (classes, probabilities) in enumerate(zip(classification.classes, classification.top_probabilities)):
        best = classes[0]
        prediction = {
            "digit": best,
            "label": labels[best],
            "probability": probabilities[0],
            "top_k": [{"digit": c, "label": labels[c], "probability": p} for c, p in zip(classes, probabilities)],
            "verdict": verdicts[index].value,
            "reason": reasons[index],
            "candidates": list(candidates[index]),
        }
        if details:
            prediction["probabilities"] = classification.probabilities[index].tolist()
            # Channel 0: the picture exactly as the model received it, after the server's preprocessing.
            prediction["model_input"] = png_data_url(classification.pixels[index, 0])
        predictions.append(prediction)
    return predictions


def answer_text(classification: Classification, details: bool) -> str:
    """The JSON answer to a Classify call."""
    return json.dumps({"model": classification.model.name, "model_version": classification.model.version,
                       "predictions": predictions_json(classification, details)})


@route(DIGITS_SERVICE, "Classify")
async def classify(request: web.Request) -> web.Response:
    dataplane: DataPlane = request.app[DATAPLANE]
    # Checked before the body is read.
    top_k, details, min_confidence = query_top_k(request), query_details(request), query_min_confidence(request)
    body: DigitsBody = await read_digits_body(request, dataplane.limits, dataplane.run_in_pool)
    model = _agreed(request.match_info.get("model"), body.model or None, "model")
    top_k = _agreed(top_k, body.top_k, "top_k")
    url_version = request.match_info.get("version") or request.query.get("model_version") or None
    version = _agreed(url_version, body.model_version, "model_version")
    min_confidence = as_float32(_agreed(min_confidence, body.min_confidence, "min_confidence"))
    classification = await dataplane.classify(model or "", body.images, top_k or 0, request[DEADLINE], version or "",
                                              min_confidence)
    if details or len(body.images) > ANSWER_INLINE_IMAGES:
        text = await dataplane.run_in_pool(answer_text, classification, details)
    else:
        text = answer_text(classification, details)
    return web.Response(text=text, content_type="application/json")


def float32_json(value: float) -> float | str:
    """`value` as a float32 field holds it, in the fewest digits that read back as the same float32
    (protobuf's JSON mapping: 0.9912, not 0.9911999702453613); non-finite values as its strings do."""
    stored = float(np.float32(value))
    if not math.isfinite(stored):
        return "NaN" if math.isnan(stored) else ("Infinity" if stored > 0 else "-Infinity")
    digits = 6
    while float(np.float32(shortest := float(f"{stored:.{digits}g}"))) != stored:
        digits += 1
    return shortest


def _tensor_json(spec: TensorSpec) -> dict:
    # int64 dimensions, which protobuf's JSON mapping writes as strings.
    return {"name": spec.name, "datatype": spec.datatype, "shape": [str(size) for size in spec.shape]}


def metadata_json(description: ModelDescription) -> dict:
    """gRPC's ModelMetadata as protobuf's JSON mapping writes it, which this answer has always been."""
    fields = [
        ("name", description.name),
        ("task", description.task),
        ("classifies_images", description.classifies_images),
        ("labels", list(description.labels)),
        ("input_size", list(description.input_size)),
        ("inputs", [_tensor_json(spec) for spec in description.inputs]),
        ("outputs", [_tensor_json(spec) for spec in description.outputs]),
        ("execution_provider", description.execution_provider),
        ("provider_note", description.provider_note),
        ("test_accuracy", description.test_accuracy),
        ("dataset", description.dataset),
        ("file_sha256", description.file_sha256),
        ("max_batch_size", description.max_batch_size),
    ]
    # The same keys in the same order as protobuf wrote them: the fields holding a value, in field
    # order, then those at their default (false, 0, "" or []); test_accuracy only when it is known.
    held = {name: value for name, value in fields if value or (name == "test_accuracy" and value is not None)}
    if "test_accuracy" in held:
        held["test_accuracy"] = float32_json(description.test_accuracy)
    at_default = {name: value for name, value in fields if name not in held and name != "test_accuracy"}
    return held | at_default


@route(DIGITS_SERVICE, "ListModels")
async def list_models(request: web.Request) -> web.Response:
    dataplane: DataPlane = request.app[DATAPLANE]
    return web.json_response({"models": [metadata_json(description) for description in dataplane.model_descriptions()]})


@route(DIGITS_SERVICE, "GetModelMetadata")
async def get_model_metadata(request: web.Request) -> web.Response:
    dataplane: DataPlane = request.app[DATAPLANE]
    return web.json_response(metadata_json(dataplane.model_description(request.match_info["model"])))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/digits/v1/classify", classify)
    app.router.add_post("/digits/v1/models/{model}/classify", classify)
    app.router.add_post("/digits/v1/models/{model}/versions/{version}/classify", classify)
    app.router.add_get("/digits/v1/models", list_models)
    app.router.add_get("/digits/v1/models/{model}", get_model_metadata)
