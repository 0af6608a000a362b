"""Every image format the digits API documents, end to end through gRPC: each accepted format and
variant is classified as the decoding pipeline reads it, animations by their first frame, and every
bomb, malformed file and refused format gets its status and a detail that names the problem.

The files come from image_samples, which the HTTP API's tests share."""
from __future__ import annotations

import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest

import image_samples
from serve.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from serve.images.preprocess import decode_image, prepare_digit
from serve_testing import TEST_LIMITS

MODEL = "centroid"
DIGITS_PER_FORMAT = 3


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


def served_probabilities(digits, files: list[bytes]) -> np.ndarray:
    request = digits_pb2.ClassifyRequest(model=MODEL, top_k=10, images=[digits_pb2.Image(encoded=data) for data in files])
    response = digits.Classify(request, timeout=30)
    probabilities = np.zeros((len(files), 10), np.float32)
    for row, prediction in enumerate(response.predictions):
        for candidate in prediction.top_k:
            probabilities[row, candidate.digit] = candidate.probability
    return probabilities


def refuse(digits, data: bytes) -> grpc.RpcError:
    request = digits_pb2.ClassifyRequest(model=MODEL, images=[digits_pb2.Image(encoded=data)])
    with pytest.raises(grpc.RpcError) as failure:
        digits.Classify(request, timeout=10)
    return failure.value


def test_every_accepted_format_and_variant_is_classified(digits, offline_session, mnist_test_set):
    images, labels = mnist_test_set
    names, files, truth = [], [], []
    for index in range(DIGITS_PER_FORMAT):
        for name, data in image_samples.digit_files(images[index]).items():
            names.append(name)
            files.append(data)
            truth.append(labels[index])
    assert {name.split(",")[0] for name in names} == set(image_samples.ACCEPTED_FORMATS)
    served = served_probabilities(digits, files)
    np.testing.assert_allclose(served, offline_probabilities(offline_session, files), rtol=1e-5, atol=1e-6)
    correct = served.argmax(axis=1) == np.array(truth)
    assert correct.mean() >= 0.7, dict(zip(names, correct))


def test_animations_and_multi_page_files_are_classified_by_their_first_frame(digits, offline_session, mnist_test_set):
    images, _ = mnist_test_set
    first, later = images[0], images[1]
    animated = image_samples.first_frame_files(first, later)
    served = served_probabilities(digits, list(animated.values()))
    np.testing.assert_allclose(served, offline_probabilities(offline_session, list(animated.values())), rtol=1e-5, atol=1e-6)
    as_first, as_later = served_probabilities(digits, [image_samples.encode(image_samples.paper_picture(d), "PNG")
                                                       for d in (first, later)])
    for name, probabilities in zip(animated, served):
        assert np.abs(probabilities - as_first).sum() < np.abs(probabilities - as_later).sum(), name


@pytest.mark.parametrize("name", sorted(image_samples.MANY_FRAMES))
def test_thousands_of_frames_cost_what_one_does(digits, name):
    data = image_samples.MANY_FRAMES[name]
    assert len(data) <= TEST_LIMITS.image.max_image_bytes
    started = time.perf_counter()
    request = digits_pb2.ClassifyRequest(model=MODEL, images=[digits_pb2.Image(encoded=data)])
    assert len(digits.Classify(request, timeout=10).predictions) == 1
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("name", sorted(image_samples.BOMBS))
def test_bombs_of_every_kind_are_refused_as_too_large(digits, name, mnist_test_set):
    bomb = image_samples.BOMBS[name]
    error = refuse(digits, bomb.data)
    assert error.code() == grpc.StatusCode[bomb.code], error.details()
    assert bomb.detail in error.details() and f"the limit is {TEST_LIMITS.image.max_image_pixels}" in error.details()
    images, _ = mnist_test_set
    request = digits_pb2.ClassifyRequest(model=MODEL, images=[digits_pb2.Image(encoded=image_samples.digit_files(images[0])["PNG"])])
    assert len(digits.Classify(request, timeout=10).predictions) == 1


MALFORMED = image_samples.malformed_files()
REFUSED = image_samples.refused_formats()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("name", sorted(MALFORMED) + sorted(REFUSED))
def test_malformed_files_and_formats_still_refused_are_invalid_arguments(digits, name):
    refusal = MALFORMED.get(name) or REFUSED[name]
    error = refuse(digits, refusal.data)
    assert error.code() == grpc.StatusCode[refusal.code], error.details()
    assert refusal.detail in error.details()


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
