"""What a client sends -> a float32 grayscale image in [0, 1]: an encoded image file, or raw pixels.

Hostile input is the normal case here, so every step is bounded before it costs memory:

1. The encoded size is checked against ``ImageLimits.max_image_bytes``.
2. The format is sniffed from the magic bytes (contracts.images.formats); only PNG, JPEG, BMP, GIF,
   TIFF and WebP reach a decoder, the formats the API documents. Anything else is refused with a
   message naming what it looks like (HEIC, AVIF, base64 text, ...).
3. The width and height are read from the header and checked against
   ``ImageLimits.max_image_pixels`` *before* the pixels are decoded: Pillow's plugin classes parse
   headers lazily, and for the plugins that allocate while opening (GIF, WebP) the size is read
   from the bytes before the plugin runs. A TIFF's tiles are checked the same way. The plugin
   class is constructed directly rather than through ``Image.open`` so that Pillow's own global
   decompression-bomb check (a process-wide setting that warns through the non-thread-safe
   ``warnings`` machinery) does not decide: our per-call limit does. (The GIF, TIFF and WebP
   plugins also call that check themselves; with ``max_image_pixels`` below Pillow's default of
   89 million pixels it never fires, since ours refuses such images first.)
4. Only then are the pixels decoded (truncated files raise here), the EXIF orientation applied
   (phone photos), and the first frame or page (of an animated PNG, GIF or WebP, a multi-page
   TIFF; the others are never read) converted to grayscale with ITU-R 601-2 luma, as Pillow's
   "L" mode does (a colour JPEG stores that luma apart: only it is decoded). 16-bit grayscale
   keeps its precision.
5. Transparency is composited onto the paper the image implies (see ``_implied_paper``).

Every failure is an ``InvalidInput`` or ``TooLarge`` whose message says what to send instead;
no Pillow exception type escapes.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image

from contracts.errors import InvalidInput, TooLarge
from contracts.images.formats import SUPPORTED_FORMATS, identify

# EXIF orientation tag value -> the transpose that shows the image upright (1 = already upright).
_EXIF_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_UINT8_MAX = 255.0
_UINT16_MAX = 65535.0
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Below this coverage the opaque pixels are strokes on a transparent sheet, above it they are paper.
_OPAQUE_PAPER_FRACTION = 0.5
_OPAQUE_ALPHA = 0.5
# JPEGs are decoded at 1/2, 1/4 or 1/8 scale while their longer side stays at least this long: the
# image pipeline brings every picture to at most 512 px (contracts.images.preprocess) before its cleanup.
JPEG_MIN_LONGER_SIDE = 480


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost before it is refused with TooLarge."""

    max_image_bytes: int = 4 * 1024 * 1024  # encoded size
    max_image_pixels: int = 4096 * 4096  # width * height, checked from the header before decoding

    def __post_init__(self) -> None:
        if self.max_image_bytes < 1 or self.max_image_pixels < 1:
            raise ValueError(
                f"image limits must be positive, got max_image_bytes={self.max_image_bytes}, "
                f"max_image_pixels={self.max_image_pixels}"
            )


_DOWNSCALE = "downscale it before sending (a digit needs no more than a few hundred pixels a side)"


def _check_pixel_count(width: int, height: int, limits: ImageLimits, what: str, advice: str = _DOWNSCALE) -> None:
    pixel_count = width * height
    if pixel_count > limits.max_image_pixels:
        raise TooLarge(f"{what} is {width}x{height} = {pixel_count} pixels; the limit is {limits.max_image_pixels}; {advice}")


def _implied_paper(luma: np.ndarray, alpha: np.ndarray) -> float:
    """The grey level transparent pixels stand for: the paper the visible pixels sit on.

    A digit drawn on a transparent canvas (the usual export of an HTML canvas or a drawing app)
    has few opaque pixels, all ink, and transparent RGB values that mean nothing (often black):
    the paper is whatever contrasts with the ink, white behind dark ink, black behind light ink.
    A scanned sheet with transparent margins has mostly opaque pixels, mostly paper: the margins
    continue that paper. A fully transparent image is blank.
    """
    opaque = alpha >= _OPAQUE_ALPHA
    if not opaque.any():
        return 0.0
    # The median: the typical opaque pixel, paper where paper dominates, not pulled by the ink.
    opaque_level = float(np.median(luma[opaque]))
    if opaque.mean() > _OPAQUE_PAPER_FRACTION:
        return opaque_level
    return 1.0 if opaque_level < 0.5 else 0.0


