"""zoo.data: datasets decoded once into uint8 tensors, the offline fallback, the strict mode, batching."""
from __future__ import annotations

import logging
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.data_dir import DATA_DIR_ENV
from contracts.digit_format import (
    DIGIT_BOX,
    DIGIT_CENTRE,
    DIGIT_SIZE,
    to_uint8,
    to_unit_float,
)
from contracts.mnist_idx import MNIST_FILES, mnist_raw_dir
from serve.core import digit_inputs
from zoo import data
from zoo.data import (
    DataUnavailableError,
    DigitSplit,
    InMemoryLoader,
    ensure_mnist,
    load_split,
    load_train_test,
    random_shift,
)
from zoo.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def mnist_test(mnist_root) -> DigitSplit:
    return load_split("mnist", train=False, data_dir=mnist_root, download=False)


def test_mnist_test_split_is_decoded_into_uint8_tensors(mnist_test):
    assert mnist_test.images.shape == (10000, 28, 28)
    assert mnist_test.images.dtype == torch.uint8
    assert mnist_test.labels.dtype == torch.int64
    assert sorted(mnist_test.labels.unique().tolist()) == list(range(10))
    assert mnist_test.dataset == "mnist"
    assert mnist_test.classes == [str(digit) for digit in range(10)]
    # Ink bright on dark: the border is background, the strokes reach full intensity.
    assert mnist_test.images[:, 0, :].max() == 0
    assert mnist_test.images.max() == 255


def test_head_cuts_the_first_examples(mnist_test):
    head = mnist_test.head(25)
    assert len(head) == 25
    assert torch.equal(head.images, mnist_test.images[:25])
    assert mnist_test.head(None) is mnist_test
    with pytest.raises(ValueError, match="at least 1"):
        mnist_test.head(0)


def test_digit_split_rejects_wrong_types():
    with pytest.raises(ValueError, match="uint8"):
        DigitSplit(torch.zeros(2, 28, 28), torch.zeros(2, dtype=torch.int64), "mnist", [])
    with pytest.raises(ValueError, match="labels"):
        DigitSplit(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "mnist", [])


def test_strict_mnist_names_the_folder_and_how_to_fix_it(tmp_path):
    with pytest.raises(DataUnavailableError) as caught:
        load_split("mnist", train=False, data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "t10k-images-idx3-ubyte" in message and "--data-dir" in message and DATA_DIR_ENV in message
    assert "downloading is disabled" in message


def _write_mnist_stand_ins(root: Path) -> None:
    """The four IDX files with a few blank digits each: what a download leaves in ROOT/MNIST/raw."""
    raw = mnist_raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        _write_idx(raw / name, torch.zeros(3, 28, 28) if "images" in name else torch.arange(3))


def _refuse_download(cls, dataset, root):
    raise AssertionError(f"downloaded {dataset} into {root} although the files were there")


def test_ensure_mnist_uses_the_files_it_finds_without_downloading(tmp_path, monkeypatch):
    _write_mnist_stand_ins(tmp_path)
    monkeypatch.setattr(data, "_download", _refuse_download)
    assert ensure_mnist(tmp_path) == tmp_path
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert ensure_mnist() == tmp_path


def test_ensure_mnist_downloads_into_dot_data_when_nothing_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    calls = []

    def download(cls, dataset, root):
        calls.append((cls.__name__, dataset, root))
        _write_mnist_stand_ins(root)
        return ""

    monkeypatch.setattr(data, "_download", download)
    assert ensure_mnist() == Path("data")
    assert calls == [("MNIST", "mnist", Path("data"))]
    assert sorted(path.name for path in (tmp_path / "data" / "MNIST" / "raw").iterdir()) == sorted(MNIST_FILES)


def test_ensure_mnist_that_cannot_download_says_in_one_line_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda cls, dataset, root: "no network: none of a.example answered")
    with pytest.raises(DataUnavailableError) as caught:
        ensure_mnist(tmp_path / "empty")
    message = str(caught.value)
    assert "\n" not in message
    assert str((tmp_path / "empty" / "MNIST" / "raw").resolve()) in message
    assert "no network: none of a.example answered" in message and DATA_DIR_ENV in message
    assert all(name in message for name in MNIST_FILES)


def test_ensure_mnist_names_the_files_a_download_left_missing(tmp_path, monkeypatch):
    def partial_download(cls, dataset, root):
        _write_mnist_stand_ins(root)
        (mnist_raw_dir(root) / "t10k-labels-idx1-ubyte").unlink()
        return ""

    monkeypatch.setattr(data, "_download", partial_download)
    with pytest.raises(DataUnavailableError, match="t10k-labels-idx1-ubyte still missing"):
        ensure_mnist(tmp_path)


