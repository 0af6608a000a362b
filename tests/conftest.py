"""Shared by every test: bench/ on the import path, and where the MNIST files are."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Tests drive bench/ (a folder at the root, not an installed package): importable under a bare
# `pytest` too, not only under `python -m pytest` from the root.
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The data folder holding MNIST/raw: $ZOO_DATA_DIR, else ./data, downloaded there when missing.

    Without the files and without a network the whole run stops with one line, rather than every
    test that reads MNIST failing with the same error.
    """
    from zoo.data import (  # the download is training's own
        DataUnavailableError,
        ensure_mnist,
    )

    try:
        return ensure_mnist().resolve()
    except DataUnavailableError as exc:
        pytest.exit(f"the tests need MNIST ($ZOO_DATA_DIR, else ./data): {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
