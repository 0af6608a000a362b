"""KServe v2 over HTTP/REST against a real server: Triton's `tritonclient.http` both ways (JSON and
binary tensors), answers identical to gRPC's ModelInfer, every malformed body answered with the right
status and a detail that says what to fix, tokens, TLS, metrics, deadlines and a graceful drain."""
from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from certificates import issue, make_ca
from serve_testing import TEST_MAX_MESSAGE_BYTES, offline_probabilities, wait_until

from contracts.sessions import RuntimeOptions
from serve.api.http_tensors import INFER_HEADER_LENGTH
from serve.core.batching import BatchingOptions
from serve.server import BackgroundServer, ServerConfig

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

SERVICE = "inference.GRPCInferenceService"
TOKEN = "http-s3cret-token-0123456789"
PIXELS_SHAPE = [1, 1, 28, 28]


class Answer:
    """An HTTP answer: status, headers, body; `json` for JSON bodies, `error` for the detail."""

    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> dict:
        length = self.headers.get(INFER_HEADER_LENGTH)
        return json.loads(self.body[: int(length)] if length is not None else self.body)

    @property
    def error(self) -> str:
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers
        return self.json["error"]


def send(url: str, body: bytes | None = None, headers: dict | None = None, method: str | None = None,
         context: ssl.SSLContext | None = None, timeout: float = 30) -> Answer:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def infer_url(server, model: str = "centroid", version: str | None = None) -> str:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return server.http_url + path


def json_body(document: dict) -> bytes:
    return json.dumps(document).encode()


def binary_body(document: dict, *tensors: bytes) -> tuple[bytes, dict]:
    """A binary-extension body and its header: the JSON part, then the tensors' bytes."""
    header = json.dumps(document).encode()
    return header + b"".join(tensors), {INFER_HEADER_LENGTH: str(len(header))}


def pixels_input(pixels: np.ndarray, **fields) -> dict:
    return {"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32", **fields}


def as_pixels(images_uint8: np.ndarray) -> np.ndarray:
    return (images_uint8.astype(np.float32) / np.float32(255))[:, None]


def requests_counted(server, method: str, code: str) -> float:
    labels = {"protocol": "http", "service": SERVICE, "method": method, "code": code}
    return server.server.metrics.registry.get_sample_value("serve_requests_total", labels) or 0.0


@pytest.fixture(scope="module")
def triton_http(server):
    client = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def triton_grpc(server):
    client = grpcclient.InferenceServerClient(url=server.target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def pixels(mnist_test_set) -> np.ndarray:
    images, _ = mnist_test_set
    return as_pixels(images[:250])


# Triton's client, both ways


def test_health_and_metadata_through_tritonclient_http(triton_http):
    assert triton_http.is_server_live() and triton_http.is_server_ready()
    assert triton_http.is_model_ready("centroid") and triton_http.is_model_ready("centroid", "1")
    assert not triton_http.is_model_ready("nope") and not triton_http.is_model_ready("centroid", "7")
    server_metadata = triton_http.get_server_metadata()
    assert server_metadata["name"] == "digit-zoo" and "binary_tensor_data" in server_metadata["extensions"]
    metadata = triton_http.get_model_metadata("centroid")
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert [output["name"] for output in metadata["outputs"]] == ["logits", "probabilities"]
    with pytest.raises(InferenceServerException) as failure:
        triton_http.get_model_metadata("nope")
    assert failure.value.status() == "404" and "unknown model 'nope'" in failure.value.message()


def http_probabilities(client, pixels: np.ndarray, binary_inputs: bool, binary_outputs: bool, request_id: str):
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary_inputs)
    wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=binary_outputs)]
    result = client.infer("centroid", [tensor], outputs=wanted, request_id=request_id)
    assert result.get_response()["id"] == request_id and result.get_response()["model_version"] == "1"
    assert result.as_numpy("logits") is None  # only the requested output came back
    output = result.get_output("probabilities")
    assert ("data" in output) is not binary_outputs and ("binary_data_size" in output.get("parameters", {})) is binary_outputs
    return result.as_numpy("probabilities")


