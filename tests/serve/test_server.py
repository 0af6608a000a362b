"""The server on a free loopback port: both APIs agree with offline ONNX Runtime, batches form under
concurrency, bad input gets the right status, deadlines hold, health/reflection/metrics work."""
from __future__ import annotations

import io
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from serve_testing import (
    JUDGED_THRESHOLDS,
    TEST_MAX_MESSAGE_BYTES,
    offline_probabilities,
    wait_until,
)

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2 as pb
from contracts.generated.inference import grpc_service_pb2_grpc as pb_grpc
from contracts.sessions import RuntimeOptions
from contracts.verdicts import DEFAULT_THRESHOLDS, ImageVerdict, Verdict, judge
from serve.api.grpc_server import SERVICE_NAMES
from serve.core.batching import BatchingOptions
from serve.server import BackgroundServer, ServerConfig

CHUNK = 200


def raw_image(pixels_uint8: np.ndarray, already_mnist: bool = True) -> digits_pb2.Image:
    height, width = pixels_uint8.shape
    return digits_pb2.Image(
        raw=digits_pb2.RawPixels(pixels=pixels_uint8.tobytes(), height=height, width=width, already_mnist=already_mnist)
    )


def png(pixels_uint8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels_uint8).save(buffer, format="PNG")
    return buffer.getvalue()


def v2_pixels_request(model: str, pixels: np.ndarray, raw: bool = True, **fields) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=list(pixels.shape))
    if raw:
        return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[pixels.tobytes()], **fields)
    tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], **fields)


def as_pixels(images_uint8: np.ndarray) -> np.ndarray:
    return (images_uint8.astype(np.float32) / np.float32(255))[:, None]


def full_probabilities(prediction: digits_pb2.Prediction, classes: int = 10) -> np.ndarray:
    probabilities = np.full(classes, np.nan, dtype=np.float32)
    for candidate in prediction.top_k:
        probabilities[candidate.digit] = candidate.probability
    return probabilities


@pytest.fixture(scope="module")
def digits(channel):
    return digits_pb2_grpc.DigitClassifierStub(channel)


@pytest.fixture(scope="module")
def v2(channel):
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def offline(model_dir, mnist_test_set):
    images, _ = mnist_test_set
    return offline_probabilities(model_dir / "centroid.onnx", images)


def batcher_stats(server, model="centroid"):
    return server.server.runners[model].batcher.stats


# Agreement with offline ONNX Runtime


def test_digits_api_agrees_with_offline_onnx_runtime_on_mnist(digits, mnist_test_set, offline):
    images, labels = mnist_test_set
    predictions = []
    for start in range(0, len(images), CHUNK):
        request = digits_pb2.ClassifyRequest(
            model="centroid", top_k=10, images=[raw_image(image) for image in images[start : start + CHUNK]]
        )
        response = digits.Classify(request, timeout=30)
        assert response.model == "centroid"
        predictions.extend(response.predictions)
    assert len(predictions) == len(images) >= 1000
    served = np.array([p.digit for p in predictions])
    np.testing.assert_array_equal(served, offline.argmax(axis=1))
    served_probabilities = np.stack([full_probabilities(p) for p in predictions])
    np.testing.assert_allclose(served_probabilities, offline, rtol=1e-5, atol=1e-6)
    offline_accuracy = float((offline.argmax(axis=1) == labels).mean())
    assert float((served == labels).mean()) == offline_accuracy
    assert offline_accuracy > 0.7, "the test classifier should actually read digits"
    first = predictions[0]
    assert first.label == str(first.digit) and first.probability == first.top_k[0].probability
    assert [c.probability for c in first.top_k] == sorted((c.probability for c in first.top_k), reverse=True)


