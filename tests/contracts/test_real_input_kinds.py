"""Every kind of generated real input, through the image pipeline: the digit drawn is the digit the
model gets, and pages without a digit give the blank digit (which the verdict calls no digit).

Model-free: a prepared picture must match the MNIST test digit it was drawn from better than a digit
of each other class (normalised correlation), which a crop grown past the digit, a shadow or a
ruled line kept as ink, or strokes swollen into blobs all fail.
"""
from __future__ import annotations

import numpy as np
import pytest

from contracts.images.decode import ImageLimits, decode_image
from contracts.images.preprocess import prepare_digit
from contracts.mnist_idx import load_mnist_test
from harness.real_inputs import DIGIT_KINDS, real_input_set

PICTURES_PER_KIND = 10
# Of the ten pictures of a kind, at least this many must be recognisably their own digit.
MIN_MATCHED = 8
DIGIT_KIND_IDS = [kind.id for kind in DIGIT_KINDS]


@pytest.fixture(scope="module")
def mnist(mnist_root):
    return load_mnist_test(mnist_root)


def prepared(data: bytes) -> np.ndarray:
    return prepare_digit(decode_image(data, ImageLimits()), already_mnist=False)[0]


def normalised(pixels: np.ndarray) -> np.ndarray:
    values = pixels.ravel().astype(np.float64)
    values -= values.mean()
    norm = np.linalg.norm(values)
    return values / norm if norm else values


@pytest.mark.parametrize("kind_id", DIGIT_KIND_IDS)
def test_each_kind_of_picture_gives_the_model_its_own_digit(kind_id, mnist):
    images, labels = mnist
    rng = np.random.default_rng(0)
    matched = 0
    for item in real_input_set(images, labels, digits_per_kind=PICTURES_PER_KIND, non_digits_per_kind=0, kinds=[kind_id]):
        digit = normalised(prepared(item.data))
        others = [rng.choice(np.flatnonzero(labels == other)) for other in range(10) if other != item.label]
        similarities = [digit @ normalised(images[index]) for index in [item.source_index, *others]]
        matched += int(np.argmax(similarities) == 0)
    assert matched >= MIN_MATCHED, f"{kind_id}: only {matched} of {PICTURES_PER_KIND} pictures kept their digit"


@pytest.mark.parametrize("kind_id", ["blank-page", "noise"])
def test_pages_without_a_digit_give_the_blank_digit(kind_id, mnist):
    images, labels = mnist
    items = list(real_input_set(images, labels, digits_per_kind=0, non_digits_per_kind=PICTURES_PER_KIND, kinds=[kind_id]))
    blank = sum(int(prepared(item.data).max() == 0.0) for item in items)
    assert blank >= MIN_MATCHED, f"{kind_id}: only {blank} of {len(items)} pictures came out blank"
