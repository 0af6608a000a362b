"""The digits API over HTTP on a real server: every body kind answers what gRPC Classify answers for the
same images, details show what the model received, and bad input, tokens, limits and draining get
the right status with a detail that says what to fix."""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
import urllib3
from google.protobuf import json_format
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from serve_testing import TEST_LIMITS, TEST_MAX_MESSAGE_BYTES

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.images.formats import ACCEPTED_MEDIA_TYPES
from contracts.model_file import TensorSpec
from contracts.sessions import RuntimeOptions
from serve.api import grpc_digits, http_digits
from serve.api.services import DIGITS_SERVICE as SERVICE
from serve.core.answers import ModelDescription
from serve.server import BackgroundServer, ServerConfig

TOKEN = "http-token-0123456789"
# Each test sends a handful of the shared MNIST test digits; 12 cover every class.
SAMPLE = 12


def png(pixels_uint8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels_uint8).save(buffer, format="PNG")
    return buffer.getvalue()


def on_paper(pixels_uint8: np.ndarray, scale: int = 6) -> bytes:
    """An MNIST digit as a person's picture: dark ink on white, larger: the server's full preprocessing."""
    return png(np.kron(255 - pixels_uint8, np.ones((scale, scale), np.uint8)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def call(method: str, url: str, body: bytes | None = None, content_type: str | None = None, **headers):
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = urllib3.request(method, url, body=body, headers=headers, timeout=30, retries=False)
    assert response.headers["Content-Type"].startswith("application/json"), response.data[:200]
    return response.status, json.loads(response.data)


def post(url: str, body: bytes, content_type: str, **headers):
    return call("POST", url, body, content_type, **headers)


def post_json(url: str, document) -> tuple[int, dict]:
    return post(url, json.dumps(document).encode(), "application/json")


def multipart(files: list[bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A form as `curl -F image0=@digit0.png ...` sends it: one file field per image, then any text fields."""
    files_fields = [(f"image{i}", (f"digit{i}.png", data, "image/png")) for i, data in enumerate(files)]
    return urllib3.encode_multipart_formdata(files_fields + list((fields or {}).items()))


def grpc_answer(response: digits_pb2.ClassifyResponse) -> dict:
    """What a gRPC client reads, in the HTTP answer's layout: the same values, field by field."""
    def candidate(c):
        return {"digit": c.digit, "label": c.label, "probability": c.probability}

    def verdict(p):
        # The enum's name without its prefix, in lower case: VERDICT_NO_DIGIT -> "no_digit".
        name = digits_pb2.Verdict.Name(p.verdict).removeprefix("VERDICT_").lower()
        return {"verdict": name, "reason": p.reason, "candidates": list(p.candidates)}

    return {
        "model": response.model,
        "model_version": response.model_version,
        "predictions": [
            {**candidate(p), "top_k": [candidate(c) for c in p.top_k], **verdict(p)} for p in response.predictions
        ],
    }


def without_details(answer: dict) -> dict:
    return {**answer, "predictions": [
        {key: p[key] for key in ("digit", "label", "probability", "top_k", "verdict", "reason", "candidates")}
        for p in answer["predictions"]
    ]}


def data_url_pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):]))) as image:
        assert image.mode == "L"
        return np.asarray(image)


@pytest.fixture(scope="module")
def api(server) -> str:
    return server.http_url + "/digits/v1"


@pytest.fixture(scope="module")
def digits(channel):
    return digits_pb2_grpc.DigitClassifierStub(channel)


@pytest.fixture(scope="module")
def sample(mnist_test_set):
    images, labels = mnist_test_set
    return images[:SAMPLE], labels[:SAMPLE]


def grpc_classify(digits, images: list[digits_pb2.Image], model: str = "", top_k: int = 0,
                  min_confidence: float | None = None) -> dict:
    request = digits_pb2.ClassifyRequest(model=model, images=images, top_k=top_k, min_confidence=min_confidence)
    return grpc_answer(digits.Classify(request, timeout=30))


