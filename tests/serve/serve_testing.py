"""Shared pieces of the serve tests (a plain module: conftest files are not for importing)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from contracts.digit_format import pixels_from_uint8
from contracts.images.preprocess import ImageLimits
from harness.processes import free_port  # noqa: F401  (the one free-port probe, shared with the benchmarks)
from serve.core.digit_inputs import RequestLimits

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
AGREEMENT_IMAGES = 1200
# Limits of the shared test server, small enough for the bad-input tests to cross them cheaply.
TEST_LIMITS = RequestLimits(
    max_images_per_request=300, image=ImageLimits(max_image_bytes=256 * 1024, max_image_pixels=1024 * 1024)
)
TEST_MAX_MESSAGE_BYTES = 8 * MiB


def offline_probabilities(model_path: Path, images_uint8: np.ndarray, input_size: int = 28) -> np.ndarray:
    """The same ONNX file run directly with ONNX Runtime: what the service must agree with."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    pixels = pixels_from_uint8(images_uint8, (input_size, input_size))
    return session.run(["probabilities"], {"pixels": pixels})[0]
