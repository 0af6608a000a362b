"""The numpy IDX reader the client uses for --mnist-test: real files, gzip, and broken files."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from contracts.mnist_idx import (
    MNIST_FILES,
    IdxFormatError,
    load_mnist_test,
    missing_mnist_files,
    mnist_raw_dir,
    read_idx_images,
    read_idx_labels,
)


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_test_set_loads_with_its_known_first_labels(mnist_root):
    images, labels = load_mnist_test(mnist_root)
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    # The first test labels, as every MNIST tutorial prints them.
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # Digits are light on dark with a blank border, as the preprocessing assumes.
    assert images[:, 0, :].max() == 0 and images.max() == 255


@pytest.mark.parametrize("compressed", [False, True])
def test_plain_and_gzipped_files_read_back_exactly(tmp_path, compressed):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if compressed else ""
    writer = gzip.compress if compressed else bytes
    (tmp_path / f"images{suffix}").write_bytes(writer(_idx_bytes(images)))
    (tmp_path / f"labels{suffix}").write_bytes(writer(_idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx_images(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / f"labels{suffix}"), labels)


def test_load_finds_gzipped_files_in_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.array([0, 9]))))
    loaded_images, loaded_labels = load_mnist_test(tmp_path)
    assert loaded_images.shape == (2, 28, 28) and loaded_labels.tolist() == [0, 9]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an IDX file"),
        (b"\x12\x34\x08\x03" + b"\x00" * 20, "not an IDX file"),
        (struct.pack(">BBBB", 0, 0, 0x0D, 3) + b"\x00" * 12, "type code 0x0d"),
        (struct.pack(">BBBBI", 0, 0, 8, 1, 4) + b"\x00" * 4, "1 dimensions, expected 3"),
        (struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00", "truncated IDX header"),
        (struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28) + b"\x00" * 100, "truncated or corrupt"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "images"
    path.write_bytes(content)
    with pytest.raises(IdxFormatError, match=message):
        read_idx_images(path)


def test_corrupt_gzip_is_refused(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((1, 2, 2))))[:-6])
    with pytest.raises(IdxFormatError, match="gzip"):
        read_idx_images(path)


def test_missing_files_name_the_folder_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*MNIST/raw"):
        load_mnist_test(tmp_path)


def test_images_and_labels_of_different_lengths_are_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 28, 28))))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2)))
    with pytest.raises(IdxFormatError, match="3 images but .* 2 labels"):
        load_mnist_test(tmp_path)


def test_missing_mnist_files_lists_the_uncompressed_files_torchvision_would_not_find(tmp_path):
    assert missing_mnist_files(tmp_path) == list(MNIST_FILES)
    raw = mnist_raw_dir(tmp_path)
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((1, 28, 28))))
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros((1, 28, 28)))))
    # A gzipped file is not enough: torchvision reads the uncompressed ones.
    assert missing_mnist_files(tmp_path) == [
        "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
    ]