def encoded(data: bytes) -> digits_pb2.Image:
    return digits_pb2.Image(encoded=data)


def raw(pixels_uint8: np.ndarray, already_mnist: bool) -> digits_pb2.Image:
    height, width = pixels_uint8.shape
    return digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=pixels_uint8.tobytes(), height=height, width=width,
                                                     already_mnist=already_mnist))


# Every body kind answers what gRPC Classify answers

@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "image/jpeg"])
def test_an_image_body_gets_the_grpc_answer(api, digits, sample, content_type):
    images, labels = sample
    right = 0
    for image, label in zip(images, labels):
        picture = on_paper(image)
        status, answer = post(f"{api}/classify?top_k=10", picture, content_type)
        assert status == 200, answer
        assert answer == grpc_classify(digits, [encoded(picture)], top_k=10)
        assert len(answer["predictions"][0]["top_k"]) == 10
        right += answer["predictions"][0]["digit"] == label
    # The centroid classifier reads most digits: the answers are predictions, not noise.
    assert right >= SAMPLE * 2 // 3


def test_a_form_with_several_files_is_answered_in_file_order(api, digits, sample):
    images, _ = sample
    pictures = [on_paper(image) for image in images[:5]]
    body, content_type = multipart(pictures)
    status, answer = post(f"{api}/classify", body, content_type)
    assert status == 200, answer
    assert answer == grpc_classify(digits, [encoded(p) for p in pictures])
    # In order: each file's answer is that file's answer alone.
    for picture, prediction in zip(pictures, answer["predictions"]):
        assert post(f"{api}/classify", picture, "image/png")[1]["predictions"] == [prediction]


def test_json_images_of_every_form_get_the_grpc_answer(api, digits, sample):
    images, _ = sample
    a, b, c, d, e = images[:5]
    document = {
        "model": "centroid",
        "top_k": 4,
        "images": [
            {"pixels": a.ravel().tolist(), "height": 28, "width": 28, "already_mnist": True},
            {"pixels": b64(b.tobytes()), "height": 28, "width": 28, "already_mnist": True},
            {"pixels": (255 - c).tolist()},  # rows, dark ink on white: converted like a picture
            {"encoded": b64(on_paper(d))},
            {"encoded": "data:image/png;base64," + b64(on_paper(e))},  # what canvas.toDataURL() gives
        ],
    }
    status, answer = post_json(f"{api}/classify", document)
    assert status == 200, answer
    assert answer == grpc_classify(digits, [
        raw(a, True), raw(b, True), raw(255 - c, False), encoded(on_paper(d)), encoded(on_paper(e))
    ], model="centroid", top_k=4)


def test_the_url_names_the_model_and_the_default_is_the_first_classifier(api, digits, sample):
    images, _ = sample
    picture = on_paper(images[0])
    status, answer = post(f"{api}/models/padded32/classify", picture, "image/png")
    assert status == 200 and answer == grpc_classify(digits, [encoded(picture)], model="padded32")
    assert answer["model"] == "padded32"
    assert post(f"{api}/classify", picture, "image/png")[1]["model"] == "centroid"
    # The same model in the URL and the body is fine; only a contradiction is refused (see the bad inputs).
    document = {"model": "padded32", "images": [{"encoded": b64(picture)}]}
    assert post_json(f"{api}/models/padded32/classify", document) == (200, answer)


@pytest.mark.parametrize("query, candidates", [("", 3), ("?top_k=0", 3), ("?top_k=1", 1), ("?top_k=50", 10)])
def test_top_k_defaults_to_three_and_is_capped_at_the_labels(api, sample, query, candidates):
    images, _ = sample
    status, answer = post(f"{api}/classify{query}", on_paper(images[0]), "image/png")
    assert status == 200
    top = answer["predictions"][0]["top_k"]
    assert len(top) == candidates
    assert [c["probability"] for c in top] == sorted((c["probability"] for c in top), reverse=True)


