"""Any picture of a digit -> the 28x28 format MNIST classifiers were trained on.

The format itself (28x28, light ink on dark, the longer side of the ink 20 px, its centre of mass
at (14, 14), padding to a model's input size) is defined in serve.images.digit_format.
A user's image (a phone photo of ink on paper, a canvas export, a scan) is brought there in steps,
each a function below that is tested on its own:

1. Grayscale: ``decode_image`` (serve.images.decode), with transparency composited onto the paper.
2. Polarity (``fix_polarity``): the background level is the median of the outermost ring of
   pixels; the ink is whichever extreme (darkest or brightest pixel) lies farther from it. Dark
   ink on light paper is inverted so the ink is bright, as in MNIST.
3. Contrast (``stretch_contrast``): subtract the background level and divide by the ink level
   (the median of the pixels at least halfway from background to the brightest pixel), so
   background -> 0 and ink -> 1. Values below a noise floor -> 0: ``NOISE_FLOOR`` (JPEG ringing,
   faint smudges), or ``GRAIN_SIGMAS`` times the border's measured grain if that is higher (photos
   of paper). Inked pixels with no inked neighbour (dust, salt noise) -> 0. An image with no pixel
   ``MIN_INK_CONTRAST`` above its background, or none above its grain, has no ink.
4. Crop (``ink_bounding_box``) to the rows and columns that hold ink.
5. Scale (``scale_to_box``) so the longer side is 20 px. The crop is first brought to a working
   size of 160-320 px on its longer side (max-pooling by an integer factor when larger, so a 1 px
   stroke on a 4000 px photo survives; bilinear upsampling when smaller). Strokes whose width
   would end up thinner than the thinnest MNIST strokes are dilated to MNIST's typical width,
   then the image is area-averaged (box filter) down to the 20 px box.
6. Centre (``centre_by_mass``): paste into 28x28 with the centre of mass moved to (14, 14),
   offsets rounded to whole pixels and clamped so no ink leaves the field; values clipped to [0, 1].

A blank image (no ink after step 3: a white sheet, a fully transparent PNG) is still a valid image:
it becomes an all-zero 28x28 digit and is classified like any other (refusing it would fail a
well-formed request; a client that cares can look at the answer's probability). Only malformed
input is an error.

What it does not do, as MNIST did not: deskew, correct uneven lighting, or separate several digits.
Everything inked counts as the digit, so a second mark (a ruled line, a blob of dirt) widens the
crop and shrinks the digit; single-pixel specks and uniform grain are removed (step 3).

``prepare_digit`` then pads the 28x28 digit with background to the model's input size (32x32 for
LeNet-5 as LeCun fed it) and adds the channel axis. Raw pixels that are already in MNIST format
(28x28, light on dark, centred) skip steps 2-6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from serve.core.errors import InvalidInput
from serve.images.decode import ImageLimits, decode_image, raw_pixels_to_array
from serve.images.digit_format import (
    DIGIT_BOX,
    DIGIT_SHAPE,
    DIGIT_SIZE,
    centre_of_mass,
    check_fits,
    fit_longer_side,
    pad_to_input_size,
    placement,
)

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
    "scale_to_box",
    "centre_by_mass",
]

# An image whose brightest pixel is less than this above the background (about 20 grey levels)
# holds no ink: paper grain and sensor noise, not a digit.
MIN_INK_CONTRAST = 0.08
# After stretching, values below this are noise (paper texture, JPEG ringing) and set to 0; on
# grainy paper the floor rises to GRAIN_SIGMAS standard deviations of the border's grain (6 sigma:
# about one false pixel in 10^9 for Gaussian noise, none expected in a 16-megapixel photo).
NOISE_FLOOR = 0.1
GRAIN_SIGMAS = 6.0
# Stretched values at or above this are ink for the bounding box: all that the floor leaves.
INK_THRESHOLD = NOISE_FLOOR

# Stroke width of MNIST digits at the 20 px box scale, by the estimator in `stroke_width`
# (measured on the 10,000 test digits): 1st percentile 1.52 px, 5th 1.76, median 2.54, 99th 4.73.
# Strokes thinner than nearly every MNIST digit's lose most of their ink to area averaging (a 1 px
# pen line on a 500 px canvas would end up 0.05 px wide): they are widened to the median. Strokes
# within MNIST's range are left as they are.
THIN_STROKE_PX = 1.5
TYPICAL_STROKE_PX = 2.5
# Scaling works at 8-16 times the box size: max-pooling down to it then widens strokes by at most
# 1/8 px of the final digit, and dilation there is cheap (at most 320 px a side).
WORKING_OVERSAMPLE = 8


def _as_gray(gray: np.ndarray) -> np.ndarray:
    array = np.asarray(gray)
    if array.ndim != 2 or array.size == 0:
        raise InvalidInput(f"a grayscale image must be a non-empty 2-D array (H, W), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        raise InvalidInput(f"grayscale pixels must be numbers, got dtype {array.dtype}")
    # Checked in the array's own dtype: a float64 beyond float32's range must not overflow on the cast.
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InvalidInput("the image holds NaN or infinite pixel values; send finite values in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInput(
            f"grayscale pixel values must lie in [0, 1], got [{low:g}, {high:g}]; divide 8-bit pixels by 255"
        )
    return array.astype(np.float32, copy=False)


def _border_sides(gray: np.ndarray) -> list[np.ndarray]:
    """The four sides of the outermost ring (corners shared); the whole image when it is that thin."""
    if min(gray.shape) <= 2:
        return [gray.ravel()]
    return [gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]]


def border_level(gray: np.ndarray) -> float:
    """The background's grey level: the median of the image's outermost ring of pixels."""
    return float(np.median(np.concatenate(_border_sides(gray))))


def border_grain(gray: np.ndarray) -> float:
    """The background's noise (paper grain, sensor noise) as a standard deviation.

    Estimated from differences between neighbouring pixels along the border: grain makes every
    difference jump, while strokes that cross or run along the border make only a few jumps at
    their edges, so the median of the differences ignores them even for a digit cropped tight.
    For Gaussian noise of deviation s a difference has deviation s * sqrt(2) and median absolute
    value 0.6745 * s * sqrt(2).
    """
    differences = np.concatenate([np.abs(np.diff(side)) for side in _border_sides(gray)])
    if differences.size == 0:
        return 0.0
    return float(np.median(differences)) / (0.6745 * math.sqrt(2.0))


def fix_polarity(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(ink bright on dark, background level of that image): inverts dark-ink-on-paper images.

    The ink is the extreme farther from the background, so light-grey paper with dark ink and a
    dark-grey slate with chalk are both read right. A tie (a uniform image) is left as it is.
    """
    background = border_level(gray)
    dark_ink_contrast = background - float(gray.min())
    light_ink_contrast = float(gray.max()) - background
    if dark_ink_contrast > light_ink_contrast:
        return np.subtract(1.0, gray, dtype=np.float32), 1.0 - background
    return gray, background