@pytest.mark.parametrize("binary_inputs", [True, False], ids=["binary inputs", "JSON inputs"])
@pytest.mark.parametrize("binary_outputs", [True, False], ids=["binary outputs", "JSON outputs"])
def test_tritonclient_http_answers_exactly_as_grpc_model_infer(triton_http, triton_grpc, pixels, model_dir,
                                                               binary_inputs, binary_outputs):
    served = http_probabilities(triton_http, pixels, binary_inputs, binary_outputs, request_id="h1")
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    by_grpc = triton_grpc.infer("centroid", [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    assert served.dtype == np.float32 and served.shape == (250, 10)
    np.testing.assert_array_equal(served, by_grpc.as_numpy("probabilities"))
    offline = offline_probabilities(model_dir / "centroid.onnx", (pixels[:, 0] * 255).round().astype(np.uint8))
    np.testing.assert_allclose(served, offline, rtol=1e-5, atol=1e-6)


def test_without_requested_outputs_every_output_comes_back_binary(triton_http, pixels):
    """tritonclient asks for no output by name and sets `binary_data_output` instead."""
    tensor = httpclient.InferInput("pixels", [4, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(pixels[:4])
    result = triton_http.infer("centroid", [tensor])
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["logits", "probabilities"]
    assert [o["parameters"]["binary_data_size"] for o in outputs] == [4 * 10 * 4, 4 * 10 * 4]
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1, rtol=1e-5)


def test_a_third_party_model_and_an_unbatched_two_input_model(triton_http):
    x = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.float32)
    tensor = httpclient.InferInput("input_1", [2, 4], "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    result = triton_http.infer("thirdparty", [tensor], outputs=[httpclient.InferRequestedOutput("label", binary_data=False),
                                                                httpclient.InferRequestedOutput("scores")])
    np.testing.assert_allclose(result.as_numpy("scores"), x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), rtol=1e-6)
    assert result.get_output("label")["data"] == [2, 2] and result.get_output("label")["datatype"] == "INT64"
    a, b = np.array([[1, 2], [3, 4]], np.int32), np.array([[10, 20], [30, -40]], np.int32)
    inputs = [httpclient.InferInput("a", [2, 2], "INT32"), httpclient.InferInput("b", [2, 2], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(b, binary_data=False)  # one binary, one JSON, in one request
    assert triton_http.infer("adder", inputs).as_numpy("sum").tolist() == (a + b).tolist()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_read(triton_http, pixels, algorithm):
    tensor = httpclient.InferInput("pixels", [8, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(pixels[:8])
    compressed = triton_http.infer("centroid", [tensor], request_compression_algorithm=algorithm,
                                   response_compression_algorithm=algorithm)
    plain = triton_http.infer("centroid", [tensor])
    np.testing.assert_array_equal(compressed.as_numpy("probabilities"), plain.as_numpy("probabilities"))


# Plain HTTP: what curl sends


def test_a_json_request_with_nested_data_gets_a_json_answer(server, pixels):
    document = {"id": "curl-1", "inputs": [pixels_input(pixels[:2], data=pixels[:2].tolist())],
                "outputs": [{"name": "probabilities"}]}
    answer = send(infer_url(server), json_body(document), {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["Content-Type"].startswith("application/json") and INFER_HEADER_LENGTH not in answer.headers
    assert answer.headers["x-execution-provider"] == "CPUExecutionProvider"
    result = answer.json
    assert {key: result[key] for key in ("model_name", "model_version", "id")} == {
        "model_name": "centroid", "model_version": "1", "id": "curl-1"}
    (output,) = result["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [2, 10]
    probabilities = np.array(output["data"], np.float32).reshape(2, 10)
    flat = send(infer_url(server, version="1"), json_body({"inputs": [pixels_input(pixels[:2], data=pixels[:2].ravel().tolist())]}))
    assert flat.status == 200 and flat.json["id"] == ""
    np.testing.assert_array_equal(np.array(flat.json["outputs"][1]["data"], np.float32).reshape(2, 10), probabilities)


def test_binary_outputs_follow_the_json_part_with_its_length_in_a_header(server, pixels):
    batch = pixels[:3]
    body, headers = binary_body({"inputs": [pixels_input(batch, parameters={"binary_data_size": batch.nbytes})],
                                 "outputs": [{"name": "logits", "parameters": {"binary_data": False}}, {"name": "probabilities"}],
                                 "parameters": {"binary_data_output": True}}, batch.tobytes())
    answer = send(infer_url(server), body, headers)
    assert answer.status == 200, answer.body[:300]
    assert answer.headers["Content-Type"] == "application/octet-stream"
    header_length = int(answer.headers[INFER_HEADER_LENGTH])
    logits, probabilities = answer.json["outputs"]
    assert "data" in logits and "parameters" not in logits, "binary_data false overrides binary_data_output"
    assert probabilities["parameters"] == {"binary_data_size": 3 * 10 * 4} and "data" not in probabilities
    assert len(answer.body) == header_length + 3 * 10 * 4
    binary = np.frombuffer(answer.body[header_length:], "<f4").reshape(3, 10)
    exp_logits = np.exp(np.array(logits["data"]).reshape(3, 10))
    np.testing.assert_allclose(binary, exp_logits / exp_logits.sum(axis=1, keepdims=True), rtol=1e-5)


def test_the_execution_provider_header_on_metadata_and_inference(server, pixels):
    assert send(server.http_url + "/v2/models/thirdparty").headers["x-execution-provider"] == "CPUExecutionProvider"
    answer = send(infer_url(server), json_body({"inputs": [pixels_input(pixels[:1], data=pixels[:1].ravel().tolist())]}))
    assert answer.status == 200 and answer.headers["x-execution-provider"] == "CPUExecutionProvider"


# Bad input: the right status, a detail that says what to fix, and the server keeps serving

ONE = np.zeros((1, 1, 28, 28), np.float32)
ONE_DATA = ONE.ravel().tolist()
ONE_BYTES = ONE.tobytes()


def _json(document) -> tuple[bytes, dict]:
    return json.dumps(document).encode(), {}


def _one_input(**fields) -> tuple[bytes, dict]:
    entry = {"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32", "data": ONE_DATA}
    entry.update(fields)
    return _json({"inputs": [{key: value for key, value in entry.items() if value is not None}]})


def _binary(size: int, extra: bytes = b"", header_delta: int = 0, **fields) -> tuple[bytes, dict]:
    entry = {"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32", "parameters": {"binary_data_size": size}, **fields}
    body, headers = binary_body({"inputs": [entry]}, ONE_BYTES[: min(size, len(ONE_BYTES))] + extra)
    headers[INFER_HEADER_LENGTH] = str(int(headers[INFER_HEADER_LENGTH]) + header_delta)
    return body, headers


BAD_BODIES = {
    "not JSON": ((b"{nope", {}), 400, "not valid JSON"),
    "not UTF-8": ((b'{"inputs": "\xc3\x28"}', {}), 400, "not valid JSON"),
    "a JSON list": (_json([1, 2]), 400, "must be a JSON object"),
    "no inputs": (_json({"outputs": []}), 400, "needs `inputs`, a non-empty list"),
    "an input that is not an object": (_json({"inputs": [3]}), 400, "inputs[0] must be an object"),
    "no input name": (_one_input(name=None), 400, "inputs[0] needs a `name` string"),
    "an unknown input name": (_one_input(name="image"), 400, "has no input 'image'; its inputs are ['pixels']"),
    "no datatype": (_one_input(datatype=None), 400, "needs a `datatype` string"),
    "an unknown datatype": (_one_input(datatype="FLOAT32"), 400, "has datatype FLOAT32; the model expects FP32"),
    "the wrong datatype": (_one_input(datatype="FP64"), 400, "has datatype FP64; the model expects FP32"),
    "a shape that is not a list": (_one_input(shape="1x1x28x28"), 400, "`shape` must be a list of integers"),
    "a shape of floats": (_one_input(shape=[1.0, 1, 28, 28]), 400, "`shape` must be a list of integers"),
    "the wrong rank": (_one_input(shape=[1, 28, 28]), 400, "expects 4 dimensions: [-1, 1, 28, 28]"),
    "the wrong size": (_one_input(shape=[1, 1, 32, 32]), 400, "axis 2 must be 28, got 32"),
    "a negative dimension": (_one_input(shape=[-1, 1, 28, 28]), 400, "negative dimension -1"),
    "no data": (_one_input(data=None), 400, "has no data: send `data`"),
    "data that is not a list": (_one_input(data="0.0"), 400, "`data` must be a list"),
    "too few values": (_one_input(data=[0.0] * 783), 400, "holds 783 values; shape [1, 1, 28, 28] needs 784"),
    "strings": (_one_input(data=["0.5"] * 784), 400, "must hold only numbers, but it holds strings"),
    "nulls": (_one_input(data=[None] * 784), 400, "must hold only numbers"),
    "uneven nesting": (_one_input(data=[[0.0] * 28] * 27 + [[0.0] * 27]), 400, "nested unevenly"),
    "NaN": ((b'{"inputs": [{"name": "pixels", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [NaN'
             + b", 0.0" * 783 + b"]}]}", {}), 400, "holds 1 NaN or infinite values"),
    "8-bit pixels": (_one_input(data=[255.0] * 784), 400, "divide 8-bit pixels by 255"),
    "integers for an INT32 input with a fraction": (
        _json({"inputs": [{"name": "a", "shape": [1, 2], "datatype": "INT32", "data": [1, 2.5]},
                          {"name": "b", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}), 400, "must hold only integers"),
    "an integer beyond INT32": (
        _json({"inputs": [{"name": "a", "shape": [1, 2], "datatype": "INT32", "data": [1, 2**40]},
                          {"name": "b", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}), 400, "must fit INT32"),
    "a missing input": (_json({"inputs": [{"name": "a", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}), 400,
                        "needs inputs ['b'] that the request lacks"),
    "an unknown output": (_json({"inputs": [{"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32", "data": ONE_DATA}],
                                 "outputs": [{"name": "scores"}]}), 400, "has no output 'scores'; its outputs are ['logits', 'probabilities']"),
    "an output without a name": (_json({"inputs": [{"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32",
                                                    "data": ONE_DATA}], "outputs": ["probabilities"]}), 400, "outputs[0] must be an object"),
    "binary_data that is not a boolean": (
        _json({"inputs": [{"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32", "data": ONE_DATA}],
               "outputs": [{"name": "logits", "parameters": {"binary_data": "yes"}}]}), 400, "binary_data must be true or false"),
    "shared memory": (_one_input(parameters={"shared_memory_region": "r0"}), 400, "shared memory is not supported"),
    "a non-string id": (_json({"id": 7, "inputs": []}), 400, "`id` must be a string"),
    "a negative timeout": (_json({"inputs": [{"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32", "data": ONE_DATA}],
                                  "parameters": {"timeout": -5}}), 400, "parameters.timeout must be a whole number of microseconds"),
    "a header length beyond the body": (_binary(len(ONE_BYTES), header_delta=10**6), 400,
                                        f"the {INFER_HEADER_LENGTH} header is"),
    "a header length that is not a number": ((b"{}", {INFER_HEADER_LENGTH: "ten"}), 400, "must be the byte length of the JSON"),
    "a header length that cuts the JSON": (_binary(len(ONE_BYTES), header_delta=-5), 400,
                                          f"(is {INFER_HEADER_LENGTH} the length of the JSON part alone?)"),
    "binary data without the header": ((_binary(len(ONE_BYTES))[0], {}), 400,
                                       f"binary data after the JSON needs the {INFER_HEADER_LENGTH} header"),
    "fewer binary bytes than binary_data_size": (_binary(len(ONE_BYTES) + 4), 400,
                                                 "binary_data_size is 3140 bytes, but only 3136 bytes of binary data remain"),
    "more binary bytes than the inputs take": (_binary(len(ONE_BYTES), extra=b"\0" * 8), 400,
                                               "holds 3144 bytes after the JSON part, but the inputs' parameters.binary_data_size account for 3136"),
    "a binary size the shape disagrees with": (_binary(len(ONE_BYTES) - 4), 400,
                                               "its binary data holds 3132 bytes; shape [1, 1, 28, 28] of FP32 needs 3136"),
    "binary_data_size without binary data": (_one_input(data=None, parameters={"binary_data_size": len(ONE_BYTES)}), 400,
                                             "has parameters.binary_data_size but the request has no binary part"),
    "both data and binary data": (_binary(len(ONE_BYTES), data=ONE_DATA), 400, "has both `data` and parameters.binary_data_size"),
    "a negative binary size": (_binary(-1), 400, "binary_data_size must be a byte count"),
    "too many images": (_binary(301 * len(ONE_BYTES), extra=ONE_BYTES * 300, shape=[301, 1, 28, 28]), 413,
                        "holds a batch of 301; the limit is 300 per request"),
}


@pytest.mark.parametrize("case", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_get_the_right_status_and_a_detail_that_says_what_to_fix(server, case):
    (body, headers), status, detail = case
    model = "adder" if b'"name": "a"' in body else "centroid"
    before = requests_counted(server, "ModelInfer", "INVALID_ARGUMENT" if status == 400 else "RESOURCE_EXHAUSTED")
    answer = send(infer_url(server, model), body, headers)
    assert answer.status == status, answer.body[:500]
    assert detail in answer.error, answer.error
    after = requests_counted(server, "ModelInfer", "INVALID_ARGUMENT" if status == 400 else "RESOURCE_EXHAUSTED")
    assert after == before + 1


def test_unknown_models_versions_methods_and_oversized_bodies(server):
    body = _one_input()[0]
    answer = send(infer_url(server, "nope"), body)
    assert answer.status == 404 and "unknown model 'nope'; this server has: " in answer.error
    answer = send(infer_url(server, "centroid", version="7"), body)
    assert answer.status == 404 and "model 'centroid' has no version '7' being served; it serves version(s) 1" in answer.error
    answer = send(infer_url(server), method="GET")
    assert answer.status == 405 and answer.error
    answer = send(infer_url(server), b"\0" * (TEST_MAX_MESSAGE_BYTES + 1))
    assert answer.status == 413 and "larger than the server's limit" in answer.error
    # A gzip bomb: 20 KiB that inflate beyond the limit, which holds for the inflated body.
    answer = send(infer_url(server), gzip.compress(b" " * (2 * TEST_MAX_MESSAGE_BYTES)), {"Content-Encoding": "gzip"})
    assert answer.status == 413 and "larger than the server's limit" in answer.error
    answer = send(infer_url(server), body, {"x-request-timeout-ms": "soon"})
    assert answer.status == 400 and "x-request-timeout-ms header must be a positive number" in answer.error


def test_the_server_answers_correctly_after_every_bad_body(server, triton_http, pixels):
    served = http_probabilities(triton_http, pixels[:8], True, True, request_id="after")
    np.testing.assert_allclose(served.sum(axis=1), 1, rtol=1e-5)


def test_metrics_count_http_calls_under_the_v2_method_names(server, pixels):
    counted = {code: requests_counted(server, "ModelInfer", code) for code in ("OK", "NOT_FOUND")}
    ready = requests_counted(server, "ServerReady", "OK")
    body = json_body({"inputs": [pixels_input(pixels[:1], data=pixels[:1].ravel().tolist())]})
    for _ in range(3):
        assert send(infer_url(server), body).status == 200
    assert send(infer_url(server, "nope"), body).status == 404
    assert send(server.http_url + "/v2/health/ready").status == 200
    assert requests_counted(server, "ModelInfer", "OK") == counted["OK"] + 3
    assert requests_counted(server, "ModelInfer", "NOT_FOUND") == counted["NOT_FOUND"] + 1
    assert requests_counted(server, "ServerReady", "OK") == ready + 1
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=10).read().decode()
    assert f'serve_requests_total{{code="OK",method="ModelInfer",protocol="http",service="{SERVICE}"}}' in text


# Deadlines and back-pressure, on a server whose batches wait a second to fill


@pytest.fixture
def slow_server(model_dir):
    """Fresh for each test: after a batch of one request, a lone request no longer waits for company."""
    config = ServerConfig(
        model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"),
        batching=BatchingOptions(max_batch_size=256, max_delay_ms=1000, max_queue_images=300),
    )
    with BackgroundServer(config) as running:
        yield running


def _one_image_body(**document) -> bytes:
    return json_body({"inputs": [{"name": "pixels", "shape": PIXELS_SHAPE, "datatype": "FP32", "data": ONE_DATA}], **document})


@pytest.mark.parametrize("how", ["header", "timeout parameter", "tritonclient"])
def test_a_deadline_that_passes_in_the_queue_is_answered_504_at_the_deadline(slow_server, how):
    stats = slow_server.server.runners["centroid"].batcher.stats
    dropped, inferred = stats.dropped_cancelled + stats.dropped_expired, stats.images_inferred
    started = time.monotonic()
    if how == "tritonclient":
        client = httpclient.InferenceServerClient(url=slow_server.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput("pixels", PIXELS_SHAPE, "FP32")
        tensor.set_data_from_numpy(ONE)
        with pytest.raises(InferenceServerException) as failure:
            client.infer("centroid", [tensor], timeout=100_000)  # microseconds
        client.close()
        status, detail = failure.value.status(), failure.value.message()
        assert status == "504", detail
    else:
        if how == "header":
            answer = send(infer_url(slow_server), _one_image_body(), {"x-request-timeout-ms": "100"})
        else:
            answer = send(infer_url(slow_server), _one_image_body(parameters={"timeout": 100_000}))
        assert answer.status == 504, answer.body
        detail = answer.error
    elapsed = time.monotonic() - started
    assert "deadline passed" in detail
    assert elapsed < 0.8, f"answered after {elapsed:.2f} s: at the batch's delay, not at the 0.1 s deadline"
    wait_until(lambda: stats.dropped_cancelled + stats.dropped_expired != dropped)
    assert stats.dropped_cancelled + stats.dropped_expired == dropped + 1
    assert stats.images_inferred == inferred, "a request whose deadline had passed was inferred"


def test_the_earlier_of_header_and_timeout_parameter_holds_and_patient_callers_are_answered(slow_server):
    answer = send(infer_url(slow_server), _one_image_body(parameters={"timeout": 60_000_000}), {"x-request-timeout-ms": "100"})
    assert answer.status == 504
    answer = send(infer_url(slow_server), _one_image_body(parameters={"timeout": 100_000}), {"x-request-timeout-ms": "60000"})
    assert answer.status == 504
    answer = send(infer_url(slow_server), _one_image_body(parameters={"timeout": 30_000_000}), {"x-request-timeout-ms": "30000"})
    assert answer.status == 200 and answer.json["outputs"][0]["shape"] == [1, 10]


def test_a_full_queue_answers_503(slow_server):
    batch = np.zeros((200, 1, 28, 28), np.float32)
    body, headers = binary_body({"inputs": [pixels_input(batch, parameters={"binary_data_size": batch.nbytes})]}, batch.tobytes())
    first: list[Answer] = []
    waiting = threading.Thread(target=lambda: first.append(send(infer_url(slow_server), body, headers)))
    waiting.start()
    try:
        batcher = slow_server.server.runners["centroid"].batcher
        # Generous: on a loaded machine the callers start slowly.
        assert wait_until(lambda: batcher.queued_images > 0, timeout_s=20), "the first request never reached the queue"
        answer = send(infer_url(slow_server), body, headers)
        assert answer.status == 503 and "overloaded" in answer.error and "retry with backoff" in answer.error
    finally:
        waiting.join(30)
    assert first[0].status == 200, first[0].body[:300]


# Tokens and TLS


def test_bearer_tokens_guard_http_except_health(model_dir, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    config = ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0,
                          runtime=RuntimeOptions(device="cpu"), token_file=token_file)
    with BackgroundServer(config) as guarded:
        client = httpclient.InferenceServerClient(url=guarded.http_url.removeprefix("http://"))
        tensor = httpclient.InferInput("pixels", PIXELS_SHAPE, "FP32")
        tensor.set_data_from_numpy(ONE)
        authorised = {"authorization": f"Bearer {TOKEN}"}
        assert client.infer("centroid", [tensor], headers=authorised).as_numpy("probabilities").shape == (1, 10)
        assert client.get_model_metadata("centroid", headers=authorised)["name"] == "centroid"
        for headers, detail in (({}, "missing credentials"), ({"authorization": "Bearer wrong"}, "invalid bearer token"),
                                ({"authorization": f"Basic {TOKEN}"}, "malformed credentials")):
            answer = send(infer_url(guarded), _one_image_body(), headers)
            assert answer.status == 401 and detail in answer.error
            with pytest.raises(InferenceServerException) as failure:
                client.get_model_metadata("centroid", headers=headers)
            assert failure.value.status() == "401"
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/centroid/ready"):
            assert send(guarded.http_url + path).status == 200, path  # probes cannot send tokens
        assert client.is_server_ready() and client.is_model_ready("centroid")
        client.close()
        denied = guarded.server.metrics.registry.get_sample_value(
            "serve_requests_total", {"protocol": "http", "service": SERVICE, "method": "ModelInfer", "code": "UNAUTHENTICATED"})
        assert denied == 3


def test_tls_serves_http_to_clients_that_trust_its_ca_only(model_dir, tmp_path):
    ca, rogue = make_ca(tmp_path, "ca"), make_ca(tmp_path, "rogue")
    certificate = issue(tmp_path, ca, "server", server=True)
    config = ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0,
                          runtime=RuntimeOptions(device="cpu"), tls_cert=certificate.cert_path, tls_key=certificate.key_path)
    with BackgroundServer(config) as secure:
        assert secure.http_url.startswith("https://")
        trusting = ssl.create_default_context(cafile=str(ca.cert_path))
        answer = send(infer_url(secure), _one_image_body(), context=trusting)
        assert answer.status == 200 and answer.json["outputs"][1]["shape"] == [1, 10]
        client = httpclient.InferenceServerClient(url=secure.http_url.removeprefix("https://"), ssl=True,
                                                  ssl_context_factory=lambda: trusting)
        tensor = httpclient.InferInput("pixels", PIXELS_SHAPE, "FP32")
        tensor.set_data_from_numpy(ONE)
        assert client.infer("centroid", [tensor]).as_numpy("probabilities").shape == (1, 10)
        client.close()
        with pytest.raises(urllib.error.URLError) as failure:
            send(infer_url(secure), _one_image_body(), context=ssl.create_default_context(cafile=str(rogue.cert_path)))
        assert isinstance(failure.value.reason, ssl.SSLCertVerificationError)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            send(infer_url(secure).replace("https://", "http://"), _one_image_body(), timeout=5)


# Graceful drain


def test_a_drain_answers_http_calls_in_flight_and_refuses_new_ones_with_503(model_dir, mnist_test_set):
    images, _ = mnist_test_set
    # Batches wait up to 10 s to fill: the first calls are still in flight when the drain starts.
    config = ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0,
                          runtime=RuntimeOptions(device="cpu"), batching=BatchingOptions(max_delay_ms=10_000), grace_s=10)
    server = BackgroundServer(config).start()
    try:
        batches = [as_pixels(images[i : i + 2]) for i in range(0, 8, 2)]
        in_flight: dict[int, Answer] = {}

        def call(index: int) -> None:
            batch = batches[index]
            body, headers = binary_body({"inputs": [pixels_input(batch, parameters={"binary_data_size": batch.nbytes})],
                                         "parameters": {"binary_data_output": True}}, batch.tobytes())
            in_flight[index] = send(infer_url(server), body, headers)

        callers = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
        for caller in callers:
            caller.start()
        # Generous: on a loaded machine the callers start slowly.
        wait_until(lambda: server.server.admission.active >= len(batches), timeout_s=20)
        assert server.server.admission.active == len(batches) and not in_flight
        stopping = threading.Thread(target=server.stop, kwargs={"grace": 10})
        stopping.start()
        later: list[tuple[int, str]] = []
        while stopping.is_alive():  # a client that keeps calling through the drain, until the port closes
            try:
                answer = send(infer_url(server), _one_image_body(), timeout=2)
                ready = send(server.http_url + "/v2/health/ready", timeout=2)
            except OSError:  # refused, reset, or accepted just as the port closed and never answered
                break
            later.append((answer.status, answer.error if answer.status != 200 else ""))
            later.append((ready.status, "ready"))
        stopping.join(30)
        for caller in callers:
            caller.join(30)
    finally:
        server.stop(grace=0)
    expected = offline_probabilities(model_dir / "centroid.onnx", images[:8]).argmax(axis=1)
    answered = [in_flight[i] for i in range(len(batches))]
    assert [a.status for a in answered] == [200] * len(batches)
    digits = np.concatenate([np.frombuffer(a.body[int(a.headers[INFER_HEADER_LENGTH]):], "<f4").reshape(2, 2, 10)[1]
                             for a in answered]).argmax(axis=1)
    assert digits.tolist() == expected.tolist()
    refused = [detail for status, detail in later if status == 503 and detail != "ready"]
    assert refused and all("shutting down" in detail for detail in refused), later[:10]
    assert (503, "ready") in later, "readiness never turned 503 during the drain"
    assert {status for status, _ in later} <= {200, 503}, later
