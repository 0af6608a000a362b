"""Digit datasets decoded once into memory: uint8 images (N, 28, 28), ink bright on dark, and labels.

MNIST and Fashion-MNIST come through torchvision's dataset classes (which read the IDX files
straight into tensors), looked up in a data folder and downloaded when missing and a network is
there. The UCI handwritten digits that ship inside scikit-learn (1,797 real 8x8 scans) are the
offline fallback, brought to MNIST's format by the serving pipeline's own conversion, so that a
model trained on them sees digits laid out exactly as the server will lay out its inputs.

Training batches straight from these tensors (random permutation indexing); nothing here touches
PIL or builds a per-image transform pipeline.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from contracts.data_dir import DATA_DIR_ENV, resolve_data_dir
from contracts.digit_format import to_uint8, to_unit_float
from contracts.images.preprocess import to_mnist_format
from contracts.mnist_idx import missing_mnist_files
from zoo.augment import Augmentation
from zoo.preprocessing import Preprocessing

log = logging.getLogger(__name__)

UCI_DIGITS = "uci-digits"  # the offline fallback: scikit-learn's 1,797 scans
DATASETS = ("mnist", "fashion-mnist", UCI_DIGITS)
AUTO = "auto"
DIGIT_LABELS = [str(digit) for digit in range(10)]

# Each pixel of a UCI scan counts the inked cells of a 4x4 block of the original 32x32 bitmap.
UCI_INK_LEVELS = 16.0
# Held-out part of the UCI digits (stratified, fixed seed): 360 of 1,797 images, 20%.
UCI_TEST_IMAGES = 360
UCI_SPLIT_SEED = 0
# The held-out part of a training split is drawn with this seed, whatever the run's seed.
HOLDOUT_SEED = 1234
# How long to wait for a dataset mirror before deciding there is no network (seconds).
NETWORK_PROBE_TIMEOUT = 3.0
DOWNLOAD_SOCKET_TIMEOUT = 20.0


class DataUnavailableError(RuntimeError):
    """A dataset that is neither on disk nor downloadable; the message says where we looked and what to do."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason  # why the files are missing, short enough for a one-line log message


@dataclass
class DigitSplit:
    images: torch.Tensor  # uint8 (N, 28, 28), ink bright on dark
    labels: torch.Tensor  # int64 (N,)
    dataset: str  # "mnist" | "fashion-mnist" | "uci-digits"
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, limit: int | None) -> "DigitSplit":
        """The first `limit` examples (all of them for None): quick runs and tests."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise ValueError(f"a dataset limit must be at least 1, got {limit}")
        return DigitSplit(self.images[:limit], self.labels[:limit], self.dataset, self.classes)


def load_split(
    dataset: str, train: bool, data_dir: str | os.PathLike | None = None, download: bool = True
) -> DigitSplit:
    """One split of one dataset, decoded into memory. Raises DataUnavailableError."""
    if dataset == "uci-digits":
        return _load_uci_digits(train)
    if dataset not in _TORCHVISION_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return _load_torchvision(dataset, train, resolve_data_dir(data_dir), download)


def load_train_test(
    dataset: str = AUTO, data_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[DigitSplit, DigitSplit]:
    """Training and test splits; "auto" is MNIST when available, else the UCI digits (one log line)."""
    if dataset != AUTO:
        return load_split(dataset, True, data_dir, download), load_split(dataset, False, data_dir, download)
    try:
        return load_split("mnist", True, data_dir, download), load_split("mnist", False, data_dir, download)
    except DataUnavailableError as exc:
        log.warning(
            "MNIST is not in %s and could not be downloaded (%s); training on the UCI digits "
            "from scikit-learn instead (1,797 8x8 scans rescaled to 28x28). Use --dataset mnist "
            "to require MNIST.",
            _raw_folder("mnist", resolve_data_dir(data_dir)),
            exc.reason,
        )
        return load_split("uci-digits", True), load_split("uci-digits", False)


def ensure_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The data folder once MNIST's four IDX files are in it, downloaded there the way training does.

    For callers that read the files themselves (the tests, the benchmarks) rather than through
    load_split. Raises DataUnavailableError, whose one line says where it looked and how to
    provide the files.
    """
    root = resolve_data_dir(data_dir)
    if not missing_mnist_files(root):
        return root
    cls = _torchvision_class("mnist")
    reason = _download(cls, "mnist", root) if download else "downloading is disabled"
    still_missing = missing_mnist_files(root)
    if still_missing:
        raise _unavailable("mnist", root, cls, reason or f"after the download, {', '.join(still_missing)} still missing")
    return root