def test_v2_api_agrees_with_offline_onnx_runtime_on_mnist(v2, mnist_test_set, offline):
    images, labels = mnist_test_set
    probabilities = []
    for start in range(0, len(images), CHUNK):
        response = v2.ModelInfer(v2_pixels_request("centroid", as_pixels(images[start : start + CHUNK]), id=f"c{start}"), timeout=30)
        assert response.id == f"c{start}" and response.model_name == "centroid" and response.model_version == "1"
        names = [output.name for output in response.outputs]
        assert names == ["logits", "probabilities"]
        output = response.outputs[1]
        assert output.datatype == "FP32" and list(output.shape) == [min(CHUNK, len(images) - start), 10]
        probabilities.append(np.frombuffer(response.raw_output_contents[1], "<f4").reshape(-1, 10))
    served = np.concatenate(probabilities)
    np.testing.assert_array_equal(served.argmax(axis=1), offline.argmax(axis=1))
    np.testing.assert_allclose(served, offline, rtol=1e-5, atol=1e-6)
    assert float((served.argmax(axis=1) == labels).mean()) == float((offline.argmax(axis=1) == labels).mean())


def test_v2_typed_contents_are_answered_in_typed_contents(v2, mnist_test_set, offline):
    images, _ = mnist_test_set
    request = v2_pixels_request("centroid", as_pixels(images[:40]), raw=False, outputs=[{"name": "probabilities"}])
    response = v2.ModelInfer(request, timeout=30)
    assert len(response.raw_output_contents) == 0
    (output,) = response.outputs
    assert output.name == "probabilities"
    served = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(40, 10)
    np.testing.assert_allclose(served, offline[:40], rtol=1e-5, atol=1e-6)


def test_padded_model_gets_the_same_padding_as_offline(digits, model_dir, mnist_test_set):
    images, _ = mnist_test_set
    offline32 = offline_probabilities(model_dir / "padded32.onnx", images[:150], input_size=32)
    response = digits.Classify(
        digits_pb2.ClassifyRequest(model="padded32", top_k=10, images=[raw_image(i) for i in images[:150]]), timeout=30
    )
    served = np.stack([full_probabilities(p) for p in response.predictions])
    np.testing.assert_allclose(served, offline32, rtol=1e-5, atol=1e-6)


def test_encoded_images_are_classified(digits, mnist_test_set, offline):
    images, _ = mnist_test_set
    # MNIST digits as black ink on white paper, in PNG: the server inverts, crops and centres them.
    request = digits_pb2.ClassifyRequest(model="centroid", images=[digits_pb2.Image(encoded=png(255 - i)) for i in images[:30]])
    response = digits.Classify(request, timeout=30)
    served = np.array([p.digit for p in response.predictions])
    assert (served == offline[:30].argmax(axis=1)).mean() >= 0.8  # re-centring moves a few pixels, not the answer


def test_the_default_model_is_the_first_classifier(digits, mnist_test_set):
    images, _ = mnist_test_set
    response = digits.Classify(digits_pb2.ClassifyRequest(images=[raw_image(images[0])]), timeout=10)
    assert response.model == "centroid"
    assert len(response.predictions[0].top_k) == 3  # the default top_k


def test_top_k_is_capped_at_the_number_of_labels(digits, mnist_test_set):
    images, _ = mnist_test_set
    response = digits.Classify(digits_pb2.ClassifyRequest(images=[raw_image(images[0])], top_k=1000), timeout=10)
    assert len(response.predictions[0].top_k) == 10


def test_stream_answers_in_order_and_a_bad_image_does_not_end_it(digits, mnist_test_set, offline):
    images, _ = mnist_test_set

    def requests():
        for index in range(60):
            image = digits_pb2.Image(encoded=b"\x89PNG broken") if index == 17 else raw_image(images[index])
            yield digits_pb2.ClassifyStreamRequest(id=f"img-{index}", model="centroid", image=image)

    answers = list(digits.ClassifyStream(requests(), timeout=30))
    assert [a.id for a in answers] == [f"img-{i}" for i in range(60)]
    bad = answers[17]
    assert bad.WhichOneof("result") == "error" and bad.error.code == "INVALID_ARGUMENT"
    assert "PNG" in bad.error.message
    good = [i for i in range(60) if i != 17]
    assert [answers[i].prediction.digit for i in good] == offline[good].argmax(axis=1).tolist()


