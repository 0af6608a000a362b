"""The image formats the digits API accepts, how each is recognised, and what is read of its header
before Pillow may allocate anything for it.

Accepted: PNG (an animated PNG's first frame), JPEG, BMP, GIF (the first frame), TIFF (the first
page) and WebP (an animated WebP's first frame). Every other format is refused with a message that
names it when its signature is known (HEIC, AVIF, JPEG 2000, ...), since every extra decoder is
extra attack surface.

Three plugins need more than Pillow's lazy header parsing to be safe:

- WebP: Pillow's plugin hands the whole file to libwebp's animation decoder when it opens it, and
  that decoder allocates its canvas (twice, RGBA) right away. The canvas size is read here from the
  first chunk (VP8, VP8L or VP8X) so that the pixel limit is applied before the plugin runs.
- GIF: opening parses the first frame's descriptor, whose extent may lie beyond the declared screen
  (the image then grows to hold it) and, with disposal method 2, allocates a frame-sized buffer.
  The screen and the first frame's extent are read here by walking the blocks up to that frame.
- TIFF: the header (the first directory) parses lazily, but libtiff decodes tile by tile into a
  buffer of a whole tile, whose size the file declares apart from the image's: a 16x16 image may
  claim 32768x32768 tiles. The tile size is checked like the image size, and only common
  compressions reach libtiff (old-style JPEG, ThunderScan, SGI LogLuv, LZMA, Zstd and WebP-in-TIFF
  are refused by name).

Frames and pages after the first are never walked: nothing here or in decoding reads ``n_frames``
or seeks, so a file's cost does not grow with its frame count beyond reading its bytes once (which
``ImageLimits.max_image_bytes`` bounds; libwebp indexes an animation's frame headers on open).
"""
from __future__ import annotations

import binascii
import io
import struct
from dataclasses import dataclass
from typing import Callable

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from contracts.errors import InvalidInput, TooLarge

SUPPORTED_FORMATS = "PNG, JPEG, BMP, GIF, TIFF or WebP"

# TIFF compressions decoded (Pillow's names for them): uncompressed, the fax codings scanners use,
# LZW, JPEG, Deflate and PackBits. These cover what scanners, phones and image editors write.
TIFF_COMPRESSIONS = frozenset(
    {"raw", "tiff_ccitt", "group3", "group4", "tiff_lzw", "jpeg", "tiff_adobe_deflate", "tiff_deflate", "packbits"}
)
_TIFF_COMPRESSION_TAG = 259
_TIFF_TILE_WIDTH_TAG = 322
_TIFF_TILE_LENGTH_TAG = 323


@dataclass(frozen=True)
class ImageFormat:
    """One accepted format: its signatures, Pillow's plugin class, and the header checks it needs."""

    name: str
    media_type: str  # what browsers and file pickers call it (the HTTP Content-Type of such a file)
    signatures: tuple[tuple[int, bytes], ...]  # (offset, bytes) pairs that the file's bytes all carry
    plugin: type[ImageFile.ImageFile]
    # (width, height) read from the bytes before the plugin runs, for plugins that allocate on opening.
    size_before_opening: Callable[[bytes], tuple[int, int]] | None = None
    # (width, height) of the largest buffer, besides the image, that decoding the opened file allocates;
    # raises InvalidInput for features that are refused.
    decoding_block: Callable[[ImageFile.ImageFile], tuple[int, int] | None] | None = None

    def matches(self, data: bytes) -> bool:
        return all(data[offset : offset + len(signature)] == signature for offset, signature in self.signatures)

    def open(self, data: bytes) -> ImageFile.ImageFile:
        """The plugin on the bytes, header parsed, pixels not decoded (errors: InvalidInput)."""
        try:
            # The plugin class itself, not Image.open: Pillow's process-wide bomb check (which warns
            # through the non-thread-safe warnings machinery) must not run; the caller's limits apply.
            return self.plugin(io.BytesIO(data))
        except Image.DecompressionBombError as error:  # raised by some plugins' own check
            raise TooLarge(f"the {self.name} image is too large to decode ({error}); send a smaller image") from error
        except Exception as error:  # Pillow signals bad headers with many exception types
            raise InvalidInput(
                f"corrupt {self.name} image: its header could not be read ({error}); "
                f"send a complete, valid {SUPPORTED_FORMATS} file"
            ) from error


def _corrupt(format_name: str, what: str) -> InvalidInput:
    return InvalidInput(f"corrupt {format_name} image: {what}; send a complete, valid {SUPPORTED_FORMATS} file")


def webp_canvas_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a WebP file's canvas, from its first chunk (RIFF container, then VP8/VP8L/VP8X)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)  # the top 2 bits of each are a scaling hint
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise _corrupt("WebP", f"its first chunk ({chunk!r}) is not a readable VP8, VP8L or VP8X header")


