"""The digit format: its numbers against MNIST itself, and each small function on worked examples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contracts.digit_format import (
    DIGIT_BOX,
    DIGIT_CENTRE,
    DIGIT_SIZE,
    centre_of_mass,
    fit_longer_side,
    pad_to_input_size,
    padding_for,
    pixels_from_uint8,
    placement,
    to_uint8,
    to_unit_float,
)
from contracts import digit_format
from contracts.mnist_idx import read_idx_images


@pytest.fixture(scope="module")
def mnist_train_images(mnist_root) -> np.ndarray:
    return read_idx_images(Path(mnist_root) / "MNIST" / "raw" / "train-images-idx3-ubyte")


def test_the_centre_is_where_mnist_training_digits_have_their_centre_of_mass(mnist_train_images):
    images = mnist_train_images.astype(np.float64)
    mass = images.sum(axis=(1, 2))
    grid = np.arange(DIGIT_SIZE, dtype=np.float64)
    rows, columns = images.sum(axis=2) @ grid / mass, images.sum(axis=1) @ grid / mass
    # Measured: (13.996, 14.007) over the 60,000 digits; the field's middle, 13.5, is half a pixel off.
    assert abs(rows.mean() - DIGIT_CENTRE) < 0.02 and abs(columns.mean() - DIGIT_CENTRE) < 0.02
    assert abs(rows.mean() - (DIGIT_SIZE - 1) / 2) > 0.45


def test_mnist_training_digits_fill_the_box(mnist_train_images):
    inked = mnist_train_images[:5000] > 0
    heights, widths = inked.any(axis=2).sum(axis=1), inked.any(axis=1).sum(axis=1)
    longer = np.maximum(heights, widths)
    assert longer.max() == DIGIT_BOX and (longer == DIGIT_BOX).mean() > 0.99


def test_centre_of_mass_in_pixel_index_coordinates():
    ink = np.zeros((5, 4), np.float32)
    ink[1, 0] = 1.0
    ink[3, 3] = 3.0
    assert centre_of_mass(ink) == pytest.approx((2.5, 2.25))
    with pytest.raises(ValueError, match="blank"):
        centre_of_mass(np.zeros((3, 3)))


@pytest.mark.parametrize(("shape", "longer_side", "expected"),
                         [((200, 100), 20, (20, 10)), ((5, 3), 20, (20, 12)), ((1, 300), 20, (1, 20)), ((8, 6), 160, (160, 120))])
def test_fit_longer_side_keeps_the_aspect(shape, longer_side, expected):
    assert fit_longer_side(*shape, longer_side) == expected


def test_placement_moves_the_centre_of_mass_to_the_centre_rounding_half_up_and_clamping():
    assert placement(9.5, 9.5, 20, 20) == (5, 5)  # 14 - 9.5 = 4.5 rounds up
    assert placement(0.0, 19.0, 20, 20) == (8, 0)  # clamped: the digit stays whole in the field
    with pytest.raises(ValueError, match="does not fit"):
        placement(1.0, 1.0, 29, 3)


def test_padding_splits_evenly_with_the_odd_pixel_at_the_bottom_right():
    assert padding_for((28, 28)) == (0, 0, 0, 0)
    assert padding_for((32, 32)) == (2, 2, 2, 2)
    assert padding_for((31, 33)) == (1, 2, 2, 3)
    with pytest.raises(ValueError, match="smaller than the 28x28"):
        padding_for((24, 32))


def test_pad_to_input_size_surrounds_the_digit_with_background():
    digits = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    padded = pad_to_input_size(digits, (32, 32))
    assert padded.shape == (3, 32, 32) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], digits)
    assert padded.sum() == pytest.approx(digits.sum())
    same_size = pad_to_input_size(digits[0], (28, 28))
    np.testing.assert_array_equal(same_size, digits[0])
    assert same_size is not digits[0]
    with pytest.raises(ValueError, match="must be 28x28"):
        pad_to_input_size(np.zeros((20, 20), np.float32), (32, 32))


def test_uint8_conversions_are_exact_inverses_on_every_level():
    levels = np.arange(256, dtype=np.uint8)
    unit = to_unit_float(levels)
    assert unit.dtype == np.float32 and unit[0] == digit_format.VALUE_RANGE[0] and unit[-1] == digit_format.VALUE_RANGE[1]
    np.testing.assert_array_equal(to_uint8(unit), levels)
    np.testing.assert_array_equal(to_uint8(np.array([-0.2, 0.499 / 255, 0.501 / 255, 1.7])), [0, 0, 1, 255])


@pytest.mark.parametrize("input_size", [(28, 28), (32, 32)])
def test_pixels_from_uint8_is_the_model_input_of_stored_digits(input_size):
    digits = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    pixels = pixels_from_uint8(digits, input_size)
    assert pixels.shape == (4, 1, *input_size) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels[:, 0], pad_to_input_size(to_unit_float(digits), input_size))
    with pytest.raises(ValueError, match="uint8 \\(N, 28, 28\\)"):
        pixels_from_uint8(digits[0], input_size)