# Verdicts

VERDICTS = {digits_pb2.VERDICT_DIGIT: Verdict.DIGIT, digits_pb2.VERDICT_UNSURE: Verdict.UNSURE,
            digits_pb2.VERDICT_NO_DIGIT: Verdict.NO_DIGIT}
DIGIT_LABELS = [str(digit) for digit in range(10)]
VERDICT_IMAGES = 200


def verdict_of(prediction: digits_pb2.Prediction) -> ImageVerdict:
    return ImageVerdict(VERDICTS[prediction.verdict], prediction.reason, tuple(prediction.candidates))


def classify(digits, images, model: str, **fields) -> list[digits_pb2.Prediction]:
    request = digits_pb2.ClassifyRequest(model=model, top_k=10, images=[raw_image(image) for image in images], **fields)
    return list(digits.Classify(request, timeout=30).predictions)


@pytest.mark.parametrize("model, thresholds", [("centroid", DEFAULT_THRESHOLDS), ("judged", JUDGED_THRESHOLDS)])
def test_verdicts_are_judged_with_the_cards_thresholds_or_the_defaults(digits, mnist_test_set, model, thresholds):
    images, _ = mnist_test_set
    predictions = classify(digits, images[:VERDICT_IMAGES], model)
    served = [verdict_of(p) for p in predictions]
    probabilities = np.stack([full_probabilities(p) for p in predictions])
    assert served == judge(probabilities, np.zeros(len(images[:VERDICT_IMAGES]), bool), thresholds, DIGIT_LABELS)
    if model == "judged":  # the card's strict thresholds leave some test digits unsure, some without a digit
        assert {v.verdict for v in served} == set(Verdict)


def test_the_same_probabilities_get_the_verdicts_of_each_models_card(digits, mnist_test_set):
    images, _ = mnist_test_set
    by_default, by_card = (classify(digits, images[:VERDICT_IMAGES], model) for model in ("centroid", "judged"))
    assert [p.top_k for p in by_default] == [p.top_k for p in by_card]
    assert [p.verdict for p in by_default] != [p.verdict for p in by_card]


@pytest.mark.parametrize("model", ["centroid", "judged"])
def test_a_blank_image_has_no_digit_whatever_the_model_says(digits, model):
    white_paper = digits_pb2.Image(encoded=png(np.full((120, 120), 255, np.uint8)))
    request = digits_pb2.ClassifyRequest(model=model, images=[raw_image(np.zeros((28, 28), np.uint8)), white_paper])
    for prediction in digits.Classify(request, timeout=10).predictions:
        assert (prediction.verdict, list(prediction.candidates)) == (digits_pb2.VERDICT_NO_DIGIT, [])
        assert prediction.reason.startswith("no ink")
        assert prediction.label and prediction.probability > 0  # the model's own answer is still there


def test_a_callers_min_confidence_changes_the_verdict(digits, mnist_test_set):
    images, _ = mnist_test_set
    sample = images[:VERDICT_IMAGES]
    # Every digit the defaults accept below certainty is unsure between its best two with min_confidence 0.999.
    by_default = classify(digits, sample, "centroid")
    strict = classify(digits, sample, "centroid", min_confidence=0.999)
    doubted = [i for i, p in enumerate(by_default) if p.verdict == digits_pb2.VERDICT_DIGIT and p.probability < 0.999]
    assert doubted
    for index in doubted:
        assert strict[index].verdict == digits_pb2.VERDICT_UNSURE
        assert list(strict[index].candidates) == [c.digit for c in by_default[index].top_k[:2]]
        assert strict[index].reason.startswith("not sure")
    # And with 0, every digit the card refused is accepted.
    refused = [i for i, p in enumerate(classify(digits, sample, "judged")) if p.verdict != digits_pb2.VERDICT_DIGIT]
    lenient = classify(digits, sample, "judged", min_confidence=0.0)
    assert refused and all(lenient[i].verdict == digits_pb2.VERDICT_DIGIT for i in refused)


