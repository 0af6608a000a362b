"""Digits API images -> the model's pixels: the bulk path equals the per-image path; errors name the image."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contracts.digit_format import to_unit_float
from contracts.errors import InvalidInput, TooLarge
from contracts.generated.digits.v1 import digits_pb2
from contracts.images.preprocess import ImageLimits, prepare_digit
from serve.api.grpc_digits import core_images
from serve.core import digit_inputs
from serve.core.digit_inputs import EncodedImage, RawImage


def raw_image(pixels_uint8: np.ndarray, already_mnist: bool = True) -> RawImage:
    height, width = pixels_uint8.shape
    return RawImage(pixels_uint8.tobytes(), height, width, already_mnist)


def png_bytes(pixels_uint8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels_uint8).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits_uint8() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("input_size", [(28, 28), (32, 32)])
def test_bulk_mnist_path_gives_exactly_what_prepare_digit_gives(digits_uint8, input_size):
    images = [raw_image(d) for d in digits_uint8]
    assert digit_inputs.is_bulk_mnist(images)
    bulk = digit_inputs.images_to_pixels(images, input_size, digit_inputs.RequestLimits())
    expected = np.stack(
        [prepare_digit(to_unit_float(d), already_mnist=True, input_size=input_size) for d in digits_uint8]
    )
    assert bulk.shape == (5, 1, *input_size) and bulk.dtype == np.float32
    np.testing.assert_array_equal(bulk, expected)
    one_by_one = digit_inputs.images_to_pixels_one_by_one(images, input_size, ImageLimits())
    np.testing.assert_array_equal(bulk, one_by_one)


def test_mixed_requests_go_image_by_image(digits_uint8):
    images = [raw_image(digits_uint8[0]), EncodedImage(png_bytes(255 - digits_uint8[1]))]
    assert not digit_inputs.is_bulk_mnist(images)
    pixels = digit_inputs.images_to_pixels(images, (28, 28), digit_inputs.RequestLimits())
    assert pixels.shape == (2, 1, 28, 28)
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0


def test_errors_name_the_image_that_caused_them(digits_uint8):
    images = [raw_image(digits_uint8[0]), raw_image(digits_uint8[1]), EncodedImage(b"not an image")]
    with pytest.raises(InvalidInput, match=r"^image 2: the bytes are not a PNG, JPEG, BMP, GIF, TIFF or WebP image"):
        digit_inputs.images_to_pixels(images, (28, 28), digit_inputs.RequestLimits())


def test_a_wrong_raw_byte_count_in_a_bulk_request_is_named(digits_uint8):
    images = [raw_image(d) for d in digits_uint8[:3]]
    images[1] = RawImage(images[1].pixels[:-1], 28, 28, True)
    with pytest.raises(InvalidInput, match=r"^image 1: raw pixels for a 28x28 image must be 784 bytes"):
        digit_inputs.images_to_pixels(images, (28, 28), digit_inputs.RequestLimits())


def test_image_counts_are_limited():
    limits = digit_inputs.RequestLimits(max_images_per_request=2)
    with pytest.raises(InvalidInput, match="no images"):
        digit_inputs.images_to_pixels([], (28, 28), limits)
    image = raw_image(np.zeros((28, 28), np.uint8))
    with pytest.raises(TooLarge, match="3 images; the limit is 2"):
        digit_inputs.images_to_pixels([image] * 3, (28, 28), limits)


def test_an_image_without_a_source_is_invalid():
    with pytest.raises(InvalidInput, match="neither `encoded` bytes nor `raw` pixels"):
        core_images([digits_pb2.Image()])
