"""Fixtures of the harness tests: a digit classifier small enough to serve under load on shared cores."""
from __future__ import annotations

from pathlib import Path

import pytest
from onnx_models import mnist_centroid_classifier


@pytest.fixture(scope="session")
def classifier_path(tmp_path_factory, mnist_root) -> Path:
    """A real (about 80% right) classifier with a model card, as `python -m export` writes them."""
    return mnist_centroid_classifier(tmp_path_factory.mktemp("harness-models") / "centroid.onnx", mnist_root)
