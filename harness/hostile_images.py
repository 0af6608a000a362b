"""Crafted images that attack a decoder: headers that declare huge sizes, real bombs, and files
whose frames or pages number in the tens of thousands.

The one home of these bytes: the reliability runs (harness/reliability_runs.py) attack a live server
with them and the tests (tests/image_samples.py gathers them by format) attack the decoder
and the APIs, so both use the same bytes. Built from struct and zlib alone: a load generator must
not need the image library it attacks, and each file says exactly what it declares.
"""
from __future__ import annotations

import struct
import zlib


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height 8-bit gray pixels, with a few KB of real data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 10_000, 9)) + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    start_of_frame = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    start_of_scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    return b"\xff\xd8" + start_of_frame + start_of_scan + b"\x00" * 64 + b"\xff\xd9"


def bmp_declaring(width: int, height: int) -> bytes:
    palette = b"\x00" * 1024
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 0, 0, 0, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + 64, 0, 0, offset) + info + palette + b"\x00" * 64


def gif_declaring(width: int, height: int, left: int = 0, top: int = 0, screen: tuple[int, int] | None = None,
                  dispose_to_background: bool = False) -> bytes:
    """A GIF whose first frame declares width x height at (left, top), on a screen of that size
    (or of `screen`: a 1x1 screen with a huge frame is the variant where the image grows to hold it).

    With dispose_to_background, a graphic control extension asks for the frame's area to be
    restored to the background afterwards: Pillow fills a frame-sized buffer for that while it
    opens the file, before anyone has looked at the size.
    """
    screen_width, screen_height = screen or (left + width, top + height)
    header = b"GIF89a" + struct.pack("<HHBBB", min(screen_width, 65_535), min(screen_height, 65_535), 0, 0, 0)
    control = b"!\xf9\x04" + bytes([2 << 2]) + b"\x00\x00\x00\x00" if dispose_to_background else b""
    descriptor = b"," + struct.pack("<HHHHB", left, top, width, height, 0)
    return header + control + descriptor + _GIF_ONE_PIXEL_LZW + b";"


# A frame's image data for one pixel of colour 0: LZW minimum code size 2, one sub-block holding
# the codes clear, 0, end (3 bits each), then the empty sub-block that ends the data.
_GIF_ONE_PIXEL_LZW = b"\x02" + b"\x02\x44\x01" + b"\x00"


def gif_with_frames(count: int) -> bytes:
    """A GIF of `count` 1x1 frames on an 8x8 screen: about 15 bytes a frame."""
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + _GIF_ONE_PIXEL_LZW
    return b"GIF89a" + struct.pack("<HHBBB", 8, 8, 0, 0, 0) + frame * count + b";"


def _tiff_directory(entries: list[tuple[int, int, int]], next_offset: int) -> bytes:
    """A little-endian TIFF directory of (tag, type, value) entries, each one value (SHORT 3 or LONG 4)."""
    packed = b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in sorted(entries)
    )
    return struct.pack("<H", len(entries)) + packed + struct.pack("<I", next_offset)


def _gray_tiff_entries(width: int, height: int, compression: int = 1) -> list[tuple[int, int, int]]:
    # ImageWidth, ImageLength (LONG); BitsPerSample 8, Compression, Photometric 1 (black is zero).
    return [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, compression), (262, 3, 1)]


def tiff_declaring(width: int, height: int, compression: int = 1) -> bytes:
    """An 8-bit gray TIFF declaring width x height, with 64 bytes of pixel data (uncompressed
    unless `compression`, a TIFF compression code, says otherwise)."""
    pixels_offset = 8
    directory_offset = pixels_offset + 64
    strips = [(273, 4, pixels_offset), (278, 4, height), (279, 4, 64)]  # offsets, rows per strip, byte counts
    return (b"II*\x00" + struct.pack("<I", directory_offset) + bytes(64)
            + _tiff_directory(_gray_tiff_entries(width, height, compression) + strips, 0))


