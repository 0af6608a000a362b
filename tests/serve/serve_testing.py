"""Shared pieces of the serve tests (a plain module: conftest files are not for importing)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contracts.digit_format import pixels_from_uint8
from contracts.images.preprocess import ImageLimits
from contracts.verdicts import VerdictThresholds
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
# The card of the test server's `judged` model (the centroid classifier, whose top probabilities on
# MNIST digits spread from 0.3 to 0.99): strict enough that a few test digits get each verdict.
JUDGED_THRESHOLDS = VerdictThresholds(min_confidence=0.8, min_margin=0.3, no_digit_below=0.4)


def offline_probabilities(model_path: Path, images_uint8: np.ndarray, input_size: int = 28) -> np.ndarray:
    """The same ONNX file run directly with ONNX Runtime: what the service must agree with."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    pixels = pixels_from_uint8(images_uint8, (input_size, input_size))
    return session.run(["probabilities"], {"pixels": pixels})[0]


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0, poll_s: float = 0.01) -> bool:
    """Whether `condition()` came true within `timeout_s`, polled every `poll_s`: for what a real
    server does in its own time (a drop counted after the answer went out, a task that ends)."""
    give_up = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= give_up:
            return False
        time.sleep(poll_s)
    return True
