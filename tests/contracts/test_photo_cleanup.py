"""The photo cleanup of the MNIST-format pipeline, step by step, through its public functions: what is
not ink on a photographed page (lighting, a shadow, a table's edge, ruled lines, print-through, grain),
which marks are the digit, when there is none, and the strokes' width it ends with."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contracts.images.cleanup import (
    MIN_INK_CONTRAST,
    flatten_background,
    ink_threshold,
    ruled_lines,
    select_digit,
)
from contracts.images.decode import JPEG_MIN_LONGER_SIDE
from contracts.images.preprocess import (
    ImageLimits,
    decode_image,
    plain_background,
    stroke_width,
    to_mnist_format,
)
from contracts.mnist_idx import load_mnist_test

PAGE = (360, 480)  # height, width
DIGIT_SIDE = 140


@pytest.fixture(scope="module")
def digits(mnist_root) -> np.ndarray:
    """The first test digit of each class, ink 0-1."""
    images, labels = load_mnist_test(mnist_root)
    return np.stack([images[np.flatnonzero(labels == digit)[0]] for digit in range(10)]).astype(np.float32) / 255


def enlarged(digit: np.ndarray, side: int = DIGIT_SIDE) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)).clip(0, 1)


def page_photo(digit: np.ndarray, *, ink_strength: float = 0.8, paper: float = 0.9, seed: int = 0,
               grain: float = 0.01) -> np.ndarray:
    """A sheet of paper with the digit written in its middle: reflectance times light, plus grain."""
    rng = np.random.default_rng(seed)
    height, width = PAGE
    reflectance = np.full(PAGE, paper, dtype=np.float32)
    top, left = (height - DIGIT_SIDE) // 2, (width - DIGIT_SIDE) // 2
    reflectance[top : top + DIGIT_SIDE, left : left + DIGIT_SIDE] *= 1.0 - ink_strength * enlarged(digit)
    return (reflectance + rng.normal(0.0, grain, PAGE)).astype(np.float32).clip(0, 1)


def correlation(actual: np.ndarray, expected: np.ndarray) -> float:
    """Correlation allowing a shift of up to one pixel: centring rounds to whole pixels."""
    return max(float(np.corrcoef(np.roll(actual, (dy, dx), axis=(0, 1)).ravel(), expected.ravel())[0, 1])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def assert_same_digit(picture: np.ndarray, clean: np.ndarray, bound: float = 0.9) -> None:
    result = to_mnist_format(picture)
    assert result.any(), "the digit was lost"
    assert correlation(result, to_mnist_format(clean)) > bound


# ---------------------------------------------------------------- the background is not ink


def test_flattening_leaves_paper_at_zero_under_any_light(digits):
    picture = page_photo(digits[3], grain=0.0)
    rows = np.linspace(1.0, 0.45, PAGE[0], dtype=np.float32)[:, None]  # lit from the top, dim at the bottom
    ink = flatten_background(picture * rows, ink_is_dark=True)
    assert ink[:40].max() < MIN_INK_CONTRAST and ink[-40:].max() < MIN_INK_CONTRAST
    assert ink.max() > 0.6  # the digit's strokes, as dark relative to the paper at the bottom as at the top


def test_a_hands_shadow_is_not_ink(digits):
    clean = page_photo(digits[0])
    rows, columns = np.indices(PAGE, dtype=np.float32)
    distance = np.hypot(rows - PAGE[0], columns - PAGE[1] * 0.6) / PAGE[0]  # from below the page
    shadow = 1.0 - 0.45 * np.clip((0.75 - distance) / 0.15, 0.0, 1.0)  # soft-edged, over the digit
    assert_same_digit(clean * shadow, clean)


def test_a_dark_table_edge_along_the_border_is_dropped(digits):
    clean = page_photo(digits[4])
    with_table = clean.copy()
    with_table[:, :40] = 0.1  # the table beyond the sheet's left edge
    assert_same_digit(with_table, clean)


def test_coloured_paper_and_grain_are_not_ink(digits):
    clean = page_photo(digits[6])
    grey_grainy = page_photo(digits[6], paper=0.55, grain=0.03, seed=1)
    assert_same_digit(grey_grainy, clean)


def test_ruled_lines_are_dropped_even_where_they_cross_the_digit(digits):
    clean = page_photo(digits[8])
    ruled = clean.copy()
    for row in range(30, PAGE[0], 40):
        ruled[row : row + 2] *= 0.6  # every 40 px, through the digit too
    inked = (flatten_background(ruled, ink_is_dark=True) >= MIN_INK_CONTRAST).view(np.uint8)
    assert ruled_lines(inked)[30:32, :60].all()  # the lines are found...
    assert_same_digit(ruled, clean, bound=0.85)  # ...and the digit is read without them


def test_faint_print_through_does_not_join_the_digit(digits):
    clean = page_photo(digits[2])
    backside = clean.copy()
    rng = np.random.default_rng(2)
    for row in range(20, PAGE[0] - 20, 24):  # lines of blurred "text" from the back, 8% dark
        for start in range(20, PAGE[1] - 60, 70):
            length = int(rng.integers(30, 60))
            backside[row : row + 6, start : start + length] *= 0.92
    assert_same_digit(backside, clean)


def test_a_faint_digit_on_a_page_of_print_through_words_has_a_black_background(digits):
    faint = page_photo(digits[9], ink_strength=0.3)
    backside = faint.copy()
    rng = np.random.default_rng(3)
    for row in range(12, PAGE[0] - 12, 11):  # dense lines of small "words" from the back, 25% dark
        start = 12
        while start < PAGE[1] - 40:
            length = int(rng.integers(6, 26))
            backside[row : row + 3, start : start + length] *= 0.75
            start += length + int(rng.integers(4, 9))
    result, clean = to_mnist_format(backside), to_mnist_format(faint)
    assert result.any(), "the digit was lost"
    assert correlation(result, clean) > 0.9
    near_the_digit = np.asarray(Image.fromarray(clean > 0).resize((28, 28))).astype(bool)
    near_the_digit |= np.roll(near_the_digit, 2, 0) | np.roll(near_the_digit, -2, 0)
    near_the_digit |= np.roll(near_the_digit, 2, 1) | np.roll(near_the_digit, -2, 1)
    assert np.count_nonzero(result[~near_the_digit] > 0.1) <= 5  # the words are not kept as grey ink


def test_faint_pencil_is_kept(digits):
    pencil = page_photo(digits[7], ink_strength=0.22, grain=0.01)
    result = to_mnist_format(pencil)
    assert result.max() > 0.99  # stretched to full ink
    assert correlation(result, to_mnist_format(page_photo(digits[7]))) > 0.9


# ---------------------------------------------------------------- the digit, not the page


def test_a_digit_written_in_two_strokes_stays_one_digit(digits):
    broken = digits[5].copy()
    broken[8:10] = 0.0  # the 5's bar drawn apart from its body: two components
    picture = page_photo(broken)
    height = PAGE[0]
    ink = flatten_background(picture, ink_is_dark=True)
    digit = select_digit(ink, ink_threshold(ink))
    top = (height - DIGIT_SIDE) // 2
    assert digit[top : top + DIGIT_SIDE * 8 // 28].any() and digit[top + DIGIT_SIDE * 10 // 28 :].any()
    assert correlation(to_mnist_format(picture), to_mnist_format(page_photo(digits[5]))) > 0.85


def test_specks_far_from_the_digit_are_dropped(digits):
    clean = page_photo(digits[1])
    dusty = clean.copy()
    rng = np.random.default_rng(3)
    rows, columns = rng.integers(0, 60, 25), rng.integers(0, PAGE[1], 25)  # dust along the top
    dusty[rows, columns] = 0.1
    assert_same_digit(dusty, clean, bound=0.95)


@pytest.mark.parametrize("kind", ["white", "gradient", "uniform noise", "salt and pepper", "grain", "only lines"])
def test_a_picture_without_a_digit_gives_the_blank_digit(kind):
    rng = np.random.default_rng(4)
    height, width = PAGE
    if kind == "white":
        picture = np.full(PAGE, 0.95, dtype=np.float32)
    elif kind == "gradient":  # a blank sheet, lit from one side, a soft shadow across a corner
        picture = np.linspace(0.95, 0.5, width, dtype=np.float32)[None, :].repeat(height, axis=0)
        picture[: height // 2, : width // 3] *= 0.7
    elif kind == "uniform noise":
        picture = rng.random(PAGE, dtype=np.float32)
    elif kind == "salt and pepper":
        picture = np.full(PAGE, 0.9, dtype=np.float32)
        draw = rng.random(PAGE)
        picture[draw < 0.03], picture[draw > 0.97] = 0.0, 1.0
    elif kind == "grain":
        picture = (0.8 + rng.normal(0, 0.03, PAGE)).astype(np.float32)
    else:  # ruled paper with nothing written on it
        picture = np.full(PAGE, 0.9, dtype=np.float32)
        picture[20::36] = 0.55
    assert not to_mnist_format(picture.clip(0, 1)).any()


# ---------------------------------------------------------------- a drawing app's plain canvas

CANVAS = (900, 1200)  # height, width: larger than the working copy, as a drawing app's export is
SMALL_DIGIT_SIDE = 84


def canvas_drawing(digit: np.ndarray, top: int, left: int) -> np.ndarray:
    """A white canvas, no grain, with the digit drawn small in grey ink at (top, left)."""
    canvas = np.ones(CANVAS, dtype=np.float32)
    window = (slice(top, top + SMALL_DIGIT_SIDE), slice(left, left + SMALL_DIGIT_SIDE))
    canvas[window] -= 0.8 * enlarged(digit, SMALL_DIGIT_SIDE)
    return canvas


def as_transparent_png(drawing: np.ndarray) -> bytes:
    """The drawing as an RGBA PNG: black ink whose alpha is its darkness, the canvas transparent."""
    rgba = np.zeros((*drawing.shape, 4), dtype=np.uint8)
    rgba[..., 3] = np.round((1.0 - drawing) * 255).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(encoded, format="PNG")
    return encoded.getvalue()


def test_a_plain_canvas_is_told_from_a_photographed_page(digits):
    assert plain_background(canvas_drawing(digits[4], 400, 500))
    assert not plain_background(page_photo(digits[4]))  # grain, however slight
    assert not plain_background(page_photo(digits[4], grain=0.0) * np.linspace(1.0, 0.8, PAGE[1])[None, :])


@pytest.mark.parametrize("encoding", ["gray", "transparent png"])
@pytest.mark.parametrize("corner", [(6, 20), (420, 6), (CANVAS[0] - SMALL_DIGIT_SIDE - 6, 900)])
def test_a_digit_drawn_near_a_plain_canvas_edge_is_kept(digits, corner, encoding):
    middle = canvas_drawing(digits[7], 400, 550)
    near_edge = canvas_drawing(digits[7], *corner)
    if encoding == "transparent png":
        near_edge = decode_image(as_transparent_png(near_edge), ImageLimits())
    assert_same_digit(near_edge, middle, bound=0.95)


# ---------------------------------------------------------------- strokes and scans


@pytest.mark.parametrize("pen_width", [3, 12, 60])
def test_thin_and_bold_strokes_end_with_an_mnist_like_width(pen_width):
    canvas = np.zeros((400, 400), dtype=np.float32)
    rows, columns = np.indices(canvas.shape) - 199.5
    radius = np.hypot(rows / 1.4, columns)  # an upright oval: a "0" 320 px tall
    canvas[np.abs(radius - 110) <= pen_width / 2] = 1.0
    result = to_mnist_format(1.0 - canvas)
    # MNIST's strokes at this scale: 1st percentile 1.5 px, median 2.5, 99th 4.7.
    assert 1.5 <= stroke_width(result) <= 4.2
    assert result[14, 14] == 0.0  # the loop stays open


def test_a_low_resolution_scan_is_upsampled_smoothly(digits):
    small = np.asarray(Image.fromarray(digits[2]).resize((9, 9), Image.Resampling.BOX), dtype=np.float32)
    result = to_mnist_format(1.0 - small.clip(0, 1))
    steps = np.abs(np.diff(result, axis=1))
    assert correlation(result, digits[2]) > 0.7
    assert steps.max() < 0.6  # no block edges: neighbouring pixels change gradually


@pytest.mark.parametrize("side", [9, 10])
def test_a_low_resolution_scans_strokes_are_not_much_bolder_than_the_digits_own(digits, side):
    # Blown up 2-3 times, each of the scan's pixels leaves a soft edge wider than MNIST's strokes have.
    scans = [np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BOX), dtype=np.float32)
             for digit in digits]
    widths = [stroke_width(to_mnist_format(1.0 - scan.clip(0, 1))) for scan in scans]
    own = [stroke_width(digit) for digit in digits]
    assert np.median(widths) <= 1.4 * np.median(own)


# ---------------------------------------------------------------- decoding at reduced scale


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_a_small_one_whole(digits):
    photo = (page_photo(digits[9]) * 255).astype(np.uint8)
    for width, reduced in ((2000, True), (400, False)):
        image = Image.fromarray(photo).resize((width, width * 3 // 4))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=90)
        gray = decode_image(buffer.getvalue(), ImageLimits())
        if reduced:
            assert JPEG_MIN_LONGER_SIDE <= max(gray.shape) < width
            assert gray.shape[1] / gray.shape[0] == pytest.approx(4 / 3, rel=0.01)
        else:
            assert gray.shape == (300, 400)
        assert correlation(to_mnist_format(gray), to_mnist_format(page_photo(digits[9]))) > 0.9
