"""MNIST's digit format: the one definition that training, export, serving and the benchmarks share.

A digit is a ``DIGIT_SIZE`` x ``DIGIT_SIZE`` field of values in ``VALUE_RANGE``, ink bright (1) on a
dark background (0). The ink's bounding box is scaled so that its longer side is ``DIGIT_BOX``
pixels (aspect ratio kept) and placed so that the ink's centre of mass lies at
(``DIGIT_CENTRE``, ``DIGIT_CENTRE``). A model whose input is larger (LeNet-5's 32x32) gets the
digit padded with background. Stored digits (MNIST's IDX files, training tensors, raw pixels on
the wire) are uint8, 0-255 standing for 0-1.

How an arbitrary picture is brought to this format is contracts.images.preprocess; this module only
says what the format is. numpy only: the server imports it without torch, and zoo imports it too.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DIGIT_SIZE = 28
DIGIT_SHAPE = (DIGIT_SIZE, DIGIT_SIZE)
DIGIT_BOX = 20
# Row and column of the ink's centre of mass, in pixel-index coordinates (pixel i's centre is at i).
# Measured on MNIST's 60,000 training digits: mean (13.996, 14.007), median (13.991, 14.011);
# the 10,000 test digits give (13.993, 14.008). So 14.0, not the field's geometric middle 13.5.
DIGIT_CENTRE = 14.0
VALUE_RANGE = (0.0, 1.0)  # background, full ink
UINT8_MAX = 255
_UINT8_SCALE = np.float32(UINT8_MAX)


def fit_longer_side(height: int, width: int, longer_side: int = DIGIT_BOX) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is `longer_side`, aspect kept, no side below 1."""
    scale = longer_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    """(row, column) of a non-blank (H, W) image's centre of mass, in pixel-index coordinates."""
    mass = float(ink.sum())
    if mass <= 0.0:
        raise ValueError("a blank image has no centre of mass")
    rows = np.arange(ink.shape[0], dtype=np.float64)
    columns = np.arange(ink.shape[1], dtype=np.float64)
    return float(ink.sum(axis=1) @ rows) / mass, float(ink.sum(axis=0) @ columns) / mass


def check_fits(height: int, width: int) -> None:
    """Raise ValueError unless a height x width digit fits the field."""
    if height > DIGIT_SIZE or width > DIGIT_SIZE:
        raise ValueError(f"a {height}x{width} digit does not fit a {DIGIT_SIZE}x{DIGIT_SIZE} field; scale it first")


def placement(row_centre: float, column_centre: float, height: int, width: int) -> tuple[int, int]:
    """(top, left) that puts a height x width digit's centre of mass at DIGIT_CENTRE in the field.

    Rounded half up (not Python's round-half-even) so that equal inputs shift the same way
    everywhere; clamped so that a lopsided digit stays whole inside the field rather than cut.
    """
    check_fits(height, width)
    top = min(max(math.floor(DIGIT_CENTRE - row_centre + 0.5), 0), DIGIT_SIZE - height)
    left = min(max(math.floor(DIGIT_CENTRE - column_centre + 0.5), 0), DIGIT_SIZE - width)
    return top, left


def padding_for(input_size: Sequence[int], digit_size: int = DIGIT_SIZE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) background pixels around the digit for a model's (H, W) input.

    Split evenly, any odd pixel at the bottom or right: 2 on each side for LeNet-5's 32x32.
    """
    height, width = int(input_size[0]), int(input_size[1])
    if height < digit_size or width < digit_size:
        raise ValueError(
            f"model input size {height}x{width} is smaller than the {digit_size}x{digit_size} "
            "MNIST digit; this format serves MNIST-format classifiers only"
        )
    top, left = (height - digit_size) // 2, (width - digit_size) // 2
    return top, height - digit_size - top, left, width - digit_size - left


def pad_to_input_size(digits: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """float32 (..., 28, 28) digits -> a new float32 (..., H, W) array, padded with background (0)."""
    top, bottom, left, right = padding_for(input_size)
    *leading, height, width = np.shape(digits)
    if height != DIGIT_SIZE or width != DIGIT_SIZE:
        raise ValueError(f"digits must be {DIGIT_SIZE}x{DIGIT_SIZE}, got shape {np.shape(digits)}")
    # Zeros and one slice assignment: several times faster than np.pad on one small digit.
    padded = np.zeros((*leading, top + DIGIT_SIZE + bottom, left + DIGIT_SIZE + right), dtype=np.float32)
    padded[..., top : top + DIGIT_SIZE, left : left + DIGIT_SIZE] = digits
    return padded


def to_unit_float(pixels_uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in VALUE_RANGE (value / 255)."""
    pixels = np.array(pixels_uint8, dtype=np.float32)
    pixels /= _UINT8_SCALE
    return pixels


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Values in VALUE_RANGE -> uint8 0-255, rounded to the nearest level (values outside are clipped)."""
    scaled = np.asarray(pixels, dtype=np.float32) * _UINT8_SCALE
    return np.clip(np.rint(scaled), 0, UINT8_MAX).astype(np.uint8)


def pixels_from_uint8(digits_uint8: np.ndarray, input_size: Sequence[int] = DIGIT_SHAPE) -> np.ndarray:
    """uint8 (N, 28, 28) digits -> the float32 (N, 1, H, W) "pixels" a classifier of that input size takes.

    Divides straight into the padded buffer: for a request of thousands of raw digits that saves a
    full-size temporary over converting first and padding after.
    """
    digits_uint8 = np.asarray(digits_uint8)
    if digits_uint8.ndim != 3 or digits_uint8.shape[1:] != DIGIT_SHAPE:
        raise ValueError(f"digits must be uint8 (N, {DIGIT_SIZE}, {DIGIT_SIZE}), got shape {digits_uint8.shape}")
    top, bottom, left, right = padding_for(input_size)
    count = len(digits_uint8)
    if not (top or bottom or left or right):
        return to_unit_float(digits_uint8).reshape(count, 1, DIGIT_SIZE, DIGIT_SIZE)
    height, width = top + DIGIT_SIZE + bottom, left + DIGIT_SIZE + right
    pixels = np.zeros((count, 1, height, width), dtype=np.float32)
    window = pixels[:, 0, top : top + DIGIT_SIZE, left : left + DIGIT_SIZE]
    np.divide(digits_uint8, _UINT8_SCALE, out=window, dtype=np.float32)
    return pixels
