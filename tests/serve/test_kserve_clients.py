"""Existing KServe v2 clients talk to the server unchanged: Triton's Python client from PyPI.

tritonclient ships its own copy of the v2 protos under the same `inference.*` names; our stubs live in
a private descriptor pool (see contracts.generate_stubs), so the client and the server share this process.
"""
from __future__ import annotations

import numpy as np
import pytest
from serve_testing import offline_probabilities

from contracts.generated.inference import grpc_service_pb2

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as triton_service_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def triton(server):
    client = grpcclient.InferenceServerClient(url=server.target)
    yield client
    client.close()


def test_tritonclient_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("centroid") and not triton.is_model_ready("nope")
    assert triton.get_server_metadata(as_json=True)["name"] == "digit-zoo"
    metadata = triton.get_model_metadata("centroid", as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]


def test_tritonclient_infer_agrees_with_offline_onnx_runtime(triton, model_dir, mnist_test_set):
    images, labels = mnist_test_set
    images = images[:1000]
    pixels = (images.astype(np.float32) / np.float32(255))[:, None]
    probabilities = []
    for start in range(0, len(pixels), 250):
        batch = pixels[start : start + 250]
        inputs = [grpcclient.InferInput("pixels", list(batch.shape), "FP32")]
        inputs[0].set_data_from_numpy(batch)
        outputs = [grpcclient.InferRequestedOutput("probabilities")]
        result = triton.infer("centroid", inputs, outputs=outputs, request_id=f"r{start}")
        assert result.get_response().id == f"r{start}"
        assert result.as_numpy("logits") is None  # only the requested output came back
        probabilities.append(result.as_numpy("probabilities"))
    served = np.concatenate(probabilities)
    offline = offline_probabilities(model_dir / "centroid.onnx", images)
    np.testing.assert_array_equal(served.argmax(axis=1), offline.argmax(axis=1))
    np.testing.assert_allclose(served, offline, rtol=1e-5, atol=1e-6)
    assert (served.argmax(axis=1) == labels[:1000]).mean() == (offline.argmax(axis=1) == labels[:1000]).mean()


def test_tritonclient_gets_clear_errors(triton):
    wrong_type = [grpcclient.InferInput("pixels", [1, 1, 28, 28], "FP64")]
    wrong_type[0].set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
    with pytest.raises(InferenceServerException) as failure:
        triton.infer("centroid", wrong_type)
    assert failure.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "datatype FP64; the model expects FP32" in failure.value.message()
    fine = [grpcclient.InferInput("pixels", [1, 1, 28, 28], "FP32")]
    fine[0].set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException) as failure:
        triton.infer("nope", fine)
    assert failure.value.status() == "StatusCode.NOT_FOUND" and "unknown model 'nope'" in failure.value.message()


def test_tritonclient_reaches_a_third_party_model_by_its_own_names(triton):
    x = np.array([[1, 2, 3, 4]], np.float32)
    inputs = [grpcclient.InferInput("input_1", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(x)
    result = triton.infer("thirdparty", inputs)
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
    np.testing.assert_allclose(result.as_numpy("scores"), x @ weights, rtol=1e-6)
    assert result.as_numpy("label").tolist() == [2]


def _fields(descriptor) -> dict:
    table = {}
    for field in descriptor.fields:
        table[field.name] = (field.number, field.type, field.is_repeated, field.message_type.full_name if field.message_type else "")
    for nested in descriptor.nested_types:
        for name, row in _fields(nested).items():
            table[f"{nested.name}.{name}"] = row
    return table


def test_our_v2_proto_is_wire_compatible_with_tritons():
    """Every message and RPC we define has the names, numbers and types of Triton's grpc_service.proto."""
    ours, theirs = grpc_service_pb2.DESCRIPTOR, triton_service_pb2.DESCRIPTOR
    for name, message in ours.message_types_by_name.items():
        assert _fields(message) == _fields(theirs.message_types_by_name[name]), name
    our_service = ours.services_by_name["GRPCInferenceService"]
    their_service = theirs.services_by_name["GRPCInferenceService"]
    assert our_service.full_name == their_service.full_name == "inference.GRPCInferenceService"
    for method in our_service.methods:
        theirs_method = their_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            theirs_method.input_type.full_name, theirs_method.output_type.full_name
        )
    assert {m.name for m in our_service.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
    }
