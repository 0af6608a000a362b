"""Every image format the digits API documents, end to end through both front doors (gRPC Classify and
the HTTP digits API): each accepted format and variant is classified as the decoding pipeline reads it,
animations by their first frame, and every bomb, malformed file and refused format gets its status and
a detail that names the problem.

The files come from image_samples."""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request

import grpc
import image_samples
import numpy as np
import onnxruntime as ort
import pytest
from serve_testing import TEST_LIMITS

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.images.preprocess import decode_image, prepare_digit

MODEL = "centroid"
DIGITS_PER_FORMAT = 3


# The HTTP status each refusal's gRPC code maps to (serve.api.http_server.HTTP_STATUS).
HTTP_CODES = {400: "INVALID_ARGUMENT", 413: "RESOURCE_EXHAUSTED"}


class GrpcDigits:
    def __init__(self, channel):
        self.stub = digits_pb2_grpc.DigitClassifierStub(channel)

    def probabilities(self, files: list[bytes]) -> np.ndarray:
        request = digits_pb2.ClassifyRequest(model=MODEL, top_k=10, images=[digits_pb2.Image(encoded=data) for data in files])
        response = self.stub.Classify(request, timeout=30)
        probabilities = np.zeros((len(files), 10), np.float32)
        for row, prediction in enumerate(response.predictions):
            for candidate in prediction.top_k:
                probabilities[row, candidate.digit] = candidate.probability
        return probabilities

    def refusal(self, data: bytes) -> tuple[str, str]:
        request = digits_pb2.ClassifyRequest(model=MODEL, images=[digits_pb2.Image(encoded=data)])
        with pytest.raises(grpc.RpcError) as failure:
            self.stub.Classify(request, timeout=10)
        return failure.value.code().name, failure.value.details()


class HttpDigits:
    def __init__(self, base_url: str):
        self.url = f"{base_url}/digits/v1/models/{MODEL}/classify"

    def _post(self, body: bytes, content_type: str, query: str = "") -> tuple[int, dict]:
        request = urllib.request.Request(self.url + query, data=body, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def probabilities(self, files: list[bytes]) -> np.ndarray:
        document = {"images": [{"encoded": base64.b64encode(data).decode("ascii")} for data in files]}
        status, answer = self._post(json.dumps(document).encode(), "application/json", "?details=1")
        assert status == 200, answer
        return np.array([prediction["probabilities"] for prediction in answer["predictions"]], np.float32)

    def refusal(self, data: bytes) -> tuple[str, str]:
        status, answer = self._post(data, "application/octet-stream")
        assert status in HTTP_CODES, (status, answer)
        return HTTP_CODES[status], answer["error"]


@pytest.fixture(scope="module", params=["grpc", "http"])
def front_door(request, server, channel):
    return GrpcDigits(channel) if request.param == "grpc" else HttpDigits(server.http_url)


@pytest.fixture(scope="module")
def digits(channel):
    return digits_pb2_grpc.DigitClassifierStub(channel)


@pytest.fixture(scope="module")
def offline_session(model_dir):
    return ort.InferenceSession(str(model_dir / f"{MODEL}.onnx"), providers=["CPUExecutionProvider"])


def offline_probabilities(session, files: list[bytes]) -> np.ndarray:
    """What the server must answer: the same bytes through the same decoding, then the same model."""
    pixels = np.stack([prepare_digit(decode_image(data, TEST_LIMITS.image), already_mnist=False) for data in files])
    return session.run(["probabilities"], {"pixels": pixels})[0]


def test_every_accepted_format_and_variant_is_classified(front_door, offline_session, mnist_test_set):
    images, labels = mnist_test_set
    names, files, truth = [], [], []
    for index in range(DIGITS_PER_FORMAT):
        for name, data in image_samples.digit_files(images[index]).items():
            names.append(name)
            files.append(data)
            truth.append(labels[index])
    assert {name.split(",")[0] for name in names} == set(image_samples.ACCEPTED_FORMATS)
    served = front_door.probabilities(files)
    np.testing.assert_allclose(served, offline_probabilities(offline_session, files), rtol=1e-5, atol=1e-6)
    correct = served.argmax(axis=1) == np.array(truth)
    assert correct.mean() >= 0.7, dict(zip(names, correct))


def test_animations_and_multi_page_files_are_classified_by_their_first_frame(front_door, offline_session, mnist_test_set):
    images, _ = mnist_test_set
    first, later = images[0], images[1]
    animated = image_samples.first_frame_files(first, later)
    served = front_door.probabilities(list(animated.values()))
    np.testing.assert_allclose(served, offline_probabilities(offline_session, list(animated.values())), rtol=1e-5, atol=1e-6)
    as_first, as_later = front_door.probabilities([image_samples.encode(image_samples.paper_picture(d), "PNG")
                                                   for d in (first, later)])
    for name, probabilities in zip(animated, served):
        assert np.abs(probabilities - as_first).sum() < np.abs(probabilities - as_later).sum(), name


@pytest.mark.parametrize("name", sorted(image_samples.MANY_FRAMES))
def test_thousands_of_frames_cost_what_one_does(front_door, name):
    data = image_samples.MANY_FRAMES[name]
    assert len(data) <= TEST_LIMITS.image.max_image_bytes
    started = time.perf_counter()
    assert len(front_door.probabilities([data])) == 1
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("name", sorted(image_samples.BOMBS))
def test_bombs_of_every_kind_are_refused_as_too_large(front_door, name, mnist_test_set):
    bomb = image_samples.BOMBS[name]
    code, detail = front_door.refusal(bomb.data)
    assert code == bomb.code, detail
    assert bomb.detail in detail and f"the limit is {TEST_LIMITS.image.max_image_pixels}" in detail
    images, _ = mnist_test_set
    assert len(front_door.probabilities([image_samples.digit_files(images[0])["PNG"]])) == 1


MALFORMED = image_samples.malformed_files()
REFUSED = image_samples.refused_formats()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("name", sorted(MALFORMED) + sorted(REFUSED))
def test_malformed_files_and_formats_still_refused_are_invalid_arguments(front_door, name):
    refusal = MALFORMED.get(name) or REFUSED[name]
    code, detail = front_door.refusal(refusal.data)
    assert code == refusal.code, detail
    assert refusal.detail in detail


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_stream_of_every_format_answers_each_image_in_order(digits, offline_session, mnist_test_set):
    images, _ = mnist_test_set
    accepted = image_samples.digit_files(images[0])
    refused = {**image_samples.BOMBS, **MALFORMED, **REFUSED}
    sequence = [(name, data, None) for name, data in accepted.items()]
    sequence += [(name, refusal.data, refusal) for name, refusal in refused.items()]
    sequence = sequence[::2] + sequence[1::2]  # refusals between accepted images

    def requests():
        for name, data, _ in sequence:
            yield digits_pb2.ClassifyStreamRequest(id=name, model=MODEL, image=digits_pb2.Image(encoded=data))

    answers = list(digits.ClassifyStream(requests(), timeout=60))
    assert [answer.id for answer in answers] == [name for name, _, _ in sequence]
    expected = dict(zip(accepted, offline_probabilities(offline_session, list(accepted.values())).argmax(axis=1)))
    for answer, (name, _, refusal) in zip(answers, sequence):
        if refusal is None:
            assert answer.WhichOneof("result") == "prediction" and answer.prediction.digit == expected[name], name
        else:
            assert answer.WhichOneof("result") == "error", name
            assert answer.error.code == refusal.code and refusal.detail in answer.error.message, (name, answer.error)