def hold_out(split: DigitSplit, count: int, seed: int = HOLDOUT_SEED) -> tuple[DigitSplit, DigitSplit]:
    """(the rest, `count` held-out images): a fixed random part of a training split, never trained on.

    The held-out images fit the temperature and the verdict thresholds after training. The seed is
    the split's, not the run's, so every run of a model holds out the same images.
    """
    if not 0 < count < len(split):
        raise ValueError(f"cannot hold out {count} of {len(split)} training images: need 0 < count < {len(split)}")
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:count].sort().values, order[count:].sort().values
    return (
        DigitSplit(split.images[kept], split.labels[kept], split.dataset, list(split.classes)),
        DigitSplit(split.images[held], split.labels[held], split.dataset, list(split.classes)),
    )


# --- MNIST and Fashion-MNIST through torchvision ---------------------------------------------

def _torchvision_class(dataset: str):
    from torchvision import (
        datasets,  # imported late: only the datasets that need it pay for it
    )

    return getattr(datasets, _TORCHVISION_CLASSES[dataset])


_TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _raw_folder(dataset: str, root: Path) -> Path:
    # torchvision's layout: ROOT/<ClassName>/raw/<idx files>.
    return root / _TORCHVISION_CLASSES[dataset] / "raw"


def _load_torchvision(dataset: str, train: bool, root: Path, download: bool) -> DigitSplit:
    cls = _torchvision_class(dataset)
    try:
        ds = cls(root=str(root), train=train, download=False)
    except RuntimeError:
        ds = None  # not on disk (torchvision says "Dataset not found")
    if ds is None:
        if download:
            reason = _download(cls, dataset, root) or "the download finished but the files are still missing"
        else:
            reason = "downloading is disabled"
        try:
            ds = cls(root=str(root), train=train, download=False)
        except RuntimeError:
            raise _unavailable(dataset, root, cls, reason) from None
    classes = DIGIT_LABELS if dataset == "mnist" else list(cls.classes)
    return DigitSplit(ds.data.contiguous(), ds.targets.to(torch.int64), dataset, classes)


def _download(cls, dataset: str, root: Path) -> str:
    """Try to download; returns why the files are still missing (empty when the download worked)."""
    probe_urls = tuple(f"{mirror}{cls.resources[0][0]}" for mirror in cls.mirrors)
    if not _network_reachable(probe_urls):
        return f"no network: none of {', '.join(_hosts(probe_urls))} answered within {NETWORK_PROBE_TIMEOUT:g} s"
    log.info("downloading %s into %s", dataset, _raw_folder(dataset, root))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT)  # torchvision's urlopen has no timeout of its own
    try:
        cls(root=str(root), train=True, download=True)
    except Exception as exc:  # urllib, socket and checksum failures all mean "still not there"
        return f"download failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
    finally:
        socket.setdefaulttimeout(previous)
    return ""


def _hosts(urls: tuple[str, ...]) -> list[str]:
    return [urlparse(url).hostname or url for url in urls]


@functools.lru_cache(maxsize=None)
def _network_reachable(urls: tuple[str, ...], timeout: float = NETWORK_PROBE_TIMEOUT) -> bool:
    """Whether any of `urls` answers a HEAD request successfully, decided within `timeout` s in all.

    A plain TCP connection is not proof (sandboxes and proxies accept connections they cannot
    serve), so this asks for the first file. Name resolution ignores socket timeouts and can hang
    on an offline machine, so the probe runs in a daemon thread that we stop waiting for. The
    answer is kept for the process: the train and test splits should not each wait for it.
    """
    reachable = threading.Event()

    def probe() -> None:
        for url in urls:
            try:
                request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "digit-zoo"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if response.status < 400:
                        reachable.set()
                        return
            except (OSError, ValueError):  # URLError, HTTPError, timeouts, malformed answers
                continue

    threading.Thread(target=probe, name="dataset-network-probe", daemon=True).start()
    return reachable.wait(timeout)


def _unavailable(dataset: str, root: Path, cls, reason: str) -> DataUnavailableError:
    raw = _raw_folder(dataset, root)
    names = ", ".join(name.removesuffix(".gz") for name, _ in cls.resources)
    return DataUnavailableError(
        f"{dataset} not found in {raw.resolve()} ({reason}). Provide the files: either run once with a "
        f"network so they download there, or copy the four uncompressed IDX files ({names}) into "
        f"{raw}, or set ${DATA_DIR_ENV} (or --data-dir) to the folder that contains "
        f"{_TORCHVISION_CLASSES[dataset]}/raw.",
        reason,
    )


# --- UCI digits (scikit-learn), rescaled to MNIST's format -------------------------------------

_uci_cache: dict[bool, DigitSplit] = {}


