"""Read MNIST's IDX files with numpy alone, so the client can send real test digits without torch.

The IDX format (LeCun's): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, then each dimension as a big-endian uint32, then the data in row-major order. The files
may sit plain or gzipped in torchvision's layout, ``ROOT/MNIST/raw``.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

UBYTE_TYPE_CODE = 0x08
HEADER_MAGIC_PREFIX = b"\x00\x00"
TRAIN_IMAGES_FILE = "train-images-idx3-ubyte"
TRAIN_LABELS_FILE = "train-labels-idx1-ubyte"
TEST_IMAGES_FILE = "t10k-images-idx3-ubyte"
TEST_LABELS_FILE = "t10k-labels-idx1-ubyte"
MNIST_FILES = (TRAIN_IMAGES_FILE, TRAIN_LABELS_FILE, TEST_IMAGES_FILE, TEST_LABELS_FILE)
MNIST_CLASSES = 10


class IdxFormatError(ValueError):
    """A file that is not a well-formed uint8 IDX file of the expected rank."""


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as stream:
                return stream.read()
        except (OSError, EOFError) as error:
            raise IdxFormatError(f"{path}: not a readable gzip file ({error}); download it again") from error
    return path.read_bytes()


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != HEADER_MAGIC_PREFIX:
        raise IdxFormatError(f"{path}: not an IDX file (its first bytes are {data[:4].hex(' ') or 'missing'})")
    type_code, ndim = data[2], data[3]
    if type_code != UBYTE_TYPE_CODE:
        raise IdxFormatError(f"{path}: IDX type code 0x{type_code:02x}; only unsigned bytes (0x08) are supported")
    if ndim != expected_ndim:
        raise IdxFormatError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(f"{path}: truncated IDX header ({len(data)} bytes, need {header_size})")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected_size:
        raise IdxFormatError(
            f"{path}: header declares shape {shape} ({expected_size} bytes in all) but the file has "
            f"{len(data)} bytes; the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx_images(path: str | Path) -> np.ndarray:
    """uint8 images (N, H, W) from an IDX3 file (plain, or gzipped when the name ends in .gz)."""
    return _read_idx(Path(path), expected_ndim=3)


def read_idx_labels(path: str | Path) -> np.ndarray:
    """uint8 labels (N,) from an IDX1 file (plain, or gzipped when the name ends in .gz)."""
    return _read_idx(Path(path), expected_ndim=1)


def mnist_raw_dir(root: str | Path) -> Path:
    """Where MNIST's IDX files sit under a data folder (torchvision's layout)."""
    return Path(root) / "MNIST" / "raw"


def missing_mnist_files(root: str | Path) -> list[str]:
    """The four uncompressed IDX files (the form torchvision reads) that are not in ROOT/MNIST/raw."""
    raw = mnist_raw_dir(root)
    return [name for name in MNIST_FILES if not (raw / name).is_file()]


def _find(raw: Path, name: str) -> Path:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {name} (or {name}.gz) not found in {raw}; pass the folder that contains "
        "MNIST/raw (torchvision's layout), e.g. the root torchvision.datasets.MNIST downloaded into"
    )


def load_mnist_test(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 10,000 test images (N, 28, 28) uint8 and labels (N,) uint8 from ROOT/MNIST/raw."""
    raw = mnist_raw_dir(root)
    images_path, labels_path = _find(raw, TEST_IMAGES_FILE), _find(raw, TEST_LABELS_FILE)
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the two files do not belong together"
        )
    if labels.size and int(labels.max()) >= MNIST_CLASSES:
        raise IdxFormatError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9")
    return images, labels
