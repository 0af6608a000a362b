"""Property-based fuzzing of KServe v2 request validation: random names, datatypes, shapes (negative,
zero, 2^63 - 1), byte counts, typed contents and requested outputs.

Directly (no network): `decode_inputs` either raises one of the documented errors or returns exactly
what the model takes (its names, dtypes and shapes, finite values in range, batch within the
limit), never allocating more than the request's own size allows. Through a live server (a few
dozen examples, models of every kind: batched classifier, third-party, two-input, dynamic-size
convolution): every answer is OK or a documented status, never INTERNAL, a hang or a crash, and
the server answers correctly afterwards. The same random requests go to the HTTP/REST front door
too, as JSON and binary-extension bodies, with JSON of the wrong kind in any field and wrong
header lengths: every answer is 200 or a documented 4xx with a JSON detail, never a 500.
Image decoding is fuzzed in test_preprocess_fuzz.py.
"""
from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_models import (
    dynamic_size_conv_model,
    random_linear_classifier,
    third_party_classifier,
    two_input_model,
)

from contracts.errors import InvalidInput, TooLarge
from contracts.generated.inference import grpc_service_pb2 as pb
from contracts.generated.inference import grpc_service_pb2_grpc as pb_grpc
from contracts.model_card import ModelCard
from contracts.model_file import Model, TensorSpec
from contracts.sessions import RuntimeOptions
from serve.api.grpc_kserve import CONTENTS_FIELD, decode_inputs, requested_outputs
from serve.api.http_tensors import INFER_HEADER_LENGTH
from serve.server import BackgroundServer, ServerConfig

pytestmark = pytest.mark.filterwarnings("error")  # a numpy overflow warning is a finding too

MAX_BATCH = 8
DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": object,
}
NOT_DATATYPES = ["", "fp32", "FLOAT", "STRING", "BF16", "FP32 "]
HOSTILE_DIMS = [-(2**63), -1, 0, 2**31, 2**62, 2**63 - 1]
# The typed field of each kind of value, and what hypothesis draws for it.
CONTENT_VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=4),
}
DOCUMENTED_STATUSES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.NOT_FOUND}
DOCUMENTED_HTTP_STATUSES = {200, 400, 404, 413}
# Any JSON value, to put where the protocol expects another kind.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
INPUT_FIELDS = ["name", "datatype", "shape", "data", "parameters"]


def itemsize(datatype: str) -> int:
    return np.dtype(DATATYPES[datatype]).itemsize if datatype in DATATYPES and datatype != "BYTES" else 4


@st.composite
def tensor_specs(draw, name: str) -> TensorSpec:
    datatype = draw(st.sampled_from(sorted(DATATYPES)))
    rank = draw(st.integers(1, 4))
    first = draw(st.sampled_from([-1, -1, 1, 2]))
    rest = draw(st.lists(st.sampled_from([-1, 1, 2, 3]), min_size=rank - 1, max_size=rank - 1))
    shape = (first, *rest)
    # Dynamic dimensions as graphs name them: the batch "N" (shared by every input), others maybe.
    names = ["N" if axis == 0 else draw(st.sampled_from(["H", "W", None]))
             for axis in range(rank)]
    dim_names = tuple(dim_name if d == -1 else None for d, dim_name in zip(shape, names))
    return TensorSpec(name, datatype, np.dtype(DATATYPES[datatype]), shape, dim_names)


@st.composite
def models(draw) -> Model:
    """A stand-in Model (no session: validation never runs it) with random inputs and a card or not."""
    names = draw(st.sampled_from([["pixels"], ["x"], ["a", "b"]]))
    inputs = [draw(tensor_specs(name)) for name in names]
    outputs = [TensorSpec("out", "FP32", np.dtype(np.float32), (-1, 2)), TensorSpec("label", "INT64", np.dtype(np.int64), (-1,))]
    card = None
    if draw(st.booleans()):
        card = ModelCard(model_name="fuzzed", task="classification", input_name=names[0], output_names=["out"],
                         input_size=None, value_range=draw(st.sampled_from([[0.0, 1.0], [-1.0, 1.0]])))
    return Model(name="fuzzed", path=Path("fuzzed.onnx"), file_sha256="0" * 64, card=card, session=None,
                 provider="CPUExecutionProvider", provider_note="", inputs=inputs, outputs=outputs)