def _skip_gif_sub_blocks(data: bytes, position: int) -> int:
    """Position after a chain of GIF data sub-blocks (length byte, bytes; a zero length ends it)."""
    while True:
        if position >= len(data):
            raise _corrupt("GIF", "the file ends inside a block")
        length = data[position]
        position += 1 + length
        if length == 0:
            return position


def gif_first_frame_extent(data: bytes) -> tuple[int, int]:
    """(width, height) that Pillow gives a GIF on opening: the logical screen, grown to hold the first frame."""
    if len(data) < 13:
        raise _corrupt("GIF", "the file ends inside its header")
    screen_width, screen_height, flags = struct.unpack_from("<HHB", data, 6)
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # skip the global colour table
    while position < len(data):
        introducer = data[position]
        if introducer == 0x21:  # an extension: its label, then sub-blocks
            position = _skip_gif_sub_blocks(data, position + 2)
        elif introducer == 0x2C:  # the first image descriptor: left, top, width, height
            if position + 9 > len(data):
                raise _corrupt("GIF", "the file ends inside the first frame's descriptor")
            left, top, width, height = struct.unpack_from("<HHHH", data, position + 1)
            return max(screen_width, left + width), max(screen_height, top + height)
        elif introducer == 0x3B:  # the trailer
            break
        else:
            raise _corrupt("GIF", f"unexpected byte 0x{introducer:02x} where a block should start")
    raise _corrupt("GIF", "it holds no frame")


def tiff_decoding_block(image: ImageFile.ImageFile) -> tuple[int, int] | None:
    """A TIFF's tile size (None when it is in strips), after refusing compressions not decoded."""
    compression = image.info.get("compression", "raw")
    if compression not in TIFF_COMPRESSIONS:
        code = image.tag_v2.get(_TIFF_COMPRESSION_TAG)
        raise InvalidInput(
            f"TIFF images compressed with {compression!r} (compression {code}) are not supported; "
            "save it uncompressed or with LZW, Deflate, PackBits, JPEG or CCITT fax compression, "
            f"or convert it to PNG"
        )
    tile_width, tile_length = image.tag_v2.get(_TIFF_TILE_WIDTH_TAG), image.tag_v2.get(_TIFF_TILE_LENGTH_TAG)
    if tile_width is None and tile_length is None:
        return None  # strips: libtiff clamps a strip's rows to the image's
    if not isinstance(tile_width, int) or not isinstance(tile_length, int) or tile_width < 1 or tile_length < 1:
        raise _corrupt("TIFF", f"its tile size {tile_width}x{tile_length} is not two positive integers")
    return tile_width, tile_length


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("PNG", "image/png", ((0, b"\x89PNG\r\n\x1a\n"),), PngImagePlugin.PngImageFile),
    ImageFormat("JPEG", "image/jpeg", ((0, b"\xff\xd8\xff"),), JpegImagePlugin.JpegImageFile),
    ImageFormat("BMP", "image/bmp", ((0, b"BM"),), BmpImagePlugin.BmpImageFile),
    ImageFormat("GIF", "image/gif", ((0, b"GIF87a"),), GifImagePlugin.GifImageFile, size_before_opening=gif_first_frame_extent),
    ImageFormat("GIF", "image/gif", ((0, b"GIF89a"),), GifImagePlugin.GifImageFile, size_before_opening=gif_first_frame_extent),
    ImageFormat("TIFF", "image/tiff", ((0, b"II*\x00"),), TiffImagePlugin.TiffImageFile, decoding_block=tiff_decoding_block),
    ImageFormat("TIFF", "image/tiff", ((0, b"MM\x00*"),), TiffImagePlugin.TiffImageFile, decoding_block=tiff_decoding_block),
    ImageFormat("WebP", "image/webp", ((0, b"RIFF"), (8, b"WEBP")), WebPImagePlugin.WebPImageFile, size_before_opening=webp_canvas_size),
)
# Each accepted format's media type once, in the order of SUPPORTED_FORMATS (file pickers, help, docs).
ACCEPTED_MEDIA_TYPES: tuple[str, ...] = tuple(dict.fromkeys(image_format.media_type for image_format in FORMATS))

# Formats people send by mistake, recognised only to name them in the refusal.
_REFUSED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"II+\x00", "BigTIFF"),
    (0, b"MM\x00+", "BigTIFF"),
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
# base64 of each accepted format's first bytes: a client that sent the text, not the bytes.
_BASE64_PREFIXES = (b"iVBORw0KGgo", b"/9j/", b"Qk", b"R0lGOD", b"SUkqA", b"TU0AK", b"UklGR")
_DATA_URL_PREFIX = b"data:image/"


def describe_unsupported(data: bytes) -> str:
    """Why bytes that match no accepted format are refused, naming what they look like."""
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


def identify(data: bytes) -> ImageFormat:
    """The accepted format whose signature the bytes carry; InvalidInput naming what they are otherwise."""
    for image_format in FORMATS:
        if image_format.matches(data):
            return image_format
    raise InvalidInput(describe_unsupported(data))