def test_stream_answers_carry_verdicts_and_a_bad_min_confidence_refuses_only_its_image(digits, mnist_test_set):
    images, _ = mnist_test_set
    asked = [None, 1.0, 7.0, None]
    pictures = [images[0], images[0], images[1], np.zeros((28, 28), np.uint8)]

    def requests():
        for index, (picture, min_confidence) in enumerate(zip(pictures, asked)):
            yield digits_pb2.ClassifyStreamRequest(id=str(index), model="centroid", image=raw_image(picture),
                                                   min_confidence=min_confidence)

    answers = list(digits.ClassifyStream(requests(), timeout=30))
    (unary,) = classify(digits, images[:1], "centroid")
    assert verdict_of(answers[0].prediction) == verdict_of(unary)
    assert answers[1].prediction.verdict == digits_pb2.VERDICT_UNSURE
    assert answers[2].error.code == "INVALID_ARGUMENT" and "min_confidence" in answers[2].error.message
    assert answers[3].prediction.verdict == digits_pb2.VERDICT_NO_DIGIT


# Concurrency and batching


def test_many_concurrent_clients_get_their_own_answers_and_batches_form(server, digits, v2, mnist_test_set, offline):
    images, _ = mnist_test_set
    before = batcher_stats(server)
    batches_before, requests_before = before.batches, before.requests_inferred
    count = 400
    calls = []
    for index in range(count):
        if index % 2:
            request = v2_pixels_request("centroid", as_pixels(images[index : index + 1]), id=str(index))
            calls.append(("v2", index, v2.ModelInfer.future(request, timeout=60)))
        else:
            request = digits_pb2.ClassifyRequest(model="centroid", images=[raw_image(images[index])], top_k=1)
            calls.append(("digits", index, digits.Classify.future(request, timeout=60)))
    for api, index, future in calls:
        response = future.result()
        if api == "v2":
            assert response.id == str(index)
            answer = int(np.frombuffer(response.raw_output_contents[1], "<f4").argmax())
        else:
            answer = response.predictions[0].digit
        assert answer == int(offline[index].argmax()), f"call {index} ({api}) got another caller's answer"
    stats = batcher_stats(server)
    requests = stats.requests_inferred - requests_before
    batches = stats.batches - batches_before
    assert requests == count
    assert batches < count / 2, f"{count} concurrent requests ran in {batches} batches: batching did not happen"
    assert stats.largest_batch > 1


def test_metrics_endpoint_reports_requests_batches_and_queue(server, digits, mnist_test_set):
    images, _ = mnist_test_set
    digits.Classify(digits_pb2.ClassifyRequest(model="centroid", images=[raw_image(images[0])]), timeout=10)
    with pytest.raises(grpc.RpcError):
        digits.Classify(digits_pb2.ClassifyRequest(model="no-such-model", images=[raw_image(images[0])]), timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'serve_requests_total{code="OK",method="Classify",protocol="grpc",service="digits.v1.DigitClassifier"}' in text
    assert 'serve_requests_total{code="NOT_FOUND",method="Classify",protocol="grpc",service="digits.v1.DigitClassifier"}' in text
    assert 'serve_request_duration_seconds_bucket{le="0.01",method="Classify",protocol="grpc",service="digits.v1.DigitClassifier"}' in text
    assert 'serve_batch_size_bucket{le="1.0",model="centroid"}' in text
    assert 'serve_queue_images{model="centroid"}' in text


# Bad input: the right status, a useful detail, and the server keeps serving


def _digits_call(**fields):
    return lambda stubs: stubs[0].Classify(digits_pb2.ClassifyRequest(**fields), timeout=10)


def _v2_call(request):
    return lambda stubs: stubs[1].ModelInfer(request, timeout=10)


def _v2_tensor(name="pixels", datatype="FP32", shape=(1, 1, 28, 28), **fields):
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape), **fields)


