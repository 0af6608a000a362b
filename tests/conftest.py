"""Shared by every test: where the MNIST files are.

The tests import the installed packages (contracts, zoo, export, serve, harness) and plain modules
of tests/ itself, never bench/: the benchmarks are run as a user runs them, `python -m bench.NAME`.
"""
from __future__ import annotations

from pathlib import Path

import pytest


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
