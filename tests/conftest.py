"""Shared fixtures: where the MNIST files are, and a fixed seed per test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Tests drive bench/ (a folder at the root, not an installed package): importable under a bare
# `pytest` too, not only under `python -m pytest` from the root.
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
# CI and the README point ZOO_DATA_DIR at ../shared/data; the tests default to the same place.
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw/*-ubyte (torchvision's layout). Missing files fail loudly."""
    root = Path(os.environ.get("ZOO_DATA_DIR", DEFAULT_DATA_DIR))
    raw = root / "MNIST" / "raw"
    if not (raw / "t10k-images-idx3-ubyte").exists() and not (raw / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"MNIST not found under {raw}: set ZOO_DATA_DIR to the folder that contains MNIST/raw "
            "(in this project's CI that is ../shared/data)"
        )
    return root