@dataclass(frozen=True)
class InkLevels:
    """How to stretch an ink-bright image: background -> 0, ink -> 1, grain below noise_floor -> 0."""

    background: float
    ink: float
    noise_floor: float  # on the stretched scale

    def unstretched(self, stretched_value: float) -> float:
        return self.background + stretched_value * (self.ink - self.background)


def contrast_levels(ink_bright: np.ndarray, background: float | None = None) -> InkLevels | None:
    """The stretch of an ink-bright image, or None when nothing in it stands out as ink."""
    if background is None:
        background = border_level(ink_bright)
    span = float(ink_bright.max()) - background
    if span < MIN_INK_CONTRAST:
        return None
    # The median of the clearly-inked pixels, not the maximum: one hot pixel must not dim the digit.
    ink = float(np.median(ink_bright[ink_bright >= background + span / 2]))
    # The floor rises above NOISE_FLOOR on grainy paper, so that grain far from the digit does not
    # count as ink and stretch its bounding box over the whole photo.
    noise_floor = max(NOISE_FLOOR, GRAIN_SIGMAS * border_grain(ink_bright) / (ink - background))
    if noise_floor >= 1.0:
        return None  # the "ink" is no brighter than the paper's own grain: pure noise
    return InkLevels(background, ink, noise_floor)


def remove_specks(ink: np.ndarray) -> np.ndarray:
    """Zero the inked pixels none of whose 8 neighbours is inked: dust and salt noise, not strokes
    (every pixel of a stroke, even a 1 px one, touches the next). In place; returns ink."""
    inked = np.pad(ink > 0, 1)
    has_inked_neighbour = np.zeros(ink.shape, dtype=bool)
    height, width = ink.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                has_inked_neighbour |= inked[dy : dy + height, dx : dx + width]
    ink[~has_inked_neighbour] = 0.0
    return ink


def _stretch(ink_bright: np.ndarray, levels: InkLevels) -> np.ndarray:
    # In place: on a 4096 x 4096 image every temporary array is another 64 MiB.
    stretched = np.subtract(ink_bright, levels.background, dtype=np.float32)
    stretched *= np.float32(1.0 / (levels.ink - levels.background))
    np.clip(stretched, 0.0, 1.0, out=stretched)
    stretched[stretched < levels.noise_floor] = 0.0
    return remove_specks(stretched)