@st.composite
def shapes_for(draw, spec_shape: tuple[int, ...]) -> list[int]:
    """Mostly a shape the spec allows; otherwise one with a hostile dimension or the wrong rank."""
    shape = [draw(st.integers(1, 3)) if d == -1 else d for d in spec_shape]
    # (hypothesis draws the low end of a range most: the valid choice is 0, the mutations the top)
    mutation = draw(st.integers(0, 5))
    if mutation == 5:
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(HOSTILE_DIMS + [0, 1, 4, 9]))
    elif mutation == 4:
        shape = draw(st.lists(st.sampled_from(HOSTILE_DIMS + [1, 2, 3]), max_size=6))
    return shape


def element_count(shape: list[int]) -> int | None:
    """Elements of a small, non-negative shape; None when it is hostile (data then random in size)."""
    if any(d < 0 or d > 64 for d in shape):
        return None
    return math.prod(shape)


@st.composite
def v2_requests(draw, model: Model, model_names: list[str] | None = None) -> pb.ModelInferRequest:
    raw = draw(st.booleans())
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(model_names)) if model_names else model.name)
    count = draw(st.sampled_from([len(model.inputs)] * 4 + [0, len(model.inputs) + 1]))
    for index in range(count):
        spec = model.inputs[index % len(model.inputs)]
        name = spec.name if draw(st.integers(0, 9)) < 9 else draw(st.text(max_size=8))
        datatype = spec.datatype if draw(st.integers(0, 7)) < 7 else draw(st.sampled_from(sorted(DATATYPES) + NOT_DATATYPES))
        shape = draw(shapes_for(spec.shape))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        elements = element_count(shape)
        if raw:
            size = (elements * itemsize(datatype)) if elements is not None else draw(st.integers(0, 64))
            size = max(0, size + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 3])))
            request.raw_input_contents.append(draw(st.binary(min_size=size, max_size=size)))
        else:
            field_name = CONTENTS_FIELD.get(datatype, "fp32_contents")
            if draw(st.integers(0, 5)) == 5:
                field_name = draw(st.sampled_from(sorted(CONTENT_VALUES)))
            size = elements if elements is not None else draw(st.integers(0, 8))
            size = max(0, size + draw(st.sampled_from([0, 0, 0, 1, -1])))
            values = draw(st.lists(CONTENT_VALUES[field_name], min_size=size, max_size=size))
            getattr(tensor.contents, field_name).extend(values)
    if raw and draw(st.integers(0, 9)) == 9:
        request.raw_input_contents.append(b"\0" * 4)  # one raw entry too many
    for _ in range(draw(st.integers(0, 2))):
        request.outputs.add(name=draw(st.sampled_from(["out", "label", "probabilities", "scores", "sum",
                                                       "feature_map", "nope", ""])))
    return request


