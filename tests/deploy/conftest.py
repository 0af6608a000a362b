"""Fixtures of the deploy tests: the rendered manifests, the Dockerfile, and a model to mount."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The small ONNX models the serve tests build (tests/serve/onnx_models.py), for the servers started here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from deploy_manifests import Dockerfile, read_dockerfile, render_all  # noqa: E402
from onnx_models import random_linear_classifier  # noqa: E402


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every manifest under deploy/, by source: each kustomize overlay rendered, each plain file parsed."""
    return render_all()


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


@pytest.fixture(scope="session")
def lenet_onnx(tmp_path_factory) -> Path:
    """A small classifier whose model card names it "lenet", like `python -m export lenet`'s file."""
    return random_linear_classifier(tmp_path_factory.mktemp("exported") / "lenet.onnx", name="lenet")
