"""Fixtures of the serve tests: small ONNX models, MNIST test digits, a server on a free loopback port."""
from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from onnx_models import (
    mnist_centroid_classifier,
    random_linear_classifier,
    third_party_classifier,
    two_input_model,
)
from serve_testing import (
    AGREEMENT_IMAGES,
    JUDGED_THRESHOLDS,
    TEST_LIMITS,
    TEST_MAX_MESSAGE_BYTES,
    MiB,
)

from contracts.mnist_idx import load_mnist_test
from contracts.sessions import RuntimeOptions
from serve.core.batching import BatchingOptions
from serve.server import BackgroundServer, ServerConfig


@pytest.fixture(scope="session")
def mnist_test_set(mnist_root) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist_test(mnist_root)
    return images[:AGREEMENT_IMAGES], labels[:AGREEMENT_IMAGES].astype(np.int64)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, mnist_root) -> Path:
    folder = tmp_path_factory.mktemp("models")
    mnist_centroid_classifier(folder / "centroid.onnx", mnist_root, name="centroid")
    # The same classifier with thresholds in its card: the same probabilities, judged by the card.
    mnist_centroid_classifier(folder / "judged.onnx", mnist_root, name="judged",
                              verdict_thresholds=JUDGED_THRESHOLDS.to_meta())
    random_linear_classifier(folder / "padded32.onnx", name="padded32", input_size=32)
    third_party_classifier(folder / "thirdparty.onnx")
    two_input_model(folder / "adder.onnx")
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    config = ServerConfig(
        model_paths=(model_dir,),
        port=0,
        http_port=0,
        # The offline reference runs on the CPU: so does the server, for bit-comparable answers.
        runtime=RuntimeOptions(device="cpu"),
        batching=BatchingOptions(max_batch_size=256, max_delay_ms=5.0),
        limits=TEST_LIMITS,
        max_message_bytes=TEST_MAX_MESSAGE_BYTES,
        metrics_port=0,
        grace_s=2.0,
    )
    with BackgroundServer(config) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)]
    ) as open_channel:
        yield open_channel
