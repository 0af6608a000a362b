"""Property-based fuzzing of decoding and preprocessing: whatever bytes, images, arrays or raw shapes
arrive, the only errors are InvalidInput and TooLarge, valid images always decode, and every result
is a finite float32 28x28 digit in [0, 1]. Limits are kept small so no example can allocate much."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from contracts.errors import InvalidInput, TooLarge
from contracts.images.formats import identify
from contracts.images.preprocess import (
    ImageLimits,
    decode_image,
    prepare_digit,
    raw_pixels_to_array,
    to_mnist_format,
)

# No warning may escape either (a numpy overflow, a Pillow DecompressionBombWarning): each is an error.
pytestmark = pytest.mark.filterwarnings("error")

# 1 megapixel and 512 KiB (an uncompressed 300x300 RGB BMP is 270 KB): a decoded example costs a
# few MiB at most, so a failing limit check shows up as an error here, not as memory exhaustion.
FUZZ_LIMITS = ImageLimits(max_image_bytes=512 * 1024, max_image_pixels=1024 * 1024)
FUZZ = settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
DOCUMENTED_ERRORS = (InvalidInput, TooLarge)
MAGIC_PREFIXES = [
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0", b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X",
]
# (mode, formats that can write it)
WRITABLE = {
    "1": ["PNG", "BMP", "TIFF"], "L": ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"], "P": ["PNG", "BMP", "GIF", "TIFF"],
    "RGB": ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"], "RGBA": ["PNG", "TIFF", "WEBP"], "LA": ["PNG", "TIFF"],
    "I;16": ["PNG", "TIFF"], "CMYK": ["JPEG", "TIFF"],
}
# TIFF compressions Pillow can write, tried on every mode that takes them (the rest fall back to none).
TIFF_COMPRESSIONS = [None, "tiff_lzw", "tiff_adobe_deflate", "packbits"]


def assert_is_digit(digit: np.ndarray) -> None:
    assert digit.dtype == np.float32 and digit.shape == (28, 28)
    assert np.isfinite(digit).all()
    assert digit.min() >= 0.0 and digit.max() <= 1.0


def assert_is_gray(gray: np.ndarray) -> None:
    assert gray.dtype == np.float32 and gray.ndim == 2 and gray.size > 0
    assert np.isfinite(gray).all() and gray.min() >= 0.0 and gray.max() <= 1.0


def decode_then_format(data: bytes) -> None:
    """The server's path for encoded images: only documented errors, else a valid digit."""
    try:
        gray = decode_image(data, FUZZ_LIMITS)
    except DOCUMENTED_ERRORS:
        return
    assert_is_gray(gray)
    assert gray.size <= FUZZ_LIMITS.max_image_pixels
    assert_is_digit(to_mnist_format(gray))


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def synthetic_image(mode: str, width: int, height: int, pattern: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if pattern == "noise":
        values = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif pattern == "blank":
        values = np.full((height, width), rng.integers(0, 256), dtype=np.uint8)
    elif pattern == "gradient":
        values = np.linspace(0, 255, width * height).reshape(height, width).astype(np.uint8)
    else:  # a few strokes of random width on a random paper
        paper, ink = rng.integers(0, 256, 2)
        values = np.full((height, width), paper, dtype=np.uint8)
        for _ in range(rng.integers(1, 4)):
            row, column = rng.integers(0, height), rng.integers(0, width)
            thickness = int(rng.integers(1, max(2, min(height, width) // 4)))
            if rng.random() < 0.5:
                values[row : row + thickness, :] = ink
            else:
                values[:, column : column + thickness] = ink
    image = Image.fromarray(values)
    if mode == "I;16":
        return Image.fromarray(values.astype(np.uint16) * 257)
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray(rng.choice([0, 128, 255], size=(height, width)).astype(np.uint8))
        image = image.convert(mode)
        image.putalpha(alpha)
        return image
    return image.convert(mode)


# A pool of small valid encodings to mutate: every writable mode in every format, and the
# multi-frame and compressed variants of the formats that have them.
VALID_POOL = [
    encode(synthetic_image(mode, 24 + 7 * index, 20 + 5 * index, "strokes", index), image_format)
    for index, (mode, formats) in enumerate(WRITABLE.items())
    for image_format in formats
]
EXTRA_POOL = [
    encode(synthetic_image("L", 30, 26, "strokes", 1), "GIF", save_all=True,
           append_images=[synthetic_image("L", 30, 26, "noise", 2)]),
    encode(synthetic_image("L", 30, 26, "strokes", 3), "WEBP", save_all=True,
           append_images=[synthetic_image("L", 30, 26, "noise", 4)], lossless=True),
    encode(synthetic_image("L", 30, 26, "strokes", 5), "TIFF", save_all=True,
           append_images=[synthetic_image("L", 30, 26, "noise", 6)]),
    encode(synthetic_image("RGB", 33, 21, "strokes", 7), "TIFF", compression="jpeg"),
    encode(synthetic_image("1", 40, 24, "strokes", 8), "TIFF", compression="group4"),
    encode(synthetic_image("L", 40, 24, "strokes", 9), "TIFF", compression="tiff_lzw", tile=(16, 16)),
    encode(synthetic_image("RGB", 30, 20, "strokes", 10), "WEBP", quality=50),
]


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    decode_then_format(data)


@FUZZ
@given(st.sampled_from(MAGIC_PREFIXES), st.binary(max_size=4096))
def test_random_bytes_behind_a_supported_signature(prefix, data):
    decode_then_format(prefix + data)


@FUZZ
@given(
    st.sampled_from(VALID_POOL + EXTRA_POOL),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_mutated_and_truncated_images(data, mutations, cut):
    corrupted = bytearray(data)
    for position, value in mutations:
        corrupted[position % len(corrupted)] = value
    if cut is not None:
        corrupted = corrupted[: cut % (len(corrupted) + 1)]
    decode_then_format(bytes(corrupted))


@st.composite
def valid_images(draw) -> tuple[Image.Image, str, dict]:
    mode = draw(st.sampled_from(sorted(WRITABLE)))
    image_format = draw(st.sampled_from(WRITABLE[mode]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    pattern = draw(st.sampled_from(["noise", "blank", "gradient", "strokes"]))
    options = {}
    if image_format == "TIFF":
        compression = draw(st.sampled_from(TIFF_COMPRESSIONS))
        if compression is not None and mode not in ("1", "P"):  # Pillow writes those raw only
            options["compression"] = compression
    if image_format == "WEBP":
        options = draw(st.sampled_from([{"lossless": True}, {"quality": 30}, {"quality": 95}]))
    return synthetic_image(mode, width, height, pattern, draw(st.integers(0, 2**32 - 1))), image_format, options


@FUZZ
@given(valid_images())
def test_valid_images_of_any_size_and_mode_always_become_digits(image_format_and_options):
    image, image_format, options = image_format_and_options
    gray = decode_image(encode(image, image_format, **options), FUZZ_LIMITS)  # valid: no error allowed
    assert_is_gray(gray)
    assert gray.shape == (image.height, image.width)
    assert_is_digit(to_mnist_format(gray))


ARRAY_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.uint8, np.int32, np.bool_])


@FUZZ
@given(hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=48)))
def test_arbitrary_arrays_are_formatted_or_refused_as_invalid(array):
    try:
        digit = to_mnist_format(array)
    except InvalidInput:
        return
    assert_is_digit(digit)


@FUZZ
@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=64),
        elements=st.floats(0.0, 1.0, width=32),
    )
)
def test_every_finite_unit_range_array_becomes_a_digit(array):
    assert_is_digit(to_mnist_format(array))


