"""The inputs parity is proven on: random batches of several sizes, and a whole labelled test split.

Each case carries the torch outputs for its inputs (computed once, reused for every provider and
every variant of the file) and a way to name one of its items in a failure message.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from contracts.data_dir import resolve_data_dir
from export.graphs import reference_outputs
from export.parity import InputCase
from export.source import ExportSource
from zoo.data import DataUnavailableError, DigitSplit, load_split

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 7, 64)
# Feature-map graphs have dynamic height and width: square, wide, tall, and the smallest image
# the default 1x2 kernel fits (sizes a model's kernel does not fit are skipped).
FEATURE_MAP_SIZES = ((28, 28), (5, 9), (48, 17), (1, 2))
DATASET_CHUNK = 1000
PARITY_DATASET = "mnist"


def random_cases(source: ExportSource, seed: int = 0) -> list[InputCase]:
    """Uniform [0, 1] batches of 1, 7 and 64 (and, for feature-map models, of several image sizes)."""
    rng = np.random.default_rng(seed)
    sizes = [tuple(source.preprocessing.input_size)] if source.spec.is_classifier else list(FEATURE_MAP_SIZES)
    cases = []
    for height, width in sizes:
        for batch in BATCH_SIZES:
            inputs = rng.random((batch, 1, height, width), dtype=np.float32)
            description = f"random batch of {batch} ({height}x{width})"
            try:
                reference = reference_outputs(source, inputs)
            except (ValueError, RuntimeError) as exc:  # the kernel is larger than the image
                log.debug("no parity case of %dx%d images for %s: %s", height, width, source.name, exc)
                break
            cases.append(InputCase(description, inputs, reference, _item_namer(description)))
    return cases


def _item_namer(description: str):
    return lambda index: f"item {index} of the {description}"


def dataset_cases(source: ExportSource, split: DigitSplit, chunk: int = DATASET_CHUNK) -> list[InputCase]:
    """The whole split in chunks, as the graph sees it: pixels in [0, 1], padded to the input size."""
    cases = []
    for start in range(0, len(split), chunk):
        stop = min(start + chunk, len(split))
        inputs = source.preprocessing.pixels(split.images[start:stop]).numpy()
        cases.append(
            InputCase(
                f"{split.dataset} test images {start}-{stop - 1}",
                inputs,
                reference_outputs(source, inputs),
                lambda index, start=start, dataset=split.dataset: f"{dataset} test image #{start + index}",
                split.labels[start:stop].numpy(),
            )
        )
    return cases


def load_test_split(source: ExportSource, data_dir: str | Path | None) -> tuple[DigitSplit | None, str]:
    """The labelled test split for a classifier's parity, and a note saying which one (or why none).

    MNIST's 10,000 test images first. Without them, the split the checkpoint's accuracy was measured
    on (the UCI digits ship with scikit-learn, so they are there offline); else random inputs only.
    Export never downloads: it works from what is on disk.
    """
    root = resolve_data_dir(data_dir)
    try:
        split = load_split(PARITY_DATASET, train=False, data_dir=root, download=False)
        return split, f"{PARITY_DATASET} test split, {len(split)} images, from {root}"
    except DataUnavailableError as exc:
        missing = f"{PARITY_DATASET} test images are not available ({exc.reason or exc})"
    fallback = source.measured_dataset
    if fallback and fallback != PARITY_DATASET:
        try:
            split = load_split(fallback, train=False, data_dir=root, download=False)
        except DataUnavailableError as exc:
            missing += f"; nor is {fallback}, the checkpoint's test set ({exc.reason or exc})"
        else:
            log.warning("%s: checking parity on %s instead, the split the checkpoint was measured on", missing, fallback)
            return split, f"{fallback} test split, {len(split)} images ({missing})"
    log.warning("%s: parity is checked on RANDOM inputs only. Point --data-dir at the folder holding MNIST/raw.", missing)
    return None, f"random inputs only: {missing}"
