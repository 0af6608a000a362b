"""The generated real-looking inputs: deterministic, decodable by the server within its default limits,
the digit kinds still showing their digit, the non-digit kinds showing none."""
from __future__ import annotations

import string

import cv2
import numpy as np
import pytest

from contracts.images.decode import ImageLimits, decode_image
from contracts.mnist_idx import load_mnist_test
from harness.real_inputs import (
    ALL_KINDS,
    DIGIT_KINDS,
    EXCLUDED_GLYPHS,
    NON_DIGIT_GLYPHS,
    NON_DIGIT_KINDS,
    kind_by_id,
    real_input_set,
    render,
)
from harness.real_inputs.surfaces import font_files

SEEDS = range(6)


@pytest.fixture(scope="module")
def mnist_test(mnist_root):
    return load_mnist_test(mnist_root)


def _digit(mnist_test, index: int) -> np.ndarray:
    return mnist_test[0][index]


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda kind: kind.id)
def test_the_same_digit_and_seed_give_the_same_bytes_and_another_seed_other_bytes(kind, mnist_test):
    digit = _digit(mnist_test, 7)
    first = render(kind.id, digit, 11)
    assert render(kind.id, digit.copy(), 11) == first
    if kind.id != "mnist-png":  # the clean reference is the digit itself, whatever the seed
        assert render(kind.id, digit, 12) != first


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda kind: kind.id)
def test_every_kind_decodes_within_the_servers_default_limits(kind, mnist_test):
    limits = ImageLimits()
    for seed in SEEDS:
        data = render(kind.id, _digit(mnist_test, seed), seed)
        assert len(data) <= limits.max_image_bytes
        gray = decode_image(data, limits)
        assert gray.ndim == 2 and min(gray.shape) >= 8 and gray.size <= limits.max_image_pixels


def _ink(kind_id: str, digit: np.ndarray, seed: int) -> np.ndarray:
    """Where the digit's picture differs from the same picture drawn with a blank digit: its ink."""
    limits = ImageLimits()
    written = decode_image(render(kind_id, digit, seed), limits)
    blank = decode_image(render(kind_id, np.zeros_like(digit), seed), limits)
    if blank.std() == 0:  # an empty transparent canvas decodes to one flat level, not to the paper
        return np.abs(written - np.median(written))
    return np.abs(written - blank)


def _shape(ink: np.ndarray) -> np.ndarray:
    """The ink's bounding box, squeezed to 20x20 and blurred: a comparable outline of the shape."""
    rows, columns = np.nonzero(ink > 0.25 * ink.max())
    crop = ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1].astype(np.float32)
    return cv2.GaussianBlur(cv2.resize(crop, (20, 20), interpolation=cv2.INTER_AREA), (0, 0), 1.5)


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first - first.mean(), second - second.mean()
    return float((first * second).sum() / np.sqrt((first * first).sum() * (second * second).sum()))


@pytest.mark.parametrize("kind", DIGIT_KINDS, ids=lambda kind: kind.id)
def test_digit_kinds_draw_the_source_digit_where_their_ink_is(kind, mnist_test):
    images, labels = mnist_test
    own, other = [], []
    for seed in range(10):
        ink = _shape(_ink(kind.id, images[seed], seed))
        own.append(_correlation(ink, _shape(images[seed].astype(np.float32))))
        unlike = next(index for index in range(1000 + seed, len(labels)) if labels[index] != labels[seed])
        other.append(_correlation(ink, _shape(images[unlike].astype(np.float32))))
    # Pen width, slant and perspective change the outline, never beyond recognition: the ink matches
    # its own digit far better than a digit of another class.
    assert min(own) > 0.3, own
    assert np.mean(own) > 0.6 and np.mean(own) > np.mean(other) + 0.4, (own, other)


@pytest.mark.parametrize("kind", NON_DIGIT_KINDS, ids=lambda kind: kind.id)
def test_non_digit_kinds_ignore_the_digit_they_are_given(kind, mnist_test):
    for seed in SEEDS[:3]:
        assert render(kind.id, _digit(mnist_test, seed), seed) == render(kind.id, None, seed)


def test_glyphs_drawn_are_neither_digits_nor_glyphs_that_pass_for_one():
    assert NON_DIGIT_GLYPHS and not set(NON_DIGIT_GLYPHS) & set(string.digits)
    assert not set(NON_DIGIT_GLYPHS) & set(EXCLUDED_GLYPHS)
    assert set("OoIli|SsZzBgq") <= set(EXCLUDED_GLYPHS)
    assert all(digit in string.digits for digit in EXCLUDED_GLYPHS.values())


def test_glyphs_are_never_drawn_in_the_fonts_reserved_for_training():
    assert all(path is None or "dejavu" not in path.lower() for path in font_files())


def test_a_set_has_its_count_per_kind_with_labels_of_the_digits_drawn(mnist_test):
    images, labels = mnist_test
    kinds = ["tablet", "scan-lowres", "noise", "clothing"]
    inputs = list(real_input_set(images, labels, digits_per_kind=3, non_digits_per_kind=2, kinds=kinds, seed=5))
    assert [item.kind_id for item in inputs] == ["tablet"] * 3 + ["scan-lowres"] * 3 + ["noise"] * 2 + ["clothing"] * 2
    for item in inputs:
        if kind_by_id(item.kind_id).has_digit:
            assert item.label == labels[item.source_index]
            assert item.data == render(item.kind_id, images[item.source_index], item.seed)
        else:
            assert item.label is None and item.source_index is None
    assert len({item.source_index for item in inputs[:3]}) == 3  # distinct digits within a kind


def test_a_set_is_reproducible_and_each_kinds_pictures_do_not_depend_on_the_others(mnist_test):
    images, labels = mnist_test

    def pictures(kinds, seed=0):
        return [(item.kind_id, item.data) for item in
                real_input_set(images, labels, digits_per_kind=2, non_digits_per_kind=2, kinds=kinds, seed=seed)]

    both = pictures(["scan-lowres", "noise"])
    assert both == pictures(["scan-lowres", "noise"])
    assert pictures(["noise"]) == [pair for pair in both if pair[0] == "noise"]
    assert pictures(["noise"], seed=1) != pictures(["noise"])


def test_unknown_kinds_and_missing_digits_are_refused_with_the_fix(mnist_test):
    with pytest.raises(KeyError, match="the kinds are"):
        render("photo-of-a-cat", None, 0)
    with pytest.raises(ValueError, match="28x28"):
        render("tablet", None, 0)