@st.composite
def raw_requests(draw) -> tuple[bytes, int, int]:
    height, width = draw(st.integers(-3, 1100)), draw(st.integers(-3, 1100))
    expected = max(height, 0) * max(width, 0)
    length = draw(st.one_of(st.just(expected), st.integers(0, 4096), st.integers(max(expected - 2, 0), expected + 2)))
    if length > 2 * 1024 * 1024:
        length = expected if expected <= 2 * 1024 * 1024 else 0
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes(), height, width


@FUZZ
@given(raw_requests(), st.booleans(), st.sampled_from([(28, 28), (32, 32)]))
def test_raw_pixels_of_any_shape_and_length(request, already_mnist, input_size):
    pixels, height, width = request
    try:
        gray = raw_pixels_to_array(pixels, height, width, FUZZ_LIMITS)
    except DOCUMENTED_ERRORS:
        assert height <= 0 or width <= 0 or len(pixels) != height * width or height * width > 1024 * 1024
        return
    assert gray.shape == (height, width)
    assert_is_gray(gray)
    try:
        model_input = prepare_digit(gray, already_mnist=already_mnist, input_size=input_size)
    except InvalidInput:
        assert already_mnist and gray.shape != (28, 28)
        return
    assert model_input.shape == (1, *input_size) and model_input.dtype == np.float32
    assert np.isfinite(model_input).all() and 0.0 <= model_input.min() and model_input.max() <= 1.0