ONE_PIXELS = np.full((1, 1, 28, 28), 0.5, np.float32)
NAN_PIXELS = ONE_PIXELS.copy()
NAN_PIXELS[0, 0, 5, 5] = np.nan
BOMB = png(np.zeros((1100, 1100), np.uint8))  # 1.2 Mpixel in a few KiB: over the 1 Mpixel test limit
NOISE = np.random.default_rng(0).integers(0, 256, (600, 600), dtype=np.uint8)
BIG_PNG = png(NOISE)  # incompressible: over the 256 KiB test limit


BAD_INPUTS = [
    ("corrupt image", _digits_call(images=[digits_pb2.Image(encoded=b"\x89PNG\r\n\x1a\nnot really")]), "INVALID_ARGUMENT", "PNG"),
    ("garbage bytes", _digits_call(images=[digits_pb2.Image(encoded=b"hello")]), "INVALID_ARGUMENT", "not a PNG, JPEG, BMP, GIF, TIFF or WebP"),
    ("empty image", _digits_call(images=[digits_pb2.Image(encoded=b"")]), "INVALID_ARGUMENT", "empty"),
    ("image with no data", _digits_call(images=[digits_pb2.Image()]), "INVALID_ARGUMENT", "neither `encoded` bytes nor `raw`"),
    ("too many bytes", _digits_call(images=[digits_pb2.Image(encoded=BIG_PNG)]), "RESOURCE_EXHAUSTED", "bytes; the limit is 262144"),
    ("decompression bomb", _digits_call(images=[digits_pb2.Image(encoded=BOMB)]), "RESOURCE_EXHAUSTED", "1100x1100 = 1210000 pixels"),
    ("too many raw pixels", _digits_call(images=[raw_image(np.zeros((1100, 1000), np.uint8), False)]), "RESOURCE_EXHAUSTED", "pixels; the limit is"),
    ("too many images", _digits_call(images=[raw_image(np.zeros((28, 28), np.uint8))] * 301), "RESOURCE_EXHAUSTED", "301 images; the limit is 300"),
    ("no images", _digits_call(images=[]), "INVALID_ARGUMENT", "no images"),
    ("min_confidence over 1", _digits_call(images=[raw_image(np.zeros((28, 28), np.uint8))], min_confidence=1.5), "INVALID_ARGUMENT", "min_confidence must be a probability between 0 and 1, got 1.5"),
    ("negative min_confidence", _digits_call(images=[raw_image(np.zeros((28, 28), np.uint8))], min_confidence=-0.25), "INVALID_ARGUMENT", "min_confidence must be a probability between 0 and 1"),
    ("NaN min_confidence", _digits_call(images=[raw_image(np.zeros((28, 28), np.uint8))], min_confidence=float("nan")), "INVALID_ARGUMENT", "min_confidence must be a probability between 0 and 1"),
    ("wrong raw pixel count", _digits_call(images=[digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=b"\0" * 700, height=28, width=28))]), "INVALID_ARGUMENT", "must be 784 bytes"),
    ("zero raw height", _digits_call(images=[digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=b"", height=0, width=28))]), "INVALID_ARGUMENT", "height must be a positive integer"),
    ("already-mnist but not 28x28", _digits_call(images=[raw_image(np.zeros((20, 20), np.uint8))]), "INVALID_ARGUMENT", "must be 28x28"),
    ("unknown model", _digits_call(model="resnet", images=[raw_image(np.zeros((28, 28), np.uint8))]), "NOT_FOUND", "unknown model 'resnet'; this server has"),
    ("not a classifier", _digits_call(model="thirdparty", images=[raw_image(np.zeros((28, 28), np.uint8))]), "INVALID_ARGUMENT", "KServe v2 API"),
    ("v2 unknown model", _v2_call(pb.ModelInferRequest(model_name="resnet", inputs=[_v2_tensor()], raw_input_contents=[ONE_PIXELS.tobytes()])), "NOT_FOUND", "unknown model 'resnet'"),
    ("v2 unknown version", _v2_call(pb.ModelInferRequest(model_name="centroid", model_version="7", inputs=[_v2_tensor()], raw_input_contents=[ONE_PIXELS.tobytes()])), "NOT_FOUND", "no version '7'"),
    ("v2 wrong datatype", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(datatype="INT64")], raw_input_contents=[b"\0" * 6272])), "INVALID_ARGUMENT", "datatype INT64; the model expects FP32"),
    ("v2 wrong rank", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(shape=(1, 784))], raw_input_contents=[ONE_PIXELS.tobytes()])), "INVALID_ARGUMENT", "the model expects 4 dimensions"),
    ("v2 wrong image size", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(shape=(1, 1, 32, 32))], raw_input_contents=[b"\0" * 4096])), "INVALID_ARGUMENT", "axis 2 must be 28, got 32"),
    ("v2 wrong byte count", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor()], raw_input_contents=[b"\0" * 100])), "INVALID_ARGUMENT", "holds 100 bytes; shape [1, 1, 28, 28] of FP32 needs 3136"),
    ("v2 wrong contents count", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(contents=pb.InferTensorContents(fp32_contents=[0.0] * 10))])), "INVALID_ARGUMENT", "holds 10 values"),
    ("v2 NaN", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor()], raw_input_contents=[NAN_PIXELS.tobytes()])), "INVALID_ARGUMENT", "NaN or infinite"),
    ("v2 pixels not scaled", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor()], raw_input_contents=[(ONE_PIXELS * 255).tobytes()])), "INVALID_ARGUMENT", "divide 8-bit pixels by 255"),
    ("v2 unknown input", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(name="image")], raw_input_contents=[ONE_PIXELS.tobytes()])), "INVALID_ARGUMENT", "has no input 'image'; its inputs are ['pixels']"),
    ("v2 missing input", _v2_call(pb.ModelInferRequest(model_name="adder", inputs=[_v2_tensor(name="a", datatype="INT32", shape=(1, 2), contents=pb.InferTensorContents(int_contents=[1, 2]))])), "INVALID_ARGUMENT", "needs inputs ['b']"),
    ("v2 raw count mismatch", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor()], raw_input_contents=[ONE_PIXELS.tobytes()] * 2)), "INVALID_ARGUMENT", "1 inputs but 2 raw_input_contents"),
    ("v2 raw and contents", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(contents=pb.InferTensorContents(fp32_contents=[0.5] * 784))], raw_input_contents=[ONE_PIXELS.tobytes()])), "INVALID_ARGUMENT", "both `contents` and raw_input_contents"),
    ("v2 unknown output", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor()], raw_input_contents=[ONE_PIXELS.tobytes()], outputs=[{"name": "softmax"}])), "INVALID_ARGUMENT", "has no output 'softmax'"),
    ("v2 batch too large", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor(shape=(301, 1, 28, 28))], raw_input_contents=[b"\0" * (301 * 3136)])), "RESOURCE_EXHAUSTED", "batch of 301; the limit is 300"),
    ("message too large", _v2_call(pb.ModelInferRequest(model_name="centroid", inputs=[_v2_tensor()], raw_input_contents=[b"\0" * (TEST_MAX_MESSAGE_BYTES + 10)])), "RESOURCE_EXHAUSTED", "larger than max"),
]