def tiff_tile_bomb(tile_side: int, image_side: int = 16) -> bytes:
    """A small Deflate TIFF whose one tile is tile_side x tile_side real zeros: a decoder that
    believes the tile size decompresses tile_side^2 bytes for an image_side^2 image.

    Compressed in slices, so that making it does not cost the client the memory it is meant to cost.
    """
    compressor = zlib.compressobj(9)
    row = bytes(tile_side)
    tile = b"".join(compressor.compress(row) for _ in range(tile_side)) + compressor.flush()
    tile_offset = 8
    directory_offset = tile_offset + len(tile) + (len(tile) % 2)
    tiles = [(322, 4, tile_side), (323, 4, tile_side), (324, 4, tile_offset), (325, 4, len(tile))]
    return (b"II*\x00" + struct.pack("<I", directory_offset) + tile + bytes(len(tile) % 2)
            + _tiff_directory(_gray_tiff_entries(image_side, image_side, compression=8) + tiles, 0))


def tiff_with_pages(count: int) -> bytes:
    """A TIFF of `count` 1x1 uncompressed pages, each directory pointing to the next: about 110 bytes a page."""
    pages = []
    offset = 8
    for index in range(count):
        directory_size = 2 + 8 * 12 + 4
        pixel_offset = offset + directory_size
        following = pixel_offset + 2 if index + 1 < count else 0
        strips = [(273, 4, pixel_offset), (278, 4, 1), (279, 4, 1)]
        pages.append(_tiff_directory(_gray_tiff_entries(1, 1) + strips, following) + b"\x00\x00")
        offset = pixel_offset + 2
    return b"II*\x00" + struct.pack("<I", 8) + b"".join(pages)


# The VP8L (lossless) bitstream of one opaque black pixel, as libwebp writes it.
_VP8L_ONE_BLACK_PIXEL = bytes.fromhex("2f00000000071011fd0f4444ff03")
_WEBP_ANIMATION_FLAG = 0x02


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)


def _webp_animation(canvas_width: int, canvas_height: int, frame_count: int) -> bytes:
    canvas = (canvas_width - 1).to_bytes(3, "little") + (canvas_height - 1).to_bytes(3, "little")
    chunks = [_riff_chunk(b"VP8X", bytes([_WEBP_ANIMATION_FLAG, 0, 0, 0]) + canvas),
              _riff_chunk(b"ANIM", bytes(6))]
    # Each frame: at (0, 0), 1x1, 100 ms, then its bitstream.
    frame = _riff_chunk(b"ANMF", bytes(6) + bytes(6) + (100).to_bytes(3, "little") + b"\x00"
                        + _riff_chunk(b"VP8L", _VP8L_ONE_BLACK_PIXEL))
    body = b"WEBP" + b"".join(chunks) + frame * frame_count
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_declaring(width: int, height: int) -> bytes:
    """A valid animated WebP of one 1x1 frame on a width x height canvas: libwebp allocates and
    clears that canvas (4 bytes a pixel, twice) before decoding the frame."""
    return _webp_animation(width, height, 1)


def webp_with_frames(count: int) -> bytes:
    """An animated WebP of `count` 1x1 frames on an 8x8 canvas: about 50 bytes a frame."""
    return _webp_animation(8, 8, count)


# Each header-bomb builder, and the largest side its header can declare.
BOMB_BUILDERS = {
    png_declaring: 2**31 - 1,
    jpeg_declaring: 65_535,
    bmp_declaring: 2**31 - 1,
    gif_declaring: 65_535,
    tiff_declaring: 2**32 - 1,
    webp_declaring: 2**24,
}


def real_png_bomb(side: int) -> bytes:
    """A genuine PNG of side x side black pixels: side^2 bytes once decoded, about 1/1000 of that encoded.

    Compressed row by row, so that making it does not cost the client the memory it is meant to cost.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter type 0, then the row's pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