# TIFF tags a decoder acts on, and the type codes they may carry: hostile directories combine them.
TIFF_TAGS = [256, 257, 258, 259, 262, 266, 273, 274, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 338, 339, 530]
TIFF_TYPES = [1, 3, 4, 5, 16]  # BYTE, SHORT, LONG, RATIONAL, LONG8
TIFF_VALUES = st.one_of(st.integers(0, 4), st.integers(0, 70_000), st.sampled_from([2**16 - 1, 2**31, 2**32 - 1]))


@st.composite
def tiff_directories(draw) -> bytes:
    """A little-endian TIFF whose one directory holds random entries (tags, types, counts, values)
    followed by a random payload that offsets may point into."""
    payload = draw(st.binary(max_size=2048))
    entries = draw(st.lists(st.tuples(st.sampled_from(TIFF_TAGS), st.sampled_from(TIFF_TYPES),
                                      st.sampled_from([1, 1, 1, 2, 3, 4, 1000, 2**31]), TIFF_VALUES),
                            min_size=1, max_size=14))
    directory_offset = 8 + len(payload) + len(payload) % 2
    packed = b"".join(struct.pack("<HHII", tag, kind, count, value % 2**32) for tag, kind, count, value in sorted(entries))
    next_offset = draw(st.sampled_from([0, 0, 8, directory_offset]))
    directory = struct.pack("<H", len(entries)) + packed + struct.pack("<I", next_offset)
    return b"II*\x00" + struct.pack("<I", directory_offset) + payload + bytes(len(payload) % 2) + directory


@FUZZ
@given(tiff_directories())
def test_hostile_tiff_directories(data):
    decode_then_format(data)


@st.composite
def gif_block_streams(draw) -> bytes:
    """A GIF header, then random extension blocks, image descriptors and sub-blocks: the block walk
    that finds the first frame's extent, and Pillow's own, on every shape of stream."""
    screen = draw(st.tuples(st.integers(0, 70), st.integers(0, 70)))
    flags = draw(st.sampled_from([0, 0x80, 0x87, 0xF7]))
    parts = [b"GIF89a", struct.pack("<HHBBB", *screen, flags, 0, 0)]
    if flags & 0x80:
        parts.append(draw(st.binary(min_size=3 << ((flags & 7) + 1), max_size=3 << ((flags & 7) + 1))))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["extension", "image", "junk"]))
        if kind == "extension":
            parts.append(b"!" + bytes([draw(st.sampled_from([0xF9, 0xFE, 0xFF, 0x01]))]))
            parts += [bytes([len(block)]) + block for block in draw(st.lists(st.binary(min_size=1, max_size=12), max_size=3))]
            parts.append(b"\x00")
        elif kind == "image":
            extent = draw(st.tuples(*[st.integers(0, 1100)] * 4))
            parts.append(b"," + struct.pack("<HHHHB", *extent, draw(st.sampled_from([0, 0x40, 0x80, 0x87]))))
            parts.append(bytes([draw(st.integers(0, 12))]) + draw(st.binary(max_size=64)))
        else:
            parts.append(draw(st.binary(max_size=8)))
    parts.append(draw(st.sampled_from([b";", b""])))
    return b"".join(parts)


@FUZZ
@given(gif_block_streams())
def test_hostile_gif_block_streams(data):
    decode_then_format(data)


def test_the_mutation_pool_covers_every_format_and_mode():
    assert len(VALID_POOL) == sum(len(formats) for formats in WRITABLE.values())
    assert {identify(data).name for data in VALID_POOL + EXTRA_POOL} == {"PNG", "JPEG", "BMP", "GIF", "TIFF", "WebP"}
    for data in VALID_POOL + EXTRA_POOL:
        assert_is_gray(decode_image(data, FUZZ_LIMITS))
