"""Crafted images that attack a decoder: headers that declare huge sizes, and a real PNG bomb.

Used by the reliability report (bench/reliability.py) and by the preprocessing tests, so both
attack the server with the same bytes.
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


BOMB_BUILDERS = (png_declaring, jpeg_declaring, bmp_declaring)


def real_png_bomb(side: int) -> bytes:
    """A genuine PNG of side x side black pixels: side^2 bytes once decoded, about 1/1000 of that encoded.

    Compressed row by row, so that making it does not cost the client the memory it is meant to cost.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter type 0, then the row's pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