@pytest.mark.parametrize("call, code, detail", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(digits, v2, mnist_test_set, call, code, detail):
    with pytest.raises(grpc.RpcError) as failure:
        call((digits, v2))
    assert failure.value.code() == grpc.StatusCode[code], failure.value.details()
    assert detail in failure.value.details()
    images, _ = mnist_test_set
    response = digits.Classify(digits_pb2.ClassifyRequest(model="centroid", images=[raw_image(images[0])]), timeout=10)
    assert len(response.predictions) == 1


# Deadlines


def test_a_tiny_deadline_gets_deadline_exceeded(digits, mnist_test_set):
    images, _ = mnist_test_set
    # Work that cannot fit the deadline on any machine: 100 enlarged PNGs to decode and bring to MNIST
    # format (milliseconds each) against 5 ms. (100 raw MNIST images sometimes fit 0.5 ms.)
    enlarged = [np.kron(i, np.ones((8, 8), np.uint8)) for i in images[:100]]
    request = digits_pb2.ClassifyRequest(model="centroid", images=[digits_pb2.Image(encoded=png(i)) for i in enlarged])
    with pytest.raises(grpc.RpcError) as failure:
        digits.Classify(request, timeout=0.005)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_requests_whose_deadline_passes_in_the_queue_are_not_inferred(model_dir, mnist_test_set):
    images, _ = mnist_test_set
    # Batches wait up to 1 s to fill: a 0.1 s deadline passes while the request is queued.
    config = ServerConfig(
        model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"),
        batching=BatchingOptions(max_batch_size=256, max_delay_ms=1000),
    )
    with BackgroundServer(config) as slow, grpc.insecure_channel(slow.target) as channel:
        stub = digits_pb2_grpc.DigitClassifierStub(channel)
        request = digits_pb2.ClassifyRequest(images=[raw_image(images[0])])
        with pytest.raises(grpc.RpcError) as failure:
            stub.Classify(request, timeout=0.1)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stats = slow.server.runners["centroid"].batcher.stats
        wait_until(lambda: stats.dropped_cancelled + stats.dropped_expired > 0)
        assert stats.dropped_cancelled + stats.dropped_expired == 1
        assert stats.images_inferred == 0, "a request whose caller had given up was inferred"
        # A patient caller still gets its answer from the same server.
        assert len(stub.Classify(request, timeout=10).predictions) == 1


# Models, metadata, health, reflection


def test_list_models_reports_every_model_with_its_provider(digits):
    models = {m.name: m for m in digits.ListModels(digits_pb2.ListModelsRequest(), timeout=10).models}
    assert set(models) == {"centroid", "judged", "padded32", "thirdparty", "adder"}
    centroid = models["centroid"]
    assert centroid.task == "classification" and centroid.classifies_images
    assert centroid.labels == [str(i) for i in range(10)] and list(centroid.input_size) == [28, 28]
    assert centroid.execution_provider == "CPUExecutionProvider" and centroid.dataset == "mnist"
    assert [(t.name, t.datatype, list(t.shape)) for t in centroid.inputs] == [("pixels", "FP32", [-1, 1, 28, 28])]
    assert len(centroid.file_sha256) == 64 and centroid.max_batch_size == 256
    third = models["thirdparty"]
    assert third.task == "unknown" and not third.classifies_images
    assert models["adder"].max_batch_size == 1  # two inputs: no batching


def test_model_metadata_of_both_apis(digits, v2):
    assert digits.GetModelMetadata(digits_pb2.GetModelMetadataRequest(), timeout=10).name == "centroid"
    response, call = v2.ModelMetadata.with_call(pb.ModelMetadataRequest(name="thirdparty"), timeout=10)
    assert response.platform == "onnxruntime_onnx" and list(response.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in response.inputs] == [("input_1", "FP32", [-1, 4])]
    assert [(t.name, t.datatype) for t in response.outputs] == [("scores", "FP32"), ("label", "INT64")]
    assert ("x-execution-provider", "CPUExecutionProvider") in call.initial_metadata()
    with pytest.raises(grpc.RpcError) as failure:
        v2.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_v2_liveness_readiness_and_server_metadata(v2):
    assert v2.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert v2.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert v2.ModelReady(pb.ModelReadyRequest(name="centroid"), timeout=10).ready
    assert not v2.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=10).ready
    metadata = v2.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert metadata.name == "digit-zoo" and metadata.version