# Verdicts

def test_every_prediction_carries_the_grpc_verdict(api, digits, sample):
    images, _ = sample
    pictures = [on_paper(image) for image in images] + [on_paper(np.zeros((28, 28), np.uint8))]  # and a blank page
    body, content_type = multipart(pictures)
    status, answer = post(f"{api}/models/judged/classify", body, content_type)
    assert status == 200 and answer == grpc_classify(digits, [encoded(p) for p in pictures], model="judged")
    *inked, blank = answer["predictions"]
    assert (blank["verdict"], blank["candidates"]) == ("no_digit", []) and blank["reason"].startswith("no ink")
    assert {p["verdict"] for p in inked} <= {"digit", "unsure", "no_digit"} and all(p["reason"] for p in inked)


@pytest.mark.parametrize("min_confidence", [0.0, 0.3, 0.9, 1.0])
def test_min_confidence_in_the_url_or_the_body_gets_the_grpc_answer(api, digits, sample, min_confidence):
    images, _ = sample
    pictures = [on_paper(image) for image in images]
    expected = grpc_classify(digits, [encoded(p) for p in pictures], model="judged", min_confidence=min_confidence)
    body, content_type = multipart(pictures)
    assert post(f"{api}/models/judged/classify?min_confidence={min_confidence}", body, content_type) == (200, expected)
    document = {"model": "judged", "min_confidence": min_confidence, "images": [{"encoded": b64(p)} for p in pictures]}
    assert post_json(f"{api}/classify", document) == (200, expected)
    assert post_json(f"{api}/classify?min_confidence={min_confidence}", document) == (200, expected)


def test_min_confidence_changes_the_verdict(api, sample):
    picture = on_paper(sample[0][0])
    _, lenient = post(f"{api}/classify?min_confidence=0", picture, "image/png")
    _, strict = post(f"{api}/classify?min_confidence=1", picture, "image/png")
    (lenient,), (strict,) = lenient["predictions"], strict["predictions"]
    assert (lenient["verdict"], lenient["candidates"]) == ("digit", [lenient["digit"]])
    assert (strict["verdict"], strict["candidates"]) == ("unsure", [c["digit"] for c in strict["top_k"][:2]])


# Details: every probability and the picture the model received

def test_details_add_every_probability_and_the_model_input(api, digits, sample):
    images, _ = sample
    document = {"images": [{"pixels": image.tolist(), "already_mnist": True} for image in images[:4]]}
    status, answer = post_json(f"{api}/classify?details=1&top_k=10", document)
    assert status == 200
    assert without_details(answer) == grpc_classify(digits, [raw(image, True) for image in images[:4]], top_k=10)
    for image, prediction in zip(images, answer["predictions"]):
        probabilities = prediction["probabilities"]
        assert len(probabilities) == 10 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        for candidate in prediction["top_k"]:
            assert probabilities[candidate["digit"]] == candidate["probability"]
        # Already in MNIST's format, the pixels reach the model unchanged.
        np.testing.assert_array_equal(data_url_pixels(prediction["model_input"]), image)


def test_details_show_the_preprocessed_and_padded_picture(api, sample):
    images, _ = sample
    picture = on_paper(images[1])
    status, answer = post(f"{api}/models/padded32/classify?details=true", picture, "image/png")
    assert status == 200
    model_input = data_url_pixels(answer["predictions"][0]["model_input"])
    assert model_input.shape == (32, 32)
    # Light ink on dark, as MNIST: the white paper became the dark background, padded by 2 on each side.
    assert model_input[:2].max() == 0 and model_input[:, :2].max() == 0 and model_input[-2:].max() == 0
    assert model_input.max() > 200 and np.median(model_input) == 0
    plain = post(f"{api}/classify", picture, "image/png")[1]["predictions"][0]
    assert "model_input" not in plain and "probabilities" not in plain


