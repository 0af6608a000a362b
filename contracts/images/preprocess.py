"""Any picture of a digit -> the 28x28 format MNIST classifiers were trained on.

The format itself (28x28, light ink on dark, the longer side of the ink 20 px, its centre of mass
at (14, 14), padding to a model's input size) is defined in contracts.digit_format.
A user's image (a phone photo of ink on paper, a canvas export, a scan) is brought there in steps,
each a function below or in contracts.images.cleanup that is tested on its own:

1. Grayscale: ``decode_image`` (contracts.images.decode), with transparency composited onto the
   paper; a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's own, nearly free).
2. Working copy (``working_copy``): a picture over ``WORKING_MAX_SIDE`` px is area-averaged down by
   a whole factor, so every later step costs a bounded amount; a small picture made of k x k
   blocks (a low-resolution scan enlarged with nearest-neighbour resampling) is taken back to its
   own pixels.
3. Polarity: the background level is the median of the outermost ring of pixels (``border_level``);
   the ink is whichever extreme (darkest or brightest pixel) lies farther from it (``fix_polarity``
   shows the rule on its own). A picture whose extremes lie within ``MIN_INK_CONTRAST`` of each
   other holds no ink.
4. Ink map (``ink_map``): 0 on the background, the ink's contrast above it elsewhere.
   - A picture at least ``FLATTEN_MIN_SIDE`` px a side is a page: its background (lighting,
     shadows, paper colour, a table beyond the sheet's edge) is estimated by a large grey closing
     and divided out (``cleanup.flatten_background``); ink is whatever is darker than the paper
     around it by ``MIN_INK_CONTRAST``, or by ``GRAIN_SIGMAS`` times the paper's grain if that is
     more (``cleanup.ink_threshold``), so gradients, shadows, grain and JPEG noise are not ink.
   - A smaller picture is the digit itself (an MNIST image, a tight crop, a low-resolution scan):
     it is stretched between its border's level and its ink's level (``contrast_levels``,
     ``stretch_contrast``), values under ``NOISE_FLOOR`` (or the border's grain) being no ink.
5. The digit (``select_digit``, contracts.images.cleanup): the connected components of the ink
   are judged one by one. Specks, ruled lines, the page's surroundings (a table edge or a shadow
   along the border), shadows and faint marks (print-through) are dropped; the component with the
   most clearly dark ink is the digit, and the strokes near it join it (a 5 whose bar was drawn
   apart is one digit). Around the digit found, ink much fainter than its strokes is dropped too.
   A drawing app's canvas (``plain_background``: one flat grey level, no grain) shows no table or
   sheet's edge, so there a digit drawn near the border is not taken for one.
   Nothing digit-like (a blank page, noise, specks, only lines): no digit.
6. Crop (``crop_digit``) to the digit's box, its strokes stretched so their ink is 1 (the median
   of its clearly inked pixels, not the darkest one) and everything else 0.
7. Scale (``scale_to_box``) so the longer side is 20 px. A crop over 320 px on its longer side is
   first max-pooled by an integer factor down to 160-320 px (so a 1 px stroke on a 4000 px photo
   survives); a smaller one is used at its own resolution. Strokes whose width would end up
   thinner than the thinnest MNIST strokes are dilated to MNIST's typical width (a crop under
   160 px is first upsampled bilinearly to 160, where dilation's whole-pixel steps are fine
   enough); strokes bolder than nearly every MNIST digit's (a marker) are eroded to it. Then the
   image is resampled to the 20 px box: area-averaged (box filter) from 160 px or more, with an
   antialiased triangle (bilinear) filter from less, which keeps the soft edges of a digit drawn
   near MNIST's own scale, and Lanczos from ``LOW_RES_SIDE`` px or less (a low-resolution scan),
   whose smooth interpolation rounds blocky pixels into strokes; the soft edges it leaves there
   (each of the scan's pixels spans several of the box's) are steepened by a power curve
   (``LOW_RES_EDGE_POWER``), so the strokes are as crisp as MNIST's and not a grey halo wider.
8. Centre (``centre_by_mass``): paste into 28x28 with the centre of mass moved to (14, 14),
   offsets rounded to whole pixels and clamped so no ink leaves the field; values clipped to [0, 1].

A picture with no digit in it (a white sheet, a fully transparent PNG, a photo of a blank page,
noise) is still a valid image: it becomes the all-zero 28x28 digit, and an all-zero input is how a
classifier's caller knows that no digit was found (blank output if and only if no digit was
found). Only malformed input is an error.

What it does not do, as MNIST did not: deskew, or read several digits (the one with the most
clearly dark ink is taken).

``prepare_digit`` then pads the 28x28 digit with background to the model's input size (32x32 for
LeNet-5 as LeCun fed it) and adds the channel axis. Raw pixels that are already in MNIST format
(28x28, light on dark, centred) skip steps 2-8.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from contracts.digit_format import (
    DIGIT_BOX,
    DIGIT_SHAPE,
    DIGIT_SIZE,
    centre_of_mass,
    check_fits,
    fit_longer_side,
    pad_to_input_size,
    placement,
)
from contracts.errors import InvalidInput
from contracts.images.cleanup import (
    FLATTEN_MIN_SIDE,
    GRAIN_SIGMAS,
    MIN_INK_CONTRAST,
    flatten_background,
    ink_threshold,
    select_digit,
)
from contracts.images.decode import ImageLimits, decode_image, raw_pixels_to_array

__all__ = [
    "ImageLimits",
    "decode_image",
    "raw_pixels_to_array",
    "to_mnist_format",
    "prepare_digit",
    "border_level",
    "fix_polarity",
    "border_grain",
    "InkLevels",
    "contrast_levels",
    "remove_specks",
    "stretch_contrast",
    "ink_bounding_box",
    "stroke_width",
    "dilate",
    "erode",
    "working_copy",
    "plain_background",
    "ink_map",
    "select_digit",
    "crop_digit",
    "scale_to_box",
    "centre_by_mass",
]

# After stretching a small picture, values below this are noise (JPEG ringing, faint smudges); on
# grainy paper the floor rises to GRAIN_SIGMAS standard deviations of the border's grain (6 sigma:
# about one false pixel in 10^9 for Gaussian noise).
NOISE_FLOOR = 0.1
# Pictures are cleaned up at most this many pixels on their longer side (area-averaged down by a
# whole factor): a digit small in the middle of a phone photo keeps 50 px or more, and every step's
# cost is bounded.
WORKING_MAX_SIDE = 512
# Stretched values at or above this are ink for the bounding box: all that the floor leaves.
INK_THRESHOLD = NOISE_FLOOR

# Stroke width of MNIST digits at the 20 px box scale, by the estimator in `stroke_width`
# (measured on the 10,000 test digits): 1st percentile 1.52 px, 5th 1.76, median 2.54, 99th 4.73.
# Strokes thinner than nearly every MNIST digit's lose most of their ink to area averaging (a 1 px
# pen line on a 500 px canvas would end up 0.05 px wide): they are widened to the median. Strokes
# within MNIST's range are left as they are.
THIN_STROKE_PX = 1.5
TYPICAL_STROKE_PX = 2.5
# Strokes bolder than nearly every MNIST digit's (a marker, a thick brush) close loops and merge
# neighbouring strokes at 20 px: they are eroded to the typical width.
BOLD_STROKE_PX = 4.0
# A crop this small (a low-resolution scan) is upsampled to the box with a Lanczos filter, whose
# smooth interpolation rounds the blocky pixels into strokes.
LOW_RES_SIDE = 16
# The upsampled scan's values are raised to this power: its strokes' cores stay at 1 while the wide
# soft edges of a scan pixel blown up 2-3 times fade, towards the sharper profile of MNIST's strokes.
LOW_RES_EDGE_POWER = 1.5
# Pictures up to MAX_BLOW_UP * LOW_RES_SIDE px made of k x k blocks (k up to MAX_BLOW_UP) are
# such scans enlarged with nearest-neighbour resampling.
MAX_BLOW_UP = 8
# A picture whose background is one flat grey level (a drawing app's canvas, a rendered image) is
# no photographed page: at least PLAIN_BORDER_SHARE of its border and PLAIN_SHARE of all its pixels
# lie within PLAIN_TOLERANCE (half an 8-bit grey level) of the border's level.
PLAIN_TOLERANCE = 0.5 / 255
PLAIN_BORDER_SHARE = 0.9
PLAIN_SHARE = 0.5
# Large crops are max-pooled to 8-16 times the box size: that widens strokes by at most 1/8 px of
# the final digit, and dilation there is cheap (at most 320 px a side). Thin strokes on a smaller
# crop are dilated at 8 times the box size too.
WORKING_OVERSAMPLE = 8


# numpy's dtype kinds of real numbers: floating, signed and unsigned integer, boolean.
_NUMBER_KINDS = "fiub"
# Below this many values a full sort is cheaper than numpy's two-element partition (numpy 2.4: at
# 1,000 values 4.3 against 4.6 us, at 2,000 8.4 against 5.9).
_SORT_BELOW = 1024


def _checked_gray(gray: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(float32 image, its lowest value, its highest value) of a 2-D image in [0, 1]; InvalidInput otherwise."""
    array = np.asarray(gray)
    if array.ndim != 2 or array.size == 0:
        raise InvalidInput(f"a grayscale image must be a non-empty 2-D array (H, W), got shape {array.shape}")
    if array.dtype.kind not in _NUMBER_KINDS:
        raise InvalidInput(f"grayscale pixels must be numbers, got dtype {array.dtype}")
    # In the array's own dtype (a float64 beyond float32's range must not overflow on the cast). NaN
    # carries through min and max, so the two extremes tell whether every value is finite.
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidInput("the image holds NaN or infinite pixel values; send finite values in [0, 1]")
    if low < 0.0 or high > 1.0:
        raise InvalidInput(
            f"grayscale pixel values must lie in [0, 1], got [{low:g}, {high:g}]; divide 8-bit pixels by 255"
        )
    return array.astype(np.float32, copy=False), low, high