def test_third_party_model_is_served_through_v2_with_its_own_names(v2):
    x = np.array([[1, 0, 0, 0], [0, 0, 0, 2], [1, 1, 1, 1]], np.float32)
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
    request = pb.ModelInferRequest(
        model_name="thirdparty",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input_1", datatype="FP32", shape=[3, 4])],
        raw_input_contents=[x.tobytes()],
    )
    response = v2.ModelInfer(request, timeout=10)
    scores = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 3)
    labels = np.frombuffer(response.raw_output_contents[1], "<i8")
    np.testing.assert_allclose(scores, x @ weights, rtol=1e-6)
    assert labels.tolist() == (x @ weights).argmax(axis=1).tolist()
    assert response.outputs[1].datatype == "INT64" and list(response.outputs[1].shape) == [3]
    request.outputs.add(name="label")
    only_label = v2.ModelInfer(request, timeout=10)
    assert [o.name for o in only_label.outputs] == ["label"] and len(only_label.raw_output_contents) == 1


def test_an_unbatched_two_input_model_through_v2_contents(v2):
    request = pb.ModelInferRequest(
        model_name="adder",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="a", datatype="INT32", shape=[2, 2], contents=pb.InferTensorContents(int_contents=[1, 2, 3, 4])),
            pb.ModelInferRequest.InferInputTensor(name="b", datatype="INT32", shape=[2, 2], contents=pb.InferTensorContents(int_contents=[10, 20, 30, 40])),
        ],
    )
    (output,) = v2.ModelInfer(request, timeout=10).outputs
    assert output.name == "sum" and list(output.contents.int_contents) == [11, 22, 33, 44]


