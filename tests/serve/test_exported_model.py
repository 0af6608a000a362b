"""A real LeNet exported by `python -m export` (random weights) served end to end.

Skipped where the training extra (torch) is not installed: a serving install cannot export.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import grpc
import numpy as np
import pytest
from serve_testing import REPO_ROOT, offline_probabilities

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2 as pb
from contracts.generated.inference import grpc_service_pb2_grpc as pb_grpc
from contracts.sessions import RuntimeOptions
from serve.server import BackgroundServer, ServerConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or not (REPO_ROOT / "export" / "__main__.py").exists(),
    reason="exporting needs the train extra (torch) and the export package",
)


@pytest.fixture(scope="module")
def exported_lenet(tmp_path_factory):
    path = tmp_path_factory.mktemp("exported") / "lenet.onnx"
    completed = subprocess.run(
        [sys.executable, "-m", "export", "lenet", "--random-weights", "-o", str(path), "--cpu-only", "-q"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return path


def test_an_exported_lenet_agrees_with_offline_onnx_runtime_through_both_apis(exported_lenet, mnist_test_set):
    images, labels = mnist_test_set
    images, labels = images[:1000], labels[:1000]
    offline = offline_probabilities(exported_lenet, images)
    config = ServerConfig(model_paths=(exported_lenet,), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"))
    with BackgroundServer(config) as server, grpc.insecure_channel(server.target) as channel:
        digits = digits_pb2_grpc.DigitClassifierStub(channel)
        v2 = pb_grpc.GRPCInferenceServiceStub(channel)
        served_digits, served_v2 = [], []
        for start in range(0, 1000, 250):
            chunk = images[start : start + 250]
            request = digits_pb2.ClassifyRequest(
                model="lenet",
                images=[digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=i.tobytes(), height=28, width=28, already_mnist=True)) for i in chunk],
            )
            served_digits += [p.digit for p in digits.Classify(request, timeout=60).predictions]
            pixels = (chunk.astype(np.float32) / np.float32(255))[:, None]
            infer = pb.ModelInferRequest(
                model_name="lenet",
                inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=list(pixels.shape))],
                raw_input_contents=[pixels.tobytes()],
            )
            response = v2.ModelInfer(infer, timeout=60)
            served_v2.append(np.frombuffer(response.raw_output_contents[1], "<f4").reshape(-1, 10))
        metadata = digits.GetModelMetadata(digits_pb2.GetModelMetadataRequest(name="lenet"), timeout=10)
    expected = offline.argmax(axis=1)
    np.testing.assert_array_equal(np.array(served_digits), expected)
    served_v2 = np.concatenate(served_v2)
    np.testing.assert_allclose(served_v2, offline, rtol=1e-5, atol=1e-6)
    assert (np.array(served_digits) == labels).mean() == (expected == labels).mean()
    assert metadata.task == "classification" and metadata.labels == [str(i) for i in range(10)]