def _as_gray(gray: np.ndarray) -> np.ndarray:
    return _checked_gray(gray)[0]


def _median_of_scratch(values: np.ndarray) -> float:
    """np.median of a 1-D array the caller no longer needs (it is reordered in place), without
    np.median's overhead, which is most of its cost on a small image."""
    count = values.size
    lower, upper = (count - 1) // 2, count // 2
    if count < _SORT_BELOW:
        values.sort()
    else:
        values.partition((lower, upper))
    return (float(values[lower]) + float(values[upper])) / 2.0


def _border_ring(gray: np.ndarray) -> np.ndarray:
    """A copy of the outermost ring of pixels (corners once per side they lie on); of the whole
    image when it is that thin."""
    if min(gray.shape) <= 2:
        return gray.flatten()
    return np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))


def border_level(gray: np.ndarray) -> float:
    """The background's grey level: the median of the image's outermost ring of pixels."""
    return _median_of_scratch(_border_ring(gray))


def border_grain(gray: np.ndarray) -> float:
    """The background's noise (paper grain, sensor noise) as a standard deviation.

    Estimated from differences between neighbouring pixels along the border: grain makes every
    difference jump, while strokes that cross or run along the border make only a few jumps at
    their edges, so the median of the differences ignores them even for a digit cropped tight.
    For Gaussian noise of deviation s a difference has deviation s * sqrt(2) and median absolute
    value 0.6745 * s * sqrt(2).
    """
    height, width = gray.shape
    if min(height, width) <= 2:
        line = gray.ravel()
        differences = line[1:] - line[:-1]
    else:
        rows, columns = gray[:: height - 1], gray[:, :: width - 1]  # the first and last of each
        differences = np.concatenate((rows[:, 1:] - rows[:, :-1], columns[1:] - columns[:-1]), axis=None)
    if differences.size == 0:
        return 0.0
    return _median_of_scratch(np.abs(differences, out=differences)) / (0.6745 * math.sqrt(2.0))