def test_decoding_parsing_and_previews_run_in_the_decoding_pool(api, digits, sample, monkeypatch):
    """Not on the event loop, where they would stall every other call: each runs in a thread of the
    server's decoding pool (named "preprocess")."""
    import threading

    import serve.api.http_digit_images as http_digit_images
    import serve.api.http_digits as http_digits
    import serve.core.digit_inputs as digit_inputs

    threads: dict[str, set[str]] = {}

    def recorded(name, function):
        def wrapper(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return function(*args, **kwargs)
        return wrapper

    for module, name in ((http_digit_images, "parse_json_body"), (http_digits, "png_data_url"),
                         (digit_inputs, "decode_image")):
        monkeypatch.setattr(module, name, recorded(name, getattr(module, name)))
    images, _ = sample
    document = {"images": [{"encoded": b64(on_paper(image, scale=12))} for image in images]}
    body = json.dumps(document).encode()
    assert len(body) > http_digit_images.PARSE_INLINE_BYTES  # large enough to be worth the hop
    status, answer = post(f"{api}/classify?details=1", body, "application/json")
    assert status == 200 and len(answer["predictions"]) == len(images)
    grpc_classify(digits, [encoded(on_paper(images[0]))])
    assert set(threads) == {"parse_json_body", "png_data_url", "decode_image"}
    for name, names in threads.items():
        assert all(thread.startswith("preprocess") for thread in names), (name, names)


# Metadata: the gRPC messages, as protobuf's JSON mapping

def test_metadata_is_the_grpc_metadata(api, digits):
    status, listing = call("GET", f"{api}/models")
    assert status == 200
    expected = digits.ListModels(digits_pb2.ListModelsRequest(), timeout=10)
    assert json_format.ParseDict(listing, digits_pb2.ListModelsResponse()) == expected
    names = [m["name"] for m in listing["models"]]
    assert names == [m.name for m in expected.models] and "centroid" in names
    status, centroid = call("GET", f"{api}/models/centroid")
    assert status == 200
    assert json_format.ParseDict(centroid, digits_pb2.ModelMetadata()) == digits.GetModelMetadata(
        digits_pb2.GetModelMetadataRequest(name="centroid"), timeout=10)
    assert centroid["classifies_images"] is True and centroid["input_size"] == [28, 28]
    assert centroid["labels"] == [str(i) for i in range(10)] and centroid["max_batch_size"] == 256


FP32 = np.dtype(np.float32)
DESCRIPTION = ModelDescription(
    name="lenet", task="classification", classifies_images=True, labels=tuple("0123456789"), input_size=(28, 28),
    inputs=(TensorSpec("pixels", "FP32", FP32, (-1, 1, 28, 28)),), outputs=(TensorSpec("probabilities", "FP32", FP32, (-1, 10)),),
    execution_provider="CPUExecutionProvider", provider_note="", test_accuracy=0.9912, dataset="mnist",
    file_sha256="ab" * 32, max_batch_size=256,
)
THIRD_PARTY = {"task": "unknown", "classifies_images": False, "labels": (), "input_size": (), "test_accuracy": None,
               "dataset": "", "inputs": (TensorSpec("x", "INT64", np.dtype(np.int64), ()),)}


@pytest.mark.parametrize("changes", [
    {}, {"test_accuracy": None}, {"test_accuracy": 1 / 3}, {"test_accuracy": 0.0}, {"test_accuracy": 0.98765432},
    {"provider_note": "CUDA was asked for but is not available"}, {"max_batch_size": 1}, THIRD_PARTY,
])
def test_metadata_json_is_protobufs_json_mapping_of_the_grpc_message(changes):
    description = dataclasses.replace(DESCRIPTION, **changes)
    expected = json_format.MessageToDict(grpc_digits.model_metadata(description), preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    assert json.dumps(http_digits.metadata_json(description)) == json.dumps(expected)


# Bad input: the right status and a detail that says what to send

WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(24)
BAD_JSON_BODIES = [
    ("{", 400, "the body is not valid JSON"),
    ("[1, 2]", 400, "must be an object, got list"),
    ("{}", 400, "needs an `images` list"),
    ('{"images": []}', 400, "carries no images"),
    ('{"images": [{}]}', 400, "either `encoded` or `pixels`"),
    ('{"images": [{"encoded": "aGk=", "pixels": [1]}]}', 400, "either `encoded` or `pixels`"),
    ('{"images": [{"encoded": "not base64!"}]}', 400, "`encoded` is not valid base64"),
    ('{"images": [{"encoded": 7}]}', 400, "`encoded` must be a base64 string"),
    ('{"images": [{"encoded": "aGk="}]}', 400, "not a PNG, JPEG, BMP, GIF, TIFF or WebP image"),
    ('{"images": [{"pixels": [300], "height": 1, "width": 1}]}', 400, "integers 0-255"),
    ('{"images": [{"pixels": [0.5], "height": 1, "width": 1}]}', 400, "integers 0-255"),
    ('{"images": [{"pixels": [[1, 2], [3]]}]}', 400, "the rows differ in length"),
    ('{"images": [{"pixels": [1, 2, 3]}]}', 400, "raw `pixels` need `height`"),
    ('{"images": [{"pixels": [1, 2, 3], "height": 28, "width": 28}]}', 400, "must be 784 bytes"),
    ('{"images": [{"pixels": [[1, 2]], "height": 2}]}', 400, "`height` is 2 but `pixels` has 1 rows"),
    ('{"images": [{"pixels": [1], "height": 1, "width": 1, "already_mnist": "yes"}]}', 400, "`already_mnist` must be true or false"),
    ('{"images": [{"pixels": [1], "height": 1, "width": 1, "already_mnist": true}]}', 400, "must be 28x28"),
    ('{"images": [{"encoded": "aGk="}, {"pixels": [1], "height": 1}]}', 400, "image 1: raw `pixels` need `width`"),
    ('{"top_k": -1, "images": []}', 400, "`top_k` must be a whole number >= 0"),
    ('{"top_k": "3", "images": []}', 400, "`top_k` must be a whole number >= 0"),
    ('{"model": 5, "images": []}', 400, "`model` must be a string"),
    ("[" * 100_000, 400, "the body is not valid JSON"),
    (b"\xff\xfe{", 400, "the body is not valid JSON"),
]


@pytest.mark.parametrize("body, status, detail", BAD_JSON_BODIES)
def test_bad_json_bodies_are_refused_with_what_to_send(api, body, status, detail):
    got, answer = post(f"{api}/classify", body if isinstance(body, bytes) else body.encode(), "application/json")
    assert (got, detail in answer["error"]) == (status, True), answer


@pytest.mark.parametrize("content_type, body, status, detail", [
    ("text/plain", b"7", 415, "Content-Type 'text/plain' is not accepted here; send an image file's bytes"),
    ("application/x-www-form-urlencoded", b"x", 415, "-H 'Content-Type: image/png'"),
    ("image/png", b"hello", 400, "not a PNG, JPEG, BMP, GIF, TIFF or WebP image"),
    ("image/png", b"", 400, "the image is empty"),
    ("image/webp", WEBP, 400, "corrupt WebP image"),
    ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(30), 400, "corrupt PNG image"),
])
def test_bad_image_bodies_are_refused_with_what_to_send(api, content_type, body, status, detail):
    got, answer = post(f"{api}/classify", body, content_type)
    assert (got, detail in answer["error"]) == (status, True), answer


def test_a_refused_content_type_names_every_image_type_accepted(api):
    got, answer = post(f"{api}/classify", b"7", "text/plain")
    assert got == 415
    assert [media_type for media_type in ACCEPTED_MEDIA_TYPES if media_type not in answer["error"]] == []


def test_bad_forms_are_refused_with_what_to_send(api, sample):
    picture = on_paper(sample[0][0])
    body, content_type = multipart([picture], {"model": "centroid"})
    status, answer = post(f"{api}/classify", body, content_type)
    assert status == 400 and "the form field 'model' is not a file" in answer["error"]
    body, content_type = multipart([])
    status, answer = post(f"{api}/classify", body, content_type)
    assert status == 400 and "the form carries no file" in answer["error"]
    status, answer = post(f"{api}/classify", b"--x\r\nnonsense", "multipart/form-data; boundary=x")
    assert status == 400 and "malformed multipart/form-data body" in answer["error"]
    status, answer = post(f"{api}/classify", b"", "multipart/form-data")
    assert status == 400 and "multipart/form-data" in answer["error"]


@pytest.mark.parametrize("path, body, status, detail", [
    ("/models/nope/classify", None, 404, "unknown model 'nope'; this server has: "),
    ("/models/thirdparty/classify", None, 400, "is a third-party model without a model card, not a digit classifier"),
    ("/classify?top_k=three", None, 400, "the `top_k` query parameter must be a whole number >= 0"),
    ("/classify?top_k=-2", None, 400, "the `top_k` query parameter must be a whole number >= 0"),
    ("/classify?details=maybe", None, 400, "the `details` query parameter must be 1 or 0"),
    ("/models/padded32/classify", {"model": "centroid"}, 400, "the URL asks for model 'padded32' but the JSON body for 'centroid'"),
    ("/classify?top_k=2", {"top_k": 3}, 400, "the URL asks for top_k 2 but the JSON body for 3; give it once"),
    ("/classify?min_confidence=high", None, 400, "the `min_confidence` query parameter must be a number between 0 and 1, got 'high'"),
    ("/classify?min_confidence=1.5", None, 400, "min_confidence must be a probability between 0 and 1, got 1.5"),
    ("/classify?min_confidence=-0.1", None, 400, "min_confidence must be a probability between 0 and 1, got -0.1"),
    ("/classify?min_confidence=nan", None, 400, "min_confidence must be a probability between 0 and 1, got nan"),
    ("/classify", {"min_confidence": "0.9"}, 400, '`min_confidence` must be a number between 0 and 1, got "0.9"'),
    ("/classify", {"min_confidence": True}, 400, "`min_confidence` must be a number between 0 and 1, got true"),
    ("/classify", {"min_confidence": 2}, 400, "min_confidence must be a probability between 0 and 1, got 2"),
    ("/classify?min_confidence=0.5", {"min_confidence": 0.6}, 400, "the URL asks for min_confidence 0.5 but the JSON body for 0.6"),
])
def test_bad_models_and_options_are_refused(api, sample, path, body, status, detail):
    picture = on_paper(sample[0][0])
    if body is None:
        got, answer = post(api + path, picture, "image/png")
    else:
        got, answer = post_json(api + path, {**body, "images": [{"encoded": b64(picture)}]})
    assert (got, detail in answer["error"]) == (status, True), answer


def test_unknown_metadata_and_wrong_methods_answer_json(api):
    status, answer = call("GET", f"{api}/models/nope")
    assert status == 404 and "unknown model 'nope'" in answer["error"]
    status, answer = call("GET", f"{api}/classify")
    assert status == 405 and answer["error"]


# Limits: 413 with what to do

def test_limits_are_413_with_what_to_do(api, sample):
    images, _ = sample
    limit = TEST_MAX_MESSAGE_BYTES
    status, answer = post(f"{api}/classify", bytes(limit + 1), "image/png")
    assert status == 413 and f"larger than the server's limit of {limit} bytes" in answer["error"]
    body, content_type = multipart([bytes(limit // 2), bytes(limit // 2 + 1024)])
    status, answer = post(f"{api}/classify", body, content_type)
    assert status == 413 and answer["error"]
    big_image = bytes(TEST_LIMITS.image.max_image_bytes + 1)
    status, answer = post(f"{api}/classify", big_image, "image/png")
    assert status == 413 and f"the limit is {TEST_LIMITS.image.max_image_bytes}" in answer["error"]
    body, content_type = multipart([on_paper(images[0]), big_image])
    status, answer = post(f"{api}/classify", body, content_type)
    assert status == 413 and "image 1 ('digit1.png') is over" in answer["error"]
    # Sent in chunks (no Content-Length to refuse up front): counted as it arrives, refused past the limit.
    part_bytes = TEST_LIMITS.image.max_image_bytes - 1024
    body, content_type = multipart([bytes(part_bytes)] * (limit // part_bytes + 2))
    response = urllib3.request("POST", f"{api}/classify", body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                               headers={"Content-Type": content_type}, timeout=30, retries=False)
    assert response.status == 413 and f"larger than the server's limit of {limit} bytes" in json.loads(response.data)["error"]
    count = TEST_LIMITS.max_images_per_request + 1
    body, content_type = multipart([png(images[0])] * count)
    status, answer = post(f"{api}/classify", body, content_type)
    assert status == 413 and f"more than {count - 1} images" in answer["error"]
    status, answer = post_json(f"{api}/classify", {"images": [{"pixels": b64(images[0].tobytes()), "already_mnist": True,
                                                               "height": 28, "width": 28}] * count})
    assert status == 413 and f"carries {count} images; the limit is {count - 1}" in answer["error"]


def _http_counts(server) -> dict[tuple[str, str], float]:
    text = urllib3.request("GET", f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).data.decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "serve_requests_total" and labels["protocol"] == "http" and labels["service"] == SERVICE:
                counts[labels["method"], labels["code"]] = sample.value
    return counts


def test_http_calls_are_counted_under_the_grpc_names(server, api, sample):
    before = _http_counts(server)
    post(f"{api}/classify", on_paper(sample[0][0]), "image/png")
    post(f"{api}/classify", b"nope", "image/png")
    call("GET", f"{api}/models")
    call("GET", f"{api}/models/centroid")
    after = _http_counts(server)
    for key in (("Classify", "OK"), ("Classify", "INVALID_ARGUMENT"), ("ListModels", "OK"), ("GetModelMetadata", "OK")):
        assert after[key] - before.get(key, 0) == 1, key


# Tokens and draining: the middleware, as every HTTP route sees it

def _small_server(model_dir, **fields) -> BackgroundServer:
    return BackgroundServer(ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0,
                                         runtime=RuntimeOptions(device="cpu"), **fields))


def test_tokens_guard_the_api_but_not_the_page(model_dir, tmp_path, sample):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    picture = on_paper(sample[0][0])
    with _small_server(model_dir, token_file=token_file) as server:
        api = server.http_url + "/digits/v1"
        for headers, detail in (({}, "missing credentials"), ({"Authorization": "Bearer wrong"}, "invalid bearer token")):
            status, answer = post(f"{api}/classify", picture, "image/png", **headers)
            assert status == 401 and detail in answer["error"]
            status, answer = call("GET", f"{api}/models", **headers)
            assert status == 401 and detail in answer["error"]
        status, answer = post(f"{api}/classify", picture, "image/png", Authorization=f"Bearer {TOKEN}")
        assert status == 200 and answer["model"] == "centroid"
        # The page is static and holds nothing secret; it asks for the token when the API refuses it.
        page = urllib3.request("GET", server.http_url + "/", timeout=10)
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")


def test_a_draining_server_answers_503(model_dir, sample):
    with _small_server(model_dir) as server:
        api = server.http_url + "/digits/v1"
        assert post(f"{api}/classify", on_paper(sample[0][0]), "image/png")[0] == 200
        server.call(server.server.admission.drain(timeout=2.0))
        status, answer = post(f"{api}/classify", on_paper(sample[0][0]), "image/png")
        assert status == 503 and "shutting down: retry on another replica or later" in answer["error"]