def check_accepted(feeds: dict[str, np.ndarray], model: Model, request: pb.ModelInferRequest) -> None:
    """What validation lets through is exactly what the model takes."""
    assert list(feeds) == [tensor.name for tensor in request.inputs]
    assert sorted(feeds) == sorted(spec.name for spec in model.inputs)
    for spec in model.inputs:
        array = feeds[spec.name]
        assert array.dtype == spec.dtype
        assert len(array.shape) == len(spec.shape)
        assert all(want in (-1, got) for got, want in zip(array.shape, spec.shape)), (array.shape, spec.shape)
        assert all(d >= 0 for d in array.shape) and array.shape[0] >= 1
        if spec.shape[0] == -1:
            assert array.shape[0] <= MAX_BATCH
        if spec.datatype in ("FP16", "FP32", "FP64") and array.size:
            assert np.isfinite(array).all()
            if model.card is not None:
                low, high = model.card.value_range
                assert array.min() >= low and array.max() <= high
        # Bounded allocation: typed contents widen to 8 bytes a value at most; raw bytes are not copied.
        assert array.nbytes <= 8 * request.ByteSize() + 64
        assert spec.datatype != "BYTES"
    sizes: dict[str, set[int]] = {}
    for spec in model.inputs:
        for dim_name, size in zip(spec.dim_names, feeds[spec.name].shape):
            if dim_name is not None:
                sizes.setdefault(dim_name, set()).add(size)
    assert all(len(values) == 1 for values in sizes.values()), f"named dimensions disagree: {sizes}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_v2_validation_accepts_what_the_model_takes_and_refuses_the_rest_with_documented_errors(data):
    model = data.draw(models())
    request = data.draw(v2_requests(model))
    started = time.perf_counter()
    try:
        feeds, uses_raw = decode_inputs(request, model, MAX_BATCH)
    except (InvalidInput, TooLarge) as exc:
        assert str(exc)  # every refusal says what was wrong
        return
    finally:
        # Validation of a request of a few KiB is sub-millisecond work: seconds would mean a hang.
        assert time.perf_counter() - started < 2.0
    assert uses_raw == (len(request.raw_input_contents) > 0)
    check_accepted(feeds, model, request)
    try:
        wanted = requested_outputs(request, model)
    except InvalidInput:
        assert any(output.name not in ("out", "label") for output in request.outputs)
        return
    assert all(0 <= index < len(model.outputs) for index in wanted)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A server with one model of each kind the v2 API handles differently."""
    folder = tmp_path_factory.mktemp("fuzz-models")
    random_linear_classifier(folder / "linear.onnx", name="linear")  # batched, card with a value range
    third_party_classifier(folder / "thirdparty.onnx")  # batched, no card
    two_input_model(folder / "adder.onnx")  # unbatched, INT32
    dynamic_size_conv_model(folder / "edgelike.onnx")  # unbatched, any H and W: shapes fail inside the graph
    config = ServerConfig(model_paths=(folder,), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"),
                          max_message_bytes=1024 * 1024)
    with BackgroundServer(config) as running:
        with grpc.insecure_channel(running.target) as channel:
            yield running, pb_grpc.GRPCInferenceServiceStub(channel)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_live_server_answers_random_v2_requests_with_documented_statuses_only(fuzz_server, data):
    server, stub = fuzz_server
    model_files = server.server.model_files
    names = model_files.names()
    model = model_files.get(data.draw(st.sampled_from(names)))
    request = data.draw(v2_requests(model, model_names=[model.name] * 9 + ["nope"]))
    try:
        response = stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() in DOCUMENTED_STATUSES, (error.code(), error.details())
        assert len(error.details()) < 2000
        return
    assert response.model_name == model.name and len(response.outputs) >= 1


def nested(values: list, shape: list[int]) -> list:
    """`values` nested row-major as `shape` when they fill it exactly (the protocol allows either)."""
    if len(shape) < 2 or any(d < 1 for d in shape) or math.prod(shape) != len(values):
        return values
    step = len(values) // shape[0]
    return [nested(values[i : i + step], shape[1:]) for i in range(0, len(values), step)]


@st.composite
def http_bodies(draw, request: pb.ModelInferRequest) -> tuple[bytes, dict]:
    """The same request as a v2 REST body (typed contents as JSON `data`, raw contents as binary data
    after the JSON), then mutated where only JSON can go wrong: any value in any field, a wrong header."""
    raw = list(request.raw_input_contents)
    inputs = []
    for index, tensor in enumerate(request.inputs):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if index < len(raw):
            entry["parameters"] = {"binary_data_size": len(raw[index])}
        else:
            fields = tensor.contents.ListFields()
            values = list(fields[0][1]) if fields else []
            values = [v.decode("latin-1") if isinstance(v, bytes) else v for v in values]
            entry["data"] = nested(values, list(tensor.shape)) if draw(st.booleans()) else values
        inputs.append(entry)
    document: dict = {"inputs": inputs}
    if request.outputs:
        document["outputs"] = [{"name": o.name, "parameters": {"binary_data": draw(st.booleans())}} for o in request.outputs]
    if draw(st.booleans()):
        document["parameters"] = {"binary_data_output": True}
    if inputs and draw(st.integers(0, 3)) == 3:
        entry = inputs[draw(st.integers(0, len(inputs) - 1))]
        entry[draw(st.sampled_from(INPUT_FIELDS))] = draw(JSON_VALUES)
    if draw(st.integers(0, 7)) == 7:
        document[draw(st.sampled_from(["inputs", "outputs", "parameters", "id"]))] = draw(JSON_VALUES)
    header = json.dumps(document).encode()
    headers = {}
    if raw and draw(st.integers(0, 7)) < 7:
        delta = draw(st.sampled_from([0, 0, 0, 0, 1, -1, -len(header), 10**9]))
        headers[INFER_HEADER_LENGTH] = str(len(header) + delta)
    return header + b"".join(raw), headers


def http_infer(url: str, body: bytes, headers: dict):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_live_server_answers_random_http_v2_bodies_with_documented_statuses_only(fuzz_server, data):
    server, _ = fuzz_server
    model_files = server.server.model_files
    model = model_files.get(data.draw(st.sampled_from(model_files.names())))
    request = data.draw(v2_requests(model, model_names=[model.name] * 9 + ["nope"]))
    body, headers = data.draw(http_bodies(request))
    status, answer_headers, answer = http_infer(f"{server.http_url}/v2/models/{request.model_name}/infer", body, headers)
    assert status in DOCUMENTED_HTTP_STATUSES, (status, answer[:500])
    if status != 200:
        assert answer_headers["Content-Type"].startswith("application/json")
        detail = json.loads(answer)["error"]
        assert detail and len(detail) < 2000
        return
    length = answer_headers.get(INFER_HEADER_LENGTH)
    result = json.loads(answer[: int(length)] if length is not None else answer)
    assert result["model_name"] == model.name and len(result["outputs"]) >= 1
    binary_sizes = [o.get("parameters", {}).get("binary_data_size", 0) for o in result["outputs"]]
    assert len(answer) == (int(length) if length is not None else len(answer)) + (sum(binary_sizes) if length else 0)


def test_inputs_that_disagree_on_a_named_dimension_are_refused(fuzz_server):
    """Found by the fuzzing above: "a" (N x 2) and "b" (N x 2) sent with N = 2 and N = 3 failed inside
    the graph (a broadcast) and were answered INTERNAL."""
    _, stub = fuzz_server
    request = pb.ModelInferRequest(model_name="adder")
    request.inputs.add(name="a", datatype="INT32", shape=[2, 2]).contents.int_contents.extend([1, 2, 3, 4])
    request.inputs.add(name="b", datatype="INT32", shape=[3, 2]).contents.int_contents.extend([1, 2, 3, 4, 5, 6])
    with pytest.raises(grpc.RpcError) as failure:
        stub.ModelInfer(request, timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs 'a' and 'b' must agree on dimension 'N'" in failure.value.details()


def test_the_fuzzed_server_still_answers_correctly(fuzz_server):
    """Runs after the fuzzing above (same module server): nothing it sent broke the server."""
    _, stub = fuzz_server
    x = np.array([[1, 0, 0, 0], [0, 0, 0, 2]], np.float32)
    request = pb.ModelInferRequest(model_name="thirdparty", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="input_1", datatype="FP32", shape=[2, 4])
    scores = np.frombuffer(stub.ModelInfer(request, timeout=10).raw_output_contents[0], "<f4").reshape(2, 3)
    np.testing.assert_allclose(scores, x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), rtol=1e-6)
    image = np.full((1, 1, 3, 5), 0.5, np.float32)
    image[0, 0, :, 2:] = 1.0
    request = pb.ModelInferRequest(model_name="edgelike", raw_input_contents=[image.tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 3, 5])
    feature_map = np.frombuffer(stub.ModelInfer(request, timeout=10).raw_output_contents[0], "<f4").reshape(1, 1, 3, 4)
    np.testing.assert_allclose(feature_map[0, 0, 0], [0.0, -0.5, 0.0, 0.0])