def _load_uci_digits(train: bool) -> DigitSplit:
    if train not in _uci_cache:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = uci_scans_to_mnist_format(digits.images)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        train_idx, test_idx = train_test_split(
            torch.arange(len(labels)).numpy(),
            test_size=UCI_TEST_IMAGES,
            stratify=labels.numpy(),
            random_state=UCI_SPLIT_SEED,
        )
        for is_train, idx in ((True, train_idx), (False, test_idx)):
            idx = torch.as_tensor(idx)
            _uci_cache[is_train] = DigitSplit(images[idx].contiguous(), labels[idx].contiguous(), "uci-digits", DIGIT_LABELS)
    split = _uci_cache[train]
    # Callers may modify their copy; the cache stays as decoded.
    return DigitSplit(split.images.clone(), split.labels.clone(), split.dataset, list(split.classes))


def uci_scans_to_mnist_format(scans: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) UCI scans, ink counts 0-16 -> (N, 28, 28) uint8 in MNIST's format, as the server makes it.

    Each scan becomes the 8-bit grayscale picture a client would send, then goes through the
    serving pipeline's own conversion (contracts.images.preprocess), so a model trained on these
    digits sees exactly what the server feeds it for such a picture.
    """
    pixels_uint8 = to_uint8(np.asarray(scans, dtype=np.float32) / UCI_INK_LEVELS)
    digits = np.stack([to_mnist_format(to_unit_float(scan)) for scan in pixels_uint8])
    return torch.from_numpy(to_uint8(digits))


# --- Batches straight from memory ---------------------------------------------------------------

class InMemoryLoader:
    """Batches of (normalised pixels, labels) cut from a decoded split: a fast DataLoader stand-in.

    The uint8 images move to `device` once; each batch is one index into them, a float conversion
    and the model's preprocessing, all on whole batches. With `shuffle`, every pass draws a new
    permutation from `generator`, so a seed fixes the order of every epoch.
    """

    def __init__(
        self,
        split: DigitSplit,
        preprocessing: Preprocessing,
        batch_size: int,
        *,
        shuffle: bool = False,
        max_shift: int = 0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        augment: Augmentation | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        augment = augment if augment is not None and augment.active else None
        if (shuffle or max_shift or augment) and generator is None:
            raise ValueError("shuffling and random augmentations need a torch.Generator, so that runs are reproducible")
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_shift = max_shift
        self.generator = generator
        self.device = torch.device(device)
        self.augment = augment

    def __len__(self) -> int:
        return -(-int(self.images.shape[0]) // self.batch_size)

    def __iter__(self):
        count = int(self.images.shape[0])
        order = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        order = order.to(self.device)
        for start in range(0, count, self.batch_size):
            indices = order[start : start + self.batch_size]
            yield self.batch_of(self.images[indices]), self.labels[indices]

    def batch_of(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 28, 28) -> the model's normalised input, shifted and augmented as configured."""
        if self.max_shift:
            images = random_shift(images, self.max_shift, self.generator)
        pixels = self.preprocessing.pixels(images)
        if self.augment is not None:
            pixels = self.augment(pixels, self.generator)
        return self.preprocessing.normalise(pixels)


class OutlierBatches:
    """Endless batches of non-digit images for outlier exposure, drawn at random from a pool.

    They go through the digits' own shifts, augmentations and preprocessing (`InMemoryLoader.batch_of`),
    so position, stroke and blur never tell a non-digit from a digit.
    """

    def __init__(self, pool: torch.Tensor, digits: InMemoryLoader, batch_size: int):
        if batch_size < 1 or len(pool) == 0:
            raise ValueError(f"outlier batches need a non-empty pool and a batch size >= 1, got {len(pool)} and {batch_size}")
        self.pool = pool.to(digits.device)
        self.digits = digits
        self.batch_size = batch_size

    def draw(self) -> torch.Tensor:
        indices = torch.randint(0, len(self.pool), (self.batch_size,), generator=self.digits.generator)
        return self.digits.batch_of(self.pool[indices.to(self.pool.device)])


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each (N, H, W) image by its own random offset of up to `max_shift` pixels each way.

    Pixels that move in are background (0). One flat gather for the whole batch, on the uint8
    images before they are converted: the padded batch is read at a per-image offset.
    """
    n, height, width = images.shape
    padded_width = width + 2 * max_shift
    padded = torch.nn.functional.pad(images, (max_shift,) * 4).reshape(n, -1)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device)[:, None] * padded_width
    window = (rows + torch.arange(width, device=images.device)).reshape(1, -1)  # (1, H * W)
    return padded.gather(1, window + (offsets[0] * padded_width + offsets[1])[:, None]).reshape(n, height, width)