def stretch_contrast(ink_bright: np.ndarray, background: float | None = None) -> np.ndarray:
    """Background -> 0, ink -> 1, grain and isolated specks -> 0; all zeros when there is no ink."""
    levels = contrast_levels(ink_bright, background)
    if levels is None:
        return np.zeros(ink_bright.shape, dtype=np.float32)
    return _stretch(ink_bright, levels)


def ink_bounding_box(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> tuple[slice, slice] | None:
    """(rows, columns) slices of the smallest box holding every pixel >= threshold; None if none does."""
    inked = ink >= threshold
    rows = np.flatnonzero(inked.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(inked.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 * ink mass / perimeter, for soft (anti-aliased) images too.

    A stroke of width w and length L has mass w * L and two edges of length L. The perimeter is
    summed along rows and columns (an L1 length), which overstates it by 4/pi on average over
    stroke directions; the factor corrects that.
    """
    padded = np.pad(ink.astype(np.float32, copy=False), 1)
    perimeter = float(np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum())
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


def _max_pool(ink: np.ndarray, factor: int) -> np.ndarray:
    """Maximum over factor x factor blocks (the last ones ragged): shrinks without losing thin strokes."""
    rows_pooled = np.maximum.reduceat(ink, np.arange(0, ink.shape[0], factor), axis=0)
    return np.maximum.reduceat(rows_pooled, np.arange(0, ink.shape[1], factor), axis=1)


def _resize(ink: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32)).resize((width, height), resample)
    return np.asarray(resized, dtype=np.float32)


def scale_to_box(ink: np.ndarray, box_size: int = DIGIT_BOX) -> np.ndarray:
    """Cropped ink -> the same ink with its longer side box_size px, thin strokes kept visible."""
    height, width = ink.shape
    longer = max(height, width)
    working = ink.astype(np.float32, copy=False)
    working_min = WORKING_OVERSAMPLE * box_size
    if longer < working_min:
        working = _resize(working, *fit_longer_side(height, width, working_min), Image.Resampling.BILINEAR)
    elif longer >= 2 * working_min:
        working = _max_pool(working, longer // working_min)
    working = np.clip(working, 0.0, 1.0)
    scale = box_size / max(working.shape)
    stroke = stroke_width(working)
    if 0.0 < stroke * scale < THIN_STROKE_PX:
        working = dilate(working, math.ceil((TYPICAL_STROKE_PX / scale - stroke) / 2))
    boxed = _resize(working, *fit_longer_side(*working.shape, box_size), Image.Resampling.BOX)
    return np.clip(boxed, 0.0, 1.0)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste digit (at most 28x28) into the 28x28 field, its centre of mass at the format's centre."""
    height, width = digit.shape
    check_fits(height, width)
    field = np.zeros(DIGIT_SHAPE, dtype=np.float32)
    if not digit.any():
        return field
    top, left = placement(*centre_of_mass(digit), height, width)
    field[top : top + height, left : left + width] = digit
    return np.clip(field, 0.0, 1.0)


def to_mnist_format(gray: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1], any size and polarity -> float32 (28, 28) in [0, 1], MNIST's format.

    Ink bright (1) on a dark (0) background, longer side 20 px, centre of mass at (14, 14).
    A blank image gives all zeros. Raises InvalidInput for arrays that are not finite 2-D [0, 1].
    """
    blank = np.zeros(DIGIT_SHAPE, dtype=np.float32)
    ink_bright, background = fix_polarity(_as_gray(gray))
    levels = contrast_levels(ink_bright, background)
    if levels is None:
        return blank
    # Steps 3 and 4 swapped for speed, same result: the stretch is monotonic, so the ink's box can
    # be found on the unstretched image and only the crop stretched (a digit in a corner of a
    # 4096 x 4096 photo then costs no full-size temporaries). The box is re-taken on the stretched
    # crop, once specks are gone and so that float rounding at the threshold leaves no empty rows.
    rough_box = ink_bounding_box(ink_bright, levels.unstretched(levels.noise_floor))
    if rough_box is None:
        return blank
    ink = _stretch(ink_bright[rough_box], levels)
    box = ink_bounding_box(ink)
    if box is None:
        return blank
    return centre_by_mass(scale_to_box(ink[box]))


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
    else:
        digit = to_mnist_format(gray)
    return pad_to_input_size(digit[None], input_size)
