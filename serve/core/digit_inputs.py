"""Images of a digits API request -> the float32 N x 1 x H x W "pixels" batch a classifier takes.

The front doors hand over `EncodedImage`s and `RawImage`s, whatever their protocol. Each image is
encoded bytes (decoded and brought to MNIST's format by contracts.images.preprocess) or raw 8-bit
pixels (already in MNIST's format, or converted the same way). The common bulk case, many raw
28 x 28 images flagged already_mnist, is done for the whole request in a few numpy calls; the rest
goes image by image. Errors name the image (by its index in the request) and say what to fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from contracts.digit_format import DIGIT_SIZE, pixels_from_uint8
from contracts.errors import InvalidInput, StatusError, TooLarge
from contracts.images.preprocess import (
    ImageLimits,
    decode_image,
    prepare_digit,
    raw_pixels_to_array,
)


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """The bytes of an image file."""

    data: bytes


@dataclass(frozen=True, slots=True)
class RawImage:
    """8-bit grayscale pixels, row-major, height * width bytes."""

    pixels: bytes
    height: int
    width: int
    # Already in MNIST's format (28 x 28, light ink on dark, 20 px box, centred): only scaled to [0, 1].
    already_mnist: bool = False


@dataclass(frozen=True)
class RequestLimits:
    max_images_per_request: int = 1024
    image: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        if self.max_images_per_request < 1:
            raise ValueError(f"max_images_per_request must be >= 1, got {self.max_images_per_request}")


def check_image_count(count: int, limits: RequestLimits) -> None:
    if count == 0:
        raise InvalidInput("the request carries no images; add at least one image")
    if count > limits.max_images_per_request:
        raise TooLarge(
            f"the request carries {count} images; the limit is {limits.max_images_per_request} per request: "
            "split it into several requests"
        )


def is_bulk_mnist(images: Sequence) -> bool:
    """All raw 28 x 28 pixels flagged already_mnist: the whole request converts in one go."""
    for image in images:
        if type(image) is not RawImage or not image.already_mnist or image.height != DIGIT_SIZE or image.width != DIGIT_SIZE:
            return False
    return True


def bulk_mnist_pixels(images: Sequence, input_size: Sequence[int]) -> np.ndarray | None:
    """Raw already-MNIST images -> N x 1 x H x W, the same values prepare_digit gives, in one pass.

    None when some image has the wrong number of bytes: the per-image path then names it.
    """
    count = len(images)
    joined = b"".join(image.pixels for image in images)
    if len(joined) != count * DIGIT_SIZE * DIGIT_SIZE:
        return None
    return pixels_from_uint8(np.frombuffer(joined, dtype=np.uint8).reshape(count, DIGIT_SIZE, DIGIT_SIZE), input_size)


def image_to_pixels(image: EncodedImage | RawImage, input_size: Sequence[int], limits: ImageLimits) -> np.ndarray:
    """One image -> float32 1 x H x W."""
    if isinstance(image, EncodedImage):
        gray = decode_image(image.data, limits)
        return prepare_digit(gray, already_mnist=False, input_size=tuple(input_size))
    gray = raw_pixels_to_array(image.pixels, image.height, image.width, limits)
    return prepare_digit(gray, already_mnist=image.already_mnist, input_size=tuple(input_size))


def images_to_pixels_one_by_one(images: Sequence, input_size: Sequence[int], limits: ImageLimits) -> np.ndarray:
    height, width = int(input_size[0]), int(input_size[1])
    pixels = np.empty((len(images), 1, height, width), dtype=np.float32)
    for index, image in enumerate(images):
        try:
            pixels[index] = image_to_pixels(image, input_size, limits)
        except StatusError as exc:
            if len(images) == 1:
                raise
            raise type(exc)(f"image {index}: {exc}") from exc
    return pixels


def images_to_pixels(
    images: Sequence, input_size: Sequence[int], limits: RequestLimits, bulk: bool | None = None
) -> np.ndarray:
    """A request's images -> float32 N x 1 x H x W for the model's "pixels" input.

    `bulk`: the caller's is_bulk_mnist(images), when it already knows it.
    """
    check_image_count(len(images), limits)
    if bulk is None:
        bulk = is_bulk_mnist(images)
    if bulk:
        pixels = bulk_mnist_pixels(images, input_size)
        if pixels is not None:
            return pixels
    return images_to_pixels_one_by_one(images, input_size, limits.image)