def _ink_is_dark(background: float, low: float, high: float) -> bool:
    """Whether the ink is the darkest extreme: the one farther from the background (a tie: light)."""
    return background - low > high - background


def fix_polarity(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(ink bright on dark, background level of that image): inverts dark-ink-on-paper images.

    The ink is the extreme farther from the background, so light-grey paper with dark ink and a
    dark-grey slate with chalk are both read right. A tie (a uniform image) is left as it is.
    """
    background = border_level(gray)
    if _ink_is_dark(background, float(gray.min()), float(gray.max())):
        return np.subtract(1.0, gray, dtype=np.float32), 1.0 - background
    return gray, background


@dataclass(frozen=True)
class InkLevels:
    """How to stretch an image: background -> 0, ink -> 1, grain below noise_floor -> 0.

    Levels are the image's own grey levels: for dark ink on paper the ink lies below the
    background, and the stretch inverts as it scales (no inverted copy of the image is made).
    """

    background: float
    ink: float
    noise_floor: float  # on the stretched scale

    def unstretched(self, stretched_value: float) -> float:
        return self.background + stretched_value * (self.ink - self.background)


def _contrast_levels(gray: np.ndarray, background: float, ink_extreme: float, ink_is_dark: bool) -> InkLevels | None:
    span = background - ink_extreme if ink_is_dark else ink_extreme - background
    if span < MIN_INK_CONTRAST:
        return None
    # The median of the clearly-inked pixels, not the extreme: one hot pixel must not dim the digit.
    if ink_is_dark:
        clearly_inked = gray[gray <= background - span / 2]
    else:
        clearly_inked = gray[gray >= background + span / 2]
    ink = _median_of_scratch(clearly_inked)
    # The floor rises above NOISE_FLOOR on grainy paper, so that grain far from the digit does not
    # count as ink and stretch its bounding box over the whole photo.
    noise_floor = max(NOISE_FLOOR, GRAIN_SIGMAS * border_grain(gray) / abs(ink - background))
    if noise_floor >= 1.0:
        return None  # the "ink" is no brighter than the paper's own grain: pure noise
    return InkLevels(background, ink, noise_floor)


def contrast_levels(ink_bright: np.ndarray, background: float | None = None) -> InkLevels | None:
    """The stretch of an ink-bright image, or None when nothing in it stands out as ink."""
    if background is None:
        background = border_level(ink_bright)
    return _contrast_levels(ink_bright, background, float(ink_bright.max()), ink_is_dark=False)


def _has_inked_neighbour(inked: np.ndarray) -> np.ndarray:
    """Per pixel, whether any of its 8 neighbours is inked (bool in, bool out)."""
    height, width = inked.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = inked
    across = padded[:, :-2] | padded[:, 1:-1]
    across |= padded[:, 2:]  # each pixel or a side neighbour, for every row
    neighbours = across[:-2] | across[2:]  # the three above and the three below
    neighbours |= padded[1:-1, :-2]
    neighbours |= padded[1:-1, 2:]
    return neighbours


def remove_specks(ink: np.ndarray) -> np.ndarray:
    """Zero the inked pixels none of whose 8 neighbours is inked: dust and salt noise, not strokes
    (every pixel of a stroke, even a 1 px one, touches the next). In place; returns ink."""
    ink[~_has_inked_neighbour(ink > 0)] = 0.0
    return ink


def _clip_unit(values: np.ndarray) -> np.ndarray:
    """values clipped to [0, 1] in place (np.clip's own overhead is most of its cost on a small digit)."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)


def _inked(gray: np.ndarray, levels: InkLevels) -> np.ndarray:
    """Where the image is ink past the noise floor, judged on its own (unstretched) levels."""
    threshold = levels.unstretched(levels.noise_floor)
    return gray <= threshold if levels.ink < levels.background else gray >= threshold


def _stretch(pixels: np.ndarray, levels: InkLevels, inked: np.ndarray) -> np.ndarray:
    """Background -> 0, ink -> 1, and 0 wherever `inked` is False (grain, specks)."""
    # In place: on a 4096 x 4096 image every temporary array is another 64 MiB.
    stretched = np.subtract(pixels, levels.background, dtype=np.float32)
    stretched *= np.float32(1.0 / (levels.ink - levels.background))  # negative for dark ink: inverts too
    _clip_unit(stretched)
    stretched *= inked
    return stretched


def stretch_contrast(ink_bright: np.ndarray, background: float | None = None) -> np.ndarray:
    """Background -> 0, ink -> 1, grain and isolated specks -> 0; all zeros when there is no ink."""
    levels = contrast_levels(ink_bright, background)
    if levels is None:
        return np.zeros(ink_bright.shape, dtype=np.float32)
    inked = _inked(ink_bright, levels)
    inked &= _has_inked_neighbour(inked)
    return _stretch(ink_bright, levels, inked)


def _box_of(inked: np.ndarray) -> tuple[slice, slice] | None:
    rows = np.logical_or.reduce(inked, axis=1).nonzero()[0]
    if rows.size == 0:
        return None
    columns = np.logical_or.reduce(inked, axis=0).nonzero()[0]
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def ink_bounding_box(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> tuple[slice, slice] | None:
    """(rows, columns) slices of the smallest box holding every pixel >= threshold; None if none does."""
    return _box_of(ink >= threshold)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 * ink mass / perimeter, for soft (anti-aliased) images too.

    A stroke of width w and length L has mass w * L and two edges of length L. The perimeter is
    summed along rows and columns (an L1 length), which overstates it by 4/pi on average over
    stroke directions; the factor corrects that. The image's own edges count as edges to blank.
    """
    height, width = ink.shape
    padded = np.zeros((height + 2, width + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = ink
    vertical, horizontal = padded[1:] - padded[:-1], padded[:, 1:] - padded[:, :-1]
    perimeter = float(np.abs(vertical, out=vertical).sum()) + float(np.abs(horizontal, out=horizontal).sum())
    if perimeter == 0.0:
        return 0.0
    return 2.0 * float(padded.sum()) / perimeter * (4.0 / math.pi)


def dilate(ink: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation (maximum) over a (2 radius + 1)-square window, done as two 1-D passes."""
    result = ink.astype(np.float32, copy=True)
    for axis in (0, 1):
        source = result.copy()
        length = source.shape[axis]
        for shift in range(1, min(radius, length - 1) + 1):
            ahead = [slice(None)] * 2
            behind = [slice(None)] * 2
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            np.maximum(result[tuple(behind)], source[tuple(ahead)], out=result[tuple(behind)])
            np.maximum(result[tuple(ahead)], source[tuple(behind)], out=result[tuple(ahead)])
    return result


def erode(ink: np.ndarray, radius: int) -> np.ndarray:
    """Grey erosion (minimum) over a disc of the given radius: thins strokes by radius px on each side."""
    if radius <= 0:
        return ink
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(np.ascontiguousarray(ink, dtype=np.float32), disc)


def _max_pool(ink: np.ndarray, factor: int) -> np.ndarray:
    """Maximum over factor x factor blocks (the last ones ragged): shrinks without losing thin strokes."""
    # One strided maximum per offset in the block: 2 * factor calls over the image in all, where a
    # reduction per block (np.maximum.reduceat) loops in C over every block separately.
    rows = ink[::factor].copy()
    for offset in range(1, factor):
        part = ink[offset::factor]
        np.maximum(rows[: len(part)], part, out=rows[: len(part)])
    pooled = rows[:, ::factor].copy()
    for offset in range(1, factor):
        part = rows[:, offset::factor]
        np.maximum(pooled[:, : part.shape[1]], part, out=pooled[:, : part.shape[1]])
    return pooled


def _resize(ink: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32)).resize((width, height), resample)
    return np.array(resized, dtype=np.float32)


def scale_to_box(ink: np.ndarray, box_size: int = DIGIT_BOX) -> np.ndarray:
    """Cropped ink -> the same ink with its longer side box_size px, thin strokes kept visible."""
    return _scale_to_box(_clip_unit(np.array(ink, dtype=np.float32)), box_size)


def _scale_to_box(working: np.ndarray, box_size: int) -> np.ndarray:
    """scale_to_box of float32 ink already in [0, 1] (returned itself when it has the box's size)."""
    working_min = WORKING_OVERSAMPLE * box_size
    if max(working.shape) >= 2 * working_min:
        working = _max_pool(working, max(working.shape) // working_min)
    scale = box_size / max(working.shape)
    stroke = stroke_width(working)
    if 0.0 < stroke * scale < THIN_STROKE_PX and max(working.shape) < working_min:
        # Dilation widens by whole pixels, too coarse a step at a small crop's own resolution; the
        # width is measured again there, where soft edges are resolved.
        upsampled = _resize(working, *fit_longer_side(*working.shape, working_min), Image.Resampling.BILINEAR)
        working = _clip_unit(upsampled)
        scale = box_size / max(working.shape)
        stroke = stroke_width(working)
    if 0.0 < stroke * scale < THIN_STROKE_PX:
        working = dilate(working, math.ceil((TYPICAL_STROKE_PX / scale - stroke) / 2))
    elif stroke * scale > BOLD_STROKE_PX:
        working = erode(working, math.floor((stroke - TYPICAL_STROKE_PX / scale) / 2))
    box_shape = fit_longer_side(*working.shape, box_size)
    if max(working.shape) <= LOW_RES_SIDE < box_size:
        upsampled = _clip_unit(cv2.resize(working, box_shape[::-1], interpolation=cv2.INTER_LANCZOS4))
        return np.power(upsampled, np.float32(LOW_RES_EDGE_POWER), out=upsampled)
    if working.shape == box_shape:
        return working
    # Area averaging from a large crop; from a small one a triangle filter, whose smoothing keeps the
    # soft edges of a digit drawn near the box's own size (plain averaging of few pixels is blockier).
    resample = Image.Resampling.BOX if max(working.shape) >= working_min else Image.Resampling.BILINEAR
    return _clip_unit(_resize(working, *box_shape, resample))


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste digit (at most 28x28) into the 28x28 field, its centre of mass at the format's centre."""
    check_fits(*digit.shape)
    return _centre_by_mass(_clip_unit(np.array(digit, dtype=np.float32)))


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """centre_by_mass of a float32 digit already in [0, 1] that fits the field."""
    height, width = digit.shape
    field = np.zeros(DIGIT_SHAPE, dtype=np.float32)
    if not digit.any():
        return field
    top, left = placement(*centre_of_mass(digit), height, width)
    field[top : top + height, left : left + width] = digit
    return field


def working_copy(gray: np.ndarray) -> np.ndarray:
    """The picture the cleanup works on: a small picture blown up with nearest-neighbour
    resampling (each pixel a k x k block) back at its own resolution, and a large one shrunk by the
    smallest whole factor that brings its longer side to at most WORKING_MAX_SIDE px
    (area-averaged: a whole factor is OpenCV's fast path); otherwise the picture itself."""
    factor = math.ceil(max(gray.shape) / WORKING_MAX_SIDE)
    if factor <= 1:
        return _undo_blow_up(gray)
    height, width = gray.shape
    return cv2.resize(gray, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)


def _undo_blow_up(gray: np.ndarray) -> np.ndarray:
    """gray[::k, ::k] when gray is made of k x k blocks of one value (k up to MAX_BLOW_UP), else gray.

    A low-resolution scan enlarged that way is its few pixels in disguise: at its own size it is
    upsampled smoothly (step 7) instead of being cleaned up as blocky strokes.
    """
    height, width = gray.shape
    if max(height, width) > MAX_BLOW_UP * LOW_RES_SIDE:
        return gray
    middle_row = gray[height // 2]
    for factor in range(MAX_BLOW_UP, 1, -1):
        if height % factor or width % factor:
            continue
        if not np.array_equal(np.repeat(middle_row[::factor], factor), middle_row):
            continue  # the cheap test first: one row
        small = gray[::factor, ::factor]
        if np.array_equal(np.repeat(np.repeat(small, factor, axis=0), factor, axis=1), gray):
            return small
    return gray


def plain_background(gray: np.ndarray) -> bool:
    """Whether the picture's background is one flat grey level, as a drawing app's canvas is.

    Such a picture has no lighting, shadows or grain to clean up, and nothing beyond its border
    (a table, the sheet's edge): a digit drawn near its edge must not be taken for them. A photo's
    paper, however evenly lit, varies by a few grey levels at least.
    """
    ring = _border_ring(gray)
    background = _median_of_scratch(ring.copy())
    ring -= background
    if np.count_nonzero(np.abs(ring, out=ring) <= PLAIN_TOLERANCE) < PLAIN_BORDER_SHARE * ring.size:
        return False
    return np.count_nonzero(np.abs(gray - background) <= PLAIN_TOLERANCE) >= PLAIN_SHARE * gray.size


def ink_map(gray: np.ndarray, low: float | None = None, high: float | None = None) -> tuple[np.ndarray, float] | None:
    """(ink map: 0 on the background, the ink's contrast above it elsewhere; the contrast that is ink),
    or None when nothing in the picture stands out from its grain.

    A picture large enough to hold a page around the digit has its background estimated and
    divided out (``cleanup.flatten_background``); a smaller one (the digit itself, a low-resolution
    scan) is stretched between its border's level and its ink's (``stretch_contrast``).
    """
    if low is None or high is None:
        low, high = float(gray.min()), float(gray.max())
    if high - low < MIN_INK_CONTRAST:
        return None  # uniform: nothing stands out
    background = border_level(gray)
    ink_is_dark = _ink_is_dark(background, low, high)
    if min(gray.shape) >= FLATTEN_MIN_SIDE:
        ink = flatten_background(gray, ink_is_dark)
        threshold = ink_threshold(ink)
        return None if threshold >= float(ink.max()) else (ink, threshold)
    levels = _contrast_levels(gray, background, low if ink_is_dark else high, ink_is_dark)
    if levels is None:
        return None
    stretched = np.subtract(gray, levels.background, dtype=np.float32)
    stretched *= np.float32(1.0 / (levels.ink - levels.background))
    return _clip_unit(stretched), levels.noise_floor


def crop_digit(ink: np.ndarray, digit: np.ndarray) -> np.ndarray:
    """The digit's box of the ink map, its strokes stretched so their ink is 1, everything else 0."""
    box = _box_of(digit)
    crop = ink[box] * digit[box]
    # The median of the clearly-inked pixels, not the peak: one dark blot must not dim the digit.
    peak = float(crop.max())
    level = _median_of_scratch(crop[crop >= peak / 2])
    crop *= np.float32(1.0 / level)
    return _clip_unit(crop)


def to_mnist_format(gray: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1], any size and polarity -> float32 (28, 28) in [0, 1], MNIST's format.

    Ink bright (1) on a dark (0) background, longer side 20 px, centre of mass at (14, 14).
    A picture with no digit in it gives all zeros. Raises InvalidInput for arrays that are not
    finite 2-D [0, 1].
    """
    gray, low, high = _checked_gray(gray)
    work = working_copy(gray)
    found = ink_map(work, low, high)
    if found is None:
        return np.zeros(DIGIT_SHAPE, dtype=np.float32)
    ink, threshold = found
    # Only a page's components are judged by where they lie (a small picture is the digit itself).
    surroundings = min(work.shape) >= FLATTEN_MIN_SIDE and not plain_background(work)
    digit = select_digit(ink, threshold, surroundings=surroundings)
    if digit is None:
        return np.zeros(DIGIT_SHAPE, dtype=np.float32)
    return _centre_by_mass(_scale_to_box(crop_digit(ink, digit), DIGIT_BOX))


def prepare_digit(
    gray: np.ndarray, *, already_mnist: bool, input_size: tuple[int, int] = DIGIT_SHAPE
) -> np.ndarray:
    """-> float32 (1, H, W) for a classifier's "pixels" input: MNIST format, padded to input_size.

    With already_mnist the image must be 28x28, light ink on dark, and is used as it is (values
    checked); otherwise it goes through `to_mnist_format`. Padding is the format's
    (``digit_format.padding_for``: 2 background pixels on each side for 32x32).
    """
    if already_mnist:
        digit = _as_gray(gray)
        if digit.shape != DIGIT_SHAPE:
            raise InvalidInput(
                f"pixels marked as already in MNIST format must be {DIGIT_SIZE}x{DIGIT_SIZE}, got "
                f"{digit.shape[0]}x{digit.shape[1]}; send them without that flag to have them converted"
            )
    elif tuple(input_size) == DIGIT_SHAPE:
        return to_mnist_format(gray)[None]  # a new array already: padding by nothing would copy it
    else:
        digit = to_mnist_format(gray)
    return pad_to_input_size(digit[None], input_size)
