"""Encoded pictures of MNIST digits as users send them, for the preprocessing benchmark and the tests.

Each kind renders a 28x28 test digit the way one kind of client would: the digit itself as a PNG,
a photo of a digit drawn on paper (grain, uneven lighting, dust), the drawing page's canvas (thick
round strokes, opaque white), strokes on a transparent canvas (a drawing app's export), a
phone's colour JPEG and a camera's full frame with the digit small in the middle. Deterministic: the same digit and seed give the same bytes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

PHOTO_SIDE = 600
CANVAS_SIDE = 280  # the drawing page's canvas (serve/api/page/index.html)
PHONE_SIZE = (1600, 1200)  # width, height
CAMERA_SIZE = (2000, 1500)  # width, height: a phone camera's full frame
CAMERA_DIGIT_SIDE = 300


@dataclass(frozen=True)
class ImageKind:
    id: str  # stable: results and targets are keyed by it
    name: str  # the display text
    render: Callable[[np.ndarray, int], bytes]  # (28x28 uint8 light-on-dark digit, seed) -> file bytes


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _enlarged(digit_uint8: np.ndarray, side: int) -> np.ndarray:
    """The digit scaled to side x side, ink 0-1 (bicubic, as a pen's soft edge)."""
    enlarged = Image.fromarray(digit_uint8).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(enlarged, dtype=np.float32) / 255.0


def _paper(height: int, width: int, rng: np.random.Generator, grain: float, shadow: float) -> np.ndarray:
    """White-ish paper lit from one corner (`shadow` darker at the far one), with Gaussian grain."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    columns = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    lighting = 0.9 - shadow * (0.6 * rows + 0.4 * columns)
    return lighting + rng.normal(0.0, grain, (height, width)).astype(np.float32)


def _dust(picture: np.ndarray, rng: np.random.Generator, count: int) -> None:
    rows, columns = rng.integers(0, picture.shape[0], count), rng.integers(0, picture.shape[1], count)
    picture[rows, columns] = rng.uniform(0.05, 0.3, count)


def mnist_png(digit_uint8: np.ndarray, seed: int) -> bytes:
    """The 28x28 digit itself, dark on white (the polarity a user's file has)."""
    return encode(Image.fromarray(255 - digit_uint8), "PNG")


def paper_photo_png(digit_uint8: np.ndarray, seed: int) -> bytes:
    """A 600x600 grayscale photo: the digit 360 px tall in dark ink on grainy, unevenly lit paper."""
    rng = np.random.default_rng(seed)
    picture = _paper(PHOTO_SIDE, PHOTO_SIDE, rng, grain=0.02, shadow=0.1)
    ink = np.zeros_like(picture)
    ink[110:470, 130:490] = _enlarged(digit_uint8, 360)
    picture *= 1.0 - 0.8 * ink  # ink absorbs 80% of the light wherever it lies
    _dust(picture, rng, 12)
    return encode(Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8)), "PNG")


def page_canvas_png(digit_uint8: np.ndarray, seed: int) -> bytes:
    """What the drawing page sends: 280x280 RGBA, opaque white, thick black strokes (pen 280/13 px)."""
    strokes = Image.fromarray(digit_uint8).resize((CANVAS_SIDE, CANVAS_SIDE), Image.Resampling.BILINEAR)
    strokes = strokes.filter(ImageFilter.MaxFilter(9)).point(lambda value: 255 if value > 96 else 0)
    rgba = np.full((CANVAS_SIDE, CANVAS_SIDE, 4), 255, dtype=np.uint8)
    rgba[..., :3] -= np.asarray(strokes)[..., None]
    return encode(Image.fromarray(rgba), "PNG")


def transparent_canvas_png(digit_uint8: np.ndarray, seed: int) -> bytes:
    """A drawing app's export: 280x280 black strokes whose opacity is the ink, transparent elsewhere."""
    rgba = np.zeros((CANVAS_SIDE, CANVAS_SIDE, 4), dtype=np.uint8)
    rgba[..., 3] = np.round(_enlarged(digit_uint8, CANVAS_SIDE) * 255).astype(np.uint8)
    return encode(Image.fromarray(rgba), "PNG")


def phone_photo_jpeg(digit_uint8: np.ndarray, seed: int) -> bytes:
    """A 1600x1200 colour phone photo (JPEG quality 85): blue ink on warm paper, digit 500 px tall."""
    rng = np.random.default_rng(seed)
    width, height = PHONE_SIZE
    luminance = _paper(height, width, rng, grain=0.005, shadow=0.05)  # phones denoise
    ink = np.zeros_like(luminance)
    ink[350:850, 550:1050] = _enlarged(digit_uint8, 500)
    paper_colour = np.array([1.0, 0.96, 0.88], dtype=np.float32)  # warm indoor light
    ink_colour = np.array([0.15, 0.2, 0.55], dtype=np.float32)  # a blue ballpoint
    colour = paper_colour + ink[..., None] * (ink_colour - paper_colour)
    rgb = np.clip(luminance[..., None] * colour, 0, 1)
    return encode(Image.fromarray(np.round(rgb * 255).astype(np.uint8)), "JPEG", quality=85)


def camera_photo_jpeg(digit_uint8: np.ndarray, seed: int) -> bytes:
    """A camera's full 2000x1500 frame (JPEG quality 90): a pen digit 300 px tall in the middle of a
    sheet, lit from one side, a hand's soft shadow over one corner and the dark table along one edge."""
    rng = np.random.default_rng(seed)
    width, height = CAMERA_SIZE
    luminance = _paper(height, width, rng, grain=0.01, shadow=0.25)
    rows, columns = np.indices((height, width), dtype=np.float32)
    corner_distance = np.hypot(rows / height, columns / width - 1.0)  # from the top right corner
    luminance *= 1.0 - 0.35 * np.clip((0.6 - corner_distance) / 0.2, 0.0, 1.0)  # the hand's shadow
    ink = np.zeros_like(luminance)
    top, left = (height - CAMERA_DIGIT_SIDE) // 2, (width - CAMERA_DIGIT_SIDE) // 2
    ink[top : top + CAMERA_DIGIT_SIDE, left : left + CAMERA_DIGIT_SIDE] = _enlarged(digit_uint8, CAMERA_DIGIT_SIDE)
    luminance *= 1.0 - 0.75 * ink
    luminance[:, : width // 20] = 0.12  # the table beyond the sheet's left edge
    paper_colour = np.array([0.98, 0.95, 0.86], dtype=np.float32)
    rgb = np.clip(luminance[..., None] * paper_colour, 0, 1)
    return encode(Image.fromarray(np.round(rgb * 255).astype(np.uint8)), "JPEG", quality=90)


KINDS: tuple[ImageKind, ...] = (
    ImageKind("mnist_png", "mnist 28x28 png", mnist_png),
    ImageKind("paper_photo", "paper photo 600x600 png", paper_photo_png),
    ImageKind("page_canvas", "page canvas 280x280 rgba png", page_canvas_png),
    ImageKind("transparent_canvas", "transparent canvas 280x280 png", transparent_canvas_png),
    ImageKind("phone_photo", "phone photo 1600x1200 jpeg", phone_photo_jpeg),
    ImageKind("camera_photo", "camera photo 2000x1500 jpeg", camera_photo_jpeg),
)