def _has_transparency(image: Image.Image) -> bool:
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def _to_gray(image: Image.Image) -> np.ndarray:
    """Any decoded mode -> float32 (H, W) in [0, 1], transparency composited onto the paper."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale PNG: keep the precision that convert("L") would throw away.
        return (np.asarray(image, dtype=np.float32) / _UINT16_MAX).clip(0.0, 1.0)
    if image.mode == "I":  # how Pillow before 10.? opened 16-bit grayscale PNG
        values = np.asarray(image, dtype=np.float64)
        scale = _UINT16_MAX if values.max(initial=0) <= _UINT16_MAX else float(np.iinfo(np.int32).max)
        return (values / scale).clip(0.0, 1.0).astype(np.float32)
    if not _has_transparency(image):
        return _unit_floats(image if image.mode == "L" else image.convert("L"))
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    alpha_channel = rgba.getchannel("A")
    if alpha_channel.getextrema()[0] == 255:  # opaque throughout, as the drawing page's canvas is
        return _unit_floats(rgba.convert("L"))
    luma, alpha = _unit_floats(rgba.convert("L")), _unit_floats(alpha_channel)
    del rgba, alpha_channel
    # luma * alpha + paper * (1 - alpha), in place: at 16 megapixels each temporary is 64 MiB.
    paper = np.float32(_implied_paper(luma, alpha))
    luma -= paper
    luma *= alpha
    luma += paper
    return np.clip(luma, 0.0, 1.0, out=luma)


def _unit_floats(image_8bit: Image.Image) -> np.ndarray:
    # Straight from the bytes: numpy's array-interface route builds the same bytes, and more besides.
    pixels_uint8 = np.frombuffer(image_8bit.tobytes(), dtype=np.uint8).reshape(image_8bit.height, image_8bit.width)
    return np.divide(pixels_uint8, np.float32(_UINT8_MAX), dtype=np.float32)


def _luma_only(image: Image.Image) -> None:
    """Have a colour JPEG decode its luma alone (libjpeg's grayscale output), and a large one at a
    reduced scale.

    JPEG stores luma (ITU-R 601-2, as Pillow's "L") apart from colour, so the chroma and the
    colour conversion are skipped. libjpeg also scales by 1/2, 1/4 or 1/8 while decoding (from
    the DCT coefficients, an area-like filter) for a fraction of the cost: the smallest of those
    scales that keeps the longer side at least JPEG_MIN_LONGER_SIDE is asked for. The image
    pipeline works at that size anyway, so the digit loses nothing it would have kept.
    """
    if image.format != "JPEG":
        return
    width, height = image.size
    shrink = max(1.0, max(width, height) / JPEG_MIN_LONGER_SIDE)
    # Pillow picks the largest reduction whose result still covers the size asked for.
    image.draft("L", (math.ceil(width / shrink), math.ceil(height / shrink)))


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone cameras store pixels sideways and say so in EXIF).

    Unreadable EXIF leaves the pixels as stored: the metadata is broken, not the image.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # EXIF is a nested binary format of its own; Pillow's parser raises variously
        return image
    method = _EXIF_TRANSPOSES.get(orientation)
    return image if method is None else image.transpose(method)


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Encoded PNG/JPEG/BMP/GIF/TIFF/WebP bytes -> float32 grayscale (H, W) in [0, 1].

    Raises TooLarge when the bytes or the declared pixel count exceed ``limits`` (the pixel count
    is read from the header, before any pixel is decoded) and InvalidInput for empty, corrupt,
    truncated or unsupported data. A blank image is a valid image. Of an animation or a multi-page
    file, only the first frame or page is decoded.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image takes the encoded bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidInput(f"the image is empty (0 bytes); send the bytes of a {SUPPORTED_FORMATS} file")
    if len(data) > limits.max_image_bytes:
        raise TooLarge(
            f"the encoded image is {len(data)} bytes; the limit is {limits.max_image_bytes}; "
            "downscale or compress it before sending"
        )
    image_format = identify(data)
    format_name = image_format.name
    if image_format.size_before_opening is not None:
        _check_pixel_count(*image_format.size_before_opening(data), limits, f"the {format_name} image")
    image = image_format.open(data)
    with image:
        width, height = image.size
        _check_pixel_count(width, height, limits, f"the {format_name} image")
        if image_format.decoding_block is not None:
            block = image_format.decoding_block(image)
            if block is not None:
                _check_pixel_count(*block, limits, f"each tile of the {format_name} image",
                                   "save it in strips or with smaller tiles (256x256 is usual), or as PNG")
        try:
            _luma_only(image)
            image.load()
            return _to_gray(_upright(image))
        except MemoryError as error:
            raise TooLarge(
                f"decoding the {width}x{height} {format_name} image ran out of memory; send a smaller image"
            ) from error
        except Image.DecompressionBombError as error:  # Pillow's own limit, when ours is set above it
            raise TooLarge(f"the {width}x{height} {format_name} image is too large to decode ({error}); "
                           "send a smaller image") from error
        except Exception as error:  # truncated data, bad compressed streams, odd modes: all the sender's
            raise InvalidInput(
                f"corrupt or truncated {format_name} image ({width}x{height}, mode {image.mode}): {error}; "
                f"send a complete, valid {SUPPORTED_FORMATS} file"
            ) from error


def _positive_dimension(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    try:
        size = operator.index(value)
    except TypeError:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}") from None
    if size <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {size}")
    return size


def raw_pixels_to_array(pixels: bytes, height: int, width: int, limits: ImageLimits) -> np.ndarray:
    """Raw uint8 grayscale pixels, row-major, one byte each -> float32 (H, W) in [0, 1]."""
    height = _positive_dimension(height, "height")
    width = _positive_dimension(width, "width")
    _check_pixel_count(width, height, limits, "the raw image")
    if not isinstance(pixels, (bytes, bytearray, memoryview)):
        raise TypeError(f"raw_pixels_to_array takes bytes, got {type(pixels).__name__}")
    pixels_uint8 = np.frombuffer(pixels, dtype=np.uint8)
    expected = height * width
    if pixels_uint8.size != expected:
        raise InvalidInput(
            f"raw pixels for a {height}x{width} image must be {expected} bytes (one uint8 per pixel, "
            f"row-major), got {pixels_uint8.size}; check height, width and that the pixels are 8-bit grayscale"
        )
    return pixels_uint8.reshape(height, width).astype(np.float32) / np.float32(_UINT8_MAX)
