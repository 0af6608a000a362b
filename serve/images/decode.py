"""What a client sends -> a float32 grayscale image in [0, 1]: encoded PNG/JPEG/BMP, or raw pixels.

Hostile input is the normal case here, so every step is bounded before it costs memory:

1. The encoded size is checked against ``ImageLimits.max_image_bytes``.
2. The format is sniffed from the magic bytes; only PNG, JPEG and BMP reach a decoder (the
   formats the API documents; every extra decoder is extra attack surface). Anything else is
   refused with a message naming what it looks like (GIF, WebP, base64 text, ...).
3. The width and height are read from the header (Pillow's plugin classes parse headers lazily)
   and checked against ``ImageLimits.max_image_pixels`` *before* the pixels are decoded. The
   plugin class is constructed directly rather than through ``Image.open`` so that Pillow's own
   global decompression-bomb check (a process-wide setting that warns through the non-thread-safe
   ``warnings`` machinery) never runs: our per-call limit replaces it.
4. Only then are the pixels decoded (truncated files raise here), the EXIF orientation applied
   (phone photos), and the first frame (of an animated PNG) converted to grayscale with ITU-R 601-2 luma, as Pillow's
   "L" mode does. 16-bit grayscale keeps its precision.
5. Transparency is composited onto the paper the image implies (see ``_implied_paper``).

Every failure is an ``InvalidInput`` or ``TooLarge`` whose message says what to send instead;
no Pillow exception or warning type escapes.
"""
from __future__ import annotations

import binascii
import io
import operator
from dataclasses import dataclass

import numpy as np
from PIL import BmpImagePlugin, ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin

from serve.core.errors import InvalidInput, TooLarge

SUPPORTED_FORMATS = "PNG, JPEG or BMP"

# Magic bytes of the formats we decode, and the plugin class that parses each one's header.
_DECODERS: tuple[tuple[bytes, str, type[ImageFile.ImageFile]], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG", PngImagePlugin.PngImageFile),
    (b"\xff\xd8\xff", "JPEG", JpegImagePlugin.JpegImageFile),
    (b"BM", "BMP", BmpImagePlugin.BmpImageFile),
)

# Formats people send by mistake, recognised only to name them in the refusal.
_REFUSED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WebP"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "Photoshop PSD"),
    (0, b"%PDF", "PDF"),
    (0, b"qoif", "QOI"),
    (0, b"P1", "Netpbm"),
    (0, b"P2", "Netpbm"),
    (0, b"P3", "Netpbm"),
    (0, b"P4", "Netpbm"),
    (0, b"P5", "Netpbm"),
    (0, b"P6", "Netpbm"),
)
# base64 of each supported format's magic bytes: a client that sent the text, not the bytes.
_BASE64_PREFIXES = (b"iVBORw0KGgo", b"/9j/", b"Qk")
_DATA_URL_PREFIX = b"data:image/"

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


def _check_pixel_count(width: int, height: int, limits: ImageLimits, what: str) -> None:
    pixel_count = width * height
    if pixel_count > limits.max_image_pixels:
        raise TooLarge(
            f"{what} is {width}x{height} = {pixel_count} pixels; the limit is {limits.max_image_pixels}; "
            "downscale it before sending (a digit needs no more than a few hundred pixels a side)"
        )


def _describe_unsupported(data: bytes) -> str:
    head = data[:16]
    for offset, signature, name in _REFUSED_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return f"{name} images are not supported; convert it to {SUPPORTED_FORMATS} before sending"
    stripped = head.lstrip()
    if stripped.startswith(_DATA_URL_PREFIX) or any(stripped.startswith(p) for p in _BASE64_PREFIXES):
        return (
            "the image bytes look like base64 text (or a data: URL); send the decoded bytes of the "
            f"{SUPPORTED_FORMATS} file itself"
        )
    if stripped.startswith((b"<svg", b"<?xml")):
        return f"SVG images are not supported; rasterise it to {SUPPORTED_FORMATS} before sending"
    return (
        f"the bytes are not a {SUPPORTED_FORMATS} image (they begin with {binascii.hexlify(head, ' ').decode()}); "
        "send the contents of an image file, unchanged"
    )


def _open_header(data: bytes) -> tuple[str, ImageFile.ImageFile]:
    """Parse the header only: the pixels stay undecoded until .load()."""
    for magic, format_name, plugin_class in _DECODERS:
        if data.startswith(magic):
            try:
                return format_name, plugin_class(io.BytesIO(data))
            except Exception as error:  # Pillow signals bad headers with many exception types
                raise InvalidInput(
                    f"corrupt {format_name} image: its header could not be read ({error}); "
                    f"send a complete, valid {SUPPORTED_FORMATS} file"
                ) from error
    raise InvalidInput(_describe_unsupported(data))


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
        return _unit_floats(image.convert("L"))
    rgba = image.convert("RGBA")
    luma, alpha = _unit_floats(rgba.convert("L")), _unit_floats(rgba.getchannel("A"))
    del rgba
    if alpha.min() >= 1.0:
        return luma
    # luma * alpha + paper * (1 - alpha), in place: at 16 megapixels each temporary is 64 MiB.
    paper = np.float32(_implied_paper(luma, alpha))
    luma -= paper
    luma *= alpha
    luma += paper
    return np.clip(luma, 0.0, 1.0, out=luma)


def _unit_floats(image_8bit: Image.Image) -> np.ndarray:
    values = np.array(image_8bit, dtype=np.float32)
    values /= _UINT8_MAX
    return values


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
    """Encoded PNG/JPEG/BMP bytes -> float32 grayscale (H, W) in [0, 1].

    Raises TooLarge when the bytes or the declared pixel count exceed ``limits`` (the pixel count
    is read from the header, before any pixel is decoded) and InvalidInput for empty, corrupt,
    truncated or unsupported data. A blank image is a valid image.
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
    format_name, image = _open_header(data)
    with image:
        width, height = image.size
        _check_pixel_count(width, height, limits, f"the {format_name} image")
        try:
            image.load()
            return _to_gray(_upright(image))
        except MemoryError as error:
            raise TooLarge(
                f"decoding the {width}x{height} {format_name} image ran out of memory; send a smaller image"
            ) from error
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