def test_ensure_mnist_without_downloads_does_not_try(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_download", _refuse_download)
    with pytest.raises(DataUnavailableError, match="downloading is disabled"):
        ensure_mnist(tmp_path, download=False)


def test_offline_download_fails_fast_without_leaving_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_network_reachable", lambda mirrors: False)
    with pytest.raises(DataUnavailableError, match="no network"):
        load_split("mnist", train=True, data_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_network_probe_gives_up_within_its_timeout(monkeypatch):
    # An offline machine can hang in name resolution, which no socket timeout bounds: this one
    # hangs until the test is over.
    test_over = threading.Event()

    def hang(*args, **kwargs):
        test_over.wait(10)
        raise TimeoutError("timed out")

    monkeypatch.setattr(data.urllib.request, "urlopen", hang)
    started = time.perf_counter()
    try:
        reachable = data._network_reachable.__wrapped__(("https://example.invalid/file.gz",), timeout=0.3)
    finally:
        test_over.set()
    assert not reachable
    assert time.perf_counter() - started < 2.0


def test_network_probe_needs_a_successful_answer(monkeypatch):
    def refuse(*args, **kwargs):
        raise data.urllib.error.URLError("connection refused")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    assert not data._network_reachable.__wrapped__(("https://a.invalid/x", "https://b.invalid/x"), timeout=1.0)


def test_auto_falls_back_to_uci_digits_with_one_log_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="zoo.data")
    train, test = load_train_test("auto", data_dir=tmp_path, download=False)
    assert (train.dataset, test.dataset) == ("uci-digits", "uci-digits")
    records = [record for record in caplog.records if record.name == "zoo.data"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "UCI digits" in records[0].getMessage() and str(tmp_path) in records[0].getMessage()


def test_strict_mode_does_not_fall_back(tmp_path):
    with pytest.raises(DataUnavailableError):
        load_train_test("mnist", data_dir=tmp_path, download=False)


def test_uci_digits_look_like_mnist():
    train = load_split("uci-digits", train=True)
    test = load_split("uci-digits", train=False)
    assert len(train) + len(test) == 1797 and len(test) == data.UCI_TEST_IMAGES
    assert train.images.shape[1:] == (DIGIT_SIZE, DIGIT_SIZE) and train.images.dtype == torch.uint8
    # Stratified: every digit is in the held-out split in about its share.
    assert torch.bincount(test.labels, minlength=10).min() >= 30
    images = torch.cat([train.images, test.images]).float()
    ink = images > 0
    rows, cols = ink.any(2), ink.any(1)
    # Each digit fits MNIST's 20x20 box and leaves a background border.
    heights = rows.sum(1)
    widths = cols.sum(1)
    assert heights.max() <= DIGIT_BOX and widths.max() <= DIGIT_BOX
    assert (torch.maximum(heights, widths) == DIGIT_BOX).float().mean() > 0.99
    # Centred by centre of mass where MNIST's digits have theirs, (14, 14): offsets are whole pixels,
    # so each digit is within half a pixel of it (and a uint8 rounding).
    grid = torch.arange(DIGIT_SIZE, dtype=torch.float32)
    mass = images.sum((1, 2))
    centre_y = (images.sum(2) * grid).sum(1) / mass
    centre_x = (images.sum(1) * grid).sum(1) / mass
    assert (centre_y - DIGIT_CENTRE).abs().max() <= 0.55 and (centre_x - DIGIT_CENTRE).abs().max() <= 0.55
    assert abs(float(centre_y.mean()) - DIGIT_CENTRE) < 0.05 and abs(float(centre_x.mean()) - DIGIT_CENTRE) < 0.05
    # Ink bright on dark, using the full range.
    assert images[:, 0, :].max() == 0 and images.max() == 255


def test_uci_digits_are_what_the_server_feeds_a_model_for_the_same_scans():
    """A UCI scan sent to the digits API as raw 8-bit pixels reaches the model as training saw it."""
    from sklearn.datasets import load_digits

    scans = load_digits().images[:40]
    trained_on = data.uci_scans_to_mnist_format(scans).numpy()
    for scan, digit_uint8 in zip(scans, trained_on):
        raw = to_uint8(scan / data.UCI_INK_LEVELS)
        image = digit_inputs.RawImage(raw.tobytes(), height=8, width=8)
        served = digit_inputs.image_to_pixels(image, (DIGIT_SIZE, DIGIT_SIZE), digit_inputs.RequestLimits().image)
        # Training stores digits as uint8: the server's floats are within half a grey level of them.
        np.testing.assert_allclose(served[0], to_unit_float(digit_uint8), rtol=0, atol=0.5 / 255 + 1e-7)


def test_uci_digits_are_a_fixed_split_and_callers_get_copies():
    first = load_split("uci-digits", train=False)
    first.images.zero_()
    second = load_split("uci-digits", train=False)
    assert second.images.max() == 255


def _write_idx(path: Path, tensor: torch.Tensor) -> None:
    # The IDX format: magic (0, 0, type 0x08 = ubyte, number of dimensions), sizes, then the bytes.
    header = struct.pack(">BBBB", 0, 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def test_fashion_mnist_is_read_through_torchvision(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 28, 28), generator=generator, dtype=torch.uint8)
    labels = torch.arange(12) % 10
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    loaded = load_split("fashion-mnist", train=False, data_dir=tmp_path, download=False)
    assert torch.equal(loaded.images, images)
    assert torch.equal(loaded.labels, labels)
    assert loaded.dataset == "fashion-mnist"
    assert loaded.classes[0] == "T-shirt/top" and len(loaded.classes) == 10


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("cifar10", train=True)


def test_random_shift_moves_each_image_within_bounds():
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    images[:, 10:18, 10:18] = 200
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    # The block stays whole (it is away from the border) and lands within 2 pixels of where it was.
    assert torch.equal(shifted.sum((1, 2), dtype=torch.int64), images.sum((1, 2), dtype=torch.int64))
    tops = (shifted > 0).any(2).float().argmax(1)
    lefts = (shifted > 0).any(1).float().argmax(1)
    assert set(tops.tolist()) == set(range(8, 13)) and set(lefts.tolist()) == set(range(8, 13))
    again = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)


def test_loader_covers_every_example_once_per_pass_in_a_seeded_order(mnist_test):
    split = mnist_test.head(1000)
    preprocessing = Preprocessing.for_model((32, 32), "mnist")
    loader = InMemoryLoader(split, preprocessing, 128, shuffle=True, generator=torch.Generator().manual_seed(3))
    batches = list(loader)
    assert len(batches) == len(loader) == 8
    pixels = torch.cat([pixels for pixels, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert pixels.shape == (1000, 1, 32, 32) and pixels.dtype == torch.float32
    assert torch.equal(torch.bincount(labels, minlength=10), torch.bincount(split.labels, minlength=10))
    assert not torch.equal(labels, split.labels)  # shuffled
    # Normalised with MNIST's statistics: the padded background is (0 - mean) / std.
    assert torch.allclose(pixels[:, :, 0, :], torch.tensor(-0.1307 / 0.3081))
    second_pass = torch.cat([labels for _, labels in loader])
    assert not torch.equal(second_pass, labels)  # a new permutation every pass
    replay = InMemoryLoader(split, preprocessing, 128, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat([labels for _, labels in replay]), labels)


def test_loader_in_order_without_shuffle(mnist_test):
    split = mnist_test.head(300)
    loader = InMemoryLoader(split, Preprocessing.for_model((28, 28), "mnist"), 1000)
    (pixels, labels), = list(loader)
    assert torch.equal(labels, split.labels)
    expected = (split.images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(pixels[:, 0], expected, atol=1e-6)


def test_loader_needs_a_generator_for_randomness(mnist_test):
    with pytest.raises(ValueError, match="Generator"):
        InMemoryLoader(mnist_test, Preprocessing.for_model((28, 28), "mnist"), 10, shuffle=True)


def test_held_out_split_is_disjoint_fixed_and_the_rest_is_trained_on(mnist_test):
    kept, held = data.hold_out(mnist_test, 500)
    assert len(held) == 500 and len(kept) == len(mnist_test) - 500
    again_kept, again_held = data.hold_out(mnist_test, 500)
    assert torch.equal(held.images, again_held.images) and torch.equal(kept.labels, again_kept.labels)
    _, other = data.hold_out(mnist_test, 500, seed=data.HOLDOUT_SEED + 1)
    assert not torch.equal(held.images, other.images)
    # Every image lands in exactly one part: the parts' pictures add up to the whole split's.
    def flat(split):
        return {bytes(image.numpy()) for image in split.images}

    assert not flat(kept) & flat(held)
    assert len(flat(kept) | flat(held)) == len(flat(mnist_test))
    with pytest.raises(ValueError, match="hold out"):
        data.hold_out(mnist_test, len(mnist_test))
