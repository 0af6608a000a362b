"""Where the datasets live, defined once for training, export, the benchmarks, the client and the tests.

The folder holds torchvision's layout (``MNIST/raw``, ``FashionMNIST/raw``). Torch-free, because the
client and the serving benchmarks read MNIST test digits without torch.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "ZOO_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")  # relative to the working directory: where training downloads to
# The help of every --data-dir flag, so that each command states the same default.
DATA_DIR_HELP = f"folder holding MNIST/raw (default: ${DATA_DIR_ENV}, else ./{DEFAULT_DATA_DIR})"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: `data_dir` when given, else $ZOO_DATA_DIR when set, else ./data."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()
