"""Image files of every format the digits API documents, for the tests of each front door.

A digit rendered in each accepted format and variant (compressions, transparency, animations and
multi-page files whose first frame or page is the digit), and the files each API must refuse:
bombs of every kind (a tiny file that claims a huge size), files with tens of thousands of frames
or pages, malformed files, and formats still not accepted. Each refusal carries the status an API
must answer with and a fragment of the detail it must give, so the gRPC tests and the HTTP tests
check the same cases the same way.

The hostile bytes themselves are built in harness/hostile_images.py, their one home: the reliability
benchmark attacks a live server with the same files. (A plain module: conftest files are not for
importing.)
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from harness.hostile_images import (
    bmp_declaring,
    gif_declaring,
    gif_with_frames,
    jpeg_declaring,
    png_declaring,
    tiff_declaring,
    tiff_tile_bomb,
    tiff_with_pages,
    webp_declaring,
    webp_with_frames,
)

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WebP")
INVALID_ARGUMENT = "INVALID_ARGUMENT"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
PICTURE_SIDE = 112


@dataclass(frozen=True)
class Refusal:
    """Bytes an API must refuse: with which status (gRPC's name) and a fragment of the detail."""

    data: bytes
    code: str
    detail: str


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def paper_picture(digit_uint8: np.ndarray) -> Image.Image:
    """A 28x28 MNIST digit (light on dark) as a user's picture: dark ink on white paper, enlarged 4x."""
    return Image.fromarray(255 - digit_uint8).resize((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BICUBIC)


def transparent_canvas(digit_uint8: np.ndarray) -> Image.Image:
    """The digit as black strokes on a transparent canvas (what an HTML canvas exports)."""
    enlarged = Image.fromarray(digit_uint8).resize((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BICUBIC)
    rgba = np.zeros((PICTURE_SIDE, PICTURE_SIDE, 4), dtype=np.uint8)
    rgba[..., 3] = np.asarray(enlarged)
    return Image.fromarray(rgba)


def digit_files(digit_uint8: np.ndarray) -> dict[str, bytes]:
    """The digit in every accepted format and the variants users' software writes, by name."""
    paper = paper_picture(digit_uint8)
    canvas = transparent_canvas(digit_uint8)
    # Binarised for the fax codings, which hold one bit a pixel.
    bilevel = paper.point(lambda value: 255 if value > 128 else 0).convert("1")
    return {
        "PNG": encode(paper, "PNG"),
        "JPEG": encode(paper, "JPEG", quality=90),
        "BMP": encode(paper.convert("RGB"), "BMP"),
        "GIF": encode(paper, "GIF"),
        "GIF, strokes on a transparent canvas": encode(canvas, "GIF"),
        "TIFF": encode(paper, "TIFF"),
        "TIFF, LZW": encode(paper, "TIFF", compression="tiff_lzw"),
        "TIFF, Deflate": encode(paper, "TIFF", compression="tiff_adobe_deflate"),
        "TIFF, PackBits": encode(paper, "TIFF", compression="packbits"),
        "TIFF, JPEG in colour": encode(paper.convert("RGB"), "TIFF", compression="jpeg"),
        "TIFF, CCITT group 4 fax": encode(bilevel, "TIFF", compression="group4"),
        "TIFF, 16-bit gray": encode(Image.fromarray(np.asarray(paper).astype(np.uint16) * 257), "TIFF"),
        "TIFF, strokes on a transparent canvas": encode(canvas, "TIFF", compression="tiff_adobe_deflate"),
        "WebP": encode(paper.convert("RGB"), "WEBP", quality=90),
        "WebP, lossless": encode(paper, "WEBP", lossless=True),
        "WebP, strokes on a transparent canvas": encode(canvas, "WEBP", lossless=True),
    }


def first_frame_files(first_uint8: np.ndarray, later_uint8: np.ndarray) -> dict[str, bytes]:
    """Animations and multi-page files whose first frame or page is `first_uint8`, then `later_uint8` twice."""
    first, later = paper_picture(first_uint8), paper_picture(later_uint8)
    rest = [later, later]
    return {
        "PNG, animated": encode(first, "PNG", save_all=True, append_images=rest),
        "GIF, animated": encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0),
        "TIFF, multi-page": encode(first, "TIFF", save_all=True, append_images=rest),
        "WebP, animated": encode(first, "WEBP", save_all=True, append_images=rest, duration=100, lossless=True),
    }


def _pixels_refusal(data: bytes, what: str) -> Refusal:
    return Refusal(data, RESOURCE_EXHAUSTED, f"{what} is ")


# A tiny file that claims a huge size, of every kind: each must be refused from its header.
BOMBS: dict[str, Refusal] = {
    "PNG header declaring 100000x100000": _pixels_refusal(png_declaring(100_000, 100_000), "the PNG image"),
    "JPEG header declaring 65535x65535": _pixels_refusal(jpeg_declaring(65_535, 65_535), "the JPEG image"),
    "BMP header declaring 100000x100000": _pixels_refusal(bmp_declaring(100_000, 100_000), "the BMP image"),
    "GIF declaring 65535x65535": _pixels_refusal(gif_declaring(65_535, 65_535), "the GIF image"),
    # The image grows to hold a frame that lies beyond the screen: that extent is what is checked.
    "GIF frame of 60000x60000 beyond its 1x1 screen": Refusal(
        gif_declaring(60_000, 60_000, left=5_000, top=5_000, screen=(1, 1)), RESOURCE_EXHAUSTED,
        "the GIF image is 65000x65000"),
    # Without the check before opening, Pillow would fill this frame's 64 MB while opening the file.
    "GIF frame of 8000x8000 beyond its 1x1 screen, disposed to the background": _pixels_refusal(
        gif_declaring(8_000, 8_000, screen=(1, 1), dispose_to_background=True), "the GIF image"),
    "TIFF declaring 100000x100000": _pixels_refusal(tiff_declaring(100_000, 100_000), "the TIFF image"),
    "TIFF of 16x16 pixels in one 8192x8192 tile of real zeros": _pixels_refusal(
        tiff_tile_bomb(8192), "each tile of the TIFF image"),
    "WebP canvas of 20000x20000 (real: libwebp would clear it)": _pixels_refusal(
        webp_declaring(20_000, 20_000), "the WebP image"),
    "WebP canvas declaring 16777216x16777216": _pixels_refusal(webp_declaring(2**24, 2**24), "the WebP image"),
}

# Tens of thousands of frames or pages, each file under 256 KiB: only the first is ever decoded.
MANY_FRAMES: dict[str, bytes] = {
    "GIF with 15,000 frames": gif_with_frames(15_000),
    "TIFF with 2,000 pages": tiff_with_pages(2_000),
    "WebP with 4,000 frames": webp_with_frames(4_000),
}


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def malformed_files() -> dict[str, Refusal]:
    """Broken files of the formats with header checks of their own, each refused as INVALID_ARGUMENT."""
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8))
    gif, tiff = encode(noise, "GIF"), encode(noise, "TIFF", compression="tiff_lzw")
    webp = encode(noise.convert("RGB"), "WEBP", quality=80)
    gif_without_frames = gif[:13 + 3 * 256] + b";"  # header and global colour table, then the trailer
    webp_unknown_chunk = webp[:12] + b"ABCD" + webp[16:]
    return {
        "GIF cut in half": Refusal(_cut(gif), INVALID_ARGUMENT, "GIF image"),
        "GIF with no frame": Refusal(gif_without_frames, INVALID_ARGUMENT, "corrupt GIF image: it holds no frame"),
        "GIF with a stray byte between blocks": Refusal(
            gif[:13 + 3 * 256] + b"\x99" + gif[13 + 3 * 256:], INVALID_ARGUMENT, "unexpected byte 0x99"),
        "TIFF cut in half": Refusal(_cut(tiff), INVALID_ARGUMENT, "TIFF image"),
        "TIFF header only": Refusal(b"II*\x00\x08\x00\x00\x00", INVALID_ARGUMENT, "corrupt TIFF image"),
        "TIFF compressed with ThunderScan": Refusal(
            tiff_declaring(8, 8, compression=32809), INVALID_ARGUMENT, "'tiff_thunderscan' (compression 32809) are not supported"),
        "TIFF compressed with old-style JPEG": Refusal(tiff_declaring(8, 8, compression=6), INVALID_ARGUMENT, "TIFF"),
        "WebP cut in half": Refusal(_cut(webp), INVALID_ARGUMENT, "WebP image"),
        "WebP with an unknown first chunk": Refusal(webp_unknown_chunk, INVALID_ARGUMENT, "corrupt WebP image"),
    }


def _iso_media(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"mif1" + bytes(32)


def refused_formats() -> dict[str, Refusal]:
    """Formats still not accepted, each refused with a message that names it."""
    files = {
        "HEIC": _iso_media(b"heic"),
        "AVIF": _iso_media(b"avif"),
        "BigTIFF": b"II+\x00\x08\x00\x00\x00" + bytes(32),
        "JPEG 2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(32),
        "ICO": encode(Image.new("L", (16, 16)), "ICO"),
        "Photoshop PSD": b"8BPS\x00\x01" + bytes(32),
    }
    return {
        name: Refusal(data, INVALID_ARGUMENT, f"{name} images are not supported; convert it to PNG, JPEG, BMP, GIF, TIFF or WebP")
        for name, data in files.items()
    }


def rotated_tiff(digit_uint8: np.ndarray) -> tuple[bytes, Image.Image]:
    """(a TIFF storing the picture sideways with the Orientation tag saying so, the upright picture)."""
    upright = paper_picture(digit_uint8)
    ImageDraw.Draw(upright).rectangle((0, 0, 9, PICTURE_SIDE - 1), fill=0)  # a bar on the left edge
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back clockwise
    return encode(stored, "TIFF", tiffinfo={274: 6}), upright