def test_health_reports_serving_overall_per_service_and_per_model(channel):
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "digits.v1.DigitClassifier", "inference.GRPCInferenceService", "centroid", "thirdparty"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == serving, service
    with pytest.raises(grpc.RpcError) as failure:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_service_and_describes_them(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="digits.v1.DigitClassifier"),
    ]
    listing, inference_file, digits_file = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))
    assert {s.name for s in listing.list_services_response.service} >= set(SERVICE_NAMES)
    assert inference_file.file_descriptor_response.file_descriptor_proto
    assert digits_file.file_descriptor_response.file_descriptor_proto


def test_a_stream_cancelled_midway_leaves_no_work_behind(server, digits, mnist_test_set):
    import asyncio
    import threading

    images, _ = mnist_test_set

    async def task_count() -> int:
        return len(asyncio.all_tasks())

    digits.Classify(digits_pb2.ClassifyRequest(images=[raw_image(images[0])]), timeout=10)  # batcher started
    before = server.call(task_count())
    hold = threading.Event()

    def requests():
        for index in range(5):
            yield digits_pb2.ClassifyStreamRequest(id=str(index), image=raw_image(images[index]))
        hold.wait(10)  # the client neither sends more nor closes: it goes away instead

    call = digits.ClassifyStream(requests(), timeout=30)
    answers = [next(call) for _ in range(2)]
    assert [a.id for a in answers] == ["0", "1"]
    call.cancel()
    hold.set()
    wait_until(lambda: server.call(task_count()) <= before)
    assert server.call(task_count()) <= before, "the cancelled stream left tasks running on the server"
    response = digits.Classify(digits_pb2.ClassifyRequest(images=[raw_image(images[0])]), timeout=10)
    assert len(response.predictions) == 1
