"""Photo cleanup: the page's lighting divided out, and the digit told apart from everything else dark on it.

A phone photo of a digit on paper holds much besides the digit: a lighting gradient, a hand's
shadow, paper that is beige or blue, grain and JPEG noise, print showing through from the back of
the page, ruled lines, a dark table edge along one border, specks of dust. Each step here removes
one kind of it, working on an "ink map" (float32, 0 where the paper is, the ink's contrast above
it elsewhere):

- ``flatten_background``: the paper's brightness at every point (its illumination times its
  colour) is estimated by a grey closing (a maximum then a minimum filter over a window wider
  than any stroke) on a coarse copy of the picture, which fills in the strokes and keeps
  everything that varies slowly or is wider than the window. Dividing the picture by it leaves
  the paper at 1 everywhere, under a shadow or in the light, and the ink at its reflectance, so
  contrast means the same across the page. Light ink on a dark ground is flattened by
  subtracting a grey opening instead (there the ground's own level, not its reflectance, is
  what varies).
- ``ink_grain``: the ink map's noise on the paper, from differences between neighbouring pixels.
  The ink threshold (``ink_threshold``) sits several deviations above it, and never below
  ``MIN_INK_CONTRAST``; a page whose grain is as strong as ink (uniform noise) holds no digit.
- ``ruled_lines``: long, thin, straight runs of ink across most of the picture (ruled paper, a
  margin line), found by a morphological opening with a line as long as half the picture and
  removed before the components are formed, so a line that crosses the digit does not join it
  to the page's edges.
- ``select_digit``: the connected components of the thresholded map are judged one by one. Specks
  (a few pixels), page-edge objects (a table edge or a shadow along the border: in contact with
  the border over a long stretch, without spanning the picture as a tightly cropped digit does),
  shadows (large, solid and low in contrast) and faint marks (print-through, a smudge: much
  fainter than the strongest component) are dropped. The component with the most ink is the
  digit when it is large enough to be one; the components near it (a 5 whose bar was drawn
  apart, a 4 written in two strokes) join it. Nothing digit-like left: no digit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# The server runs many images at once on a pool of threads; OpenCV's own worker threads per call
# would oversubscribe the cores (and hide their CPU time from per-thread accounting).
cv2.setNumThreads(1)

# The background is estimated on a copy whose shorter side is about this many pixels: lighting
# and shadows vary slowly, and the closing there costs next to nothing.
BACKGROUND_GRID = 64
# The closing's window, as a fraction of the picture's shorter side: wider than the boldest stroke
# of a digit that fills the picture, narrower than a shadow or the lit part of a page.
BACKGROUND_WINDOW_FRACTION = 0.2
# Pictures with a shorter side below this are not flattened: they are the digit itself (an MNIST
# image, a tight crop, a low-resolution scan), with no page around it to estimate.
FLATTEN_MIN_SIDE = 48

# Ink is at least this far above the paper (about 20 grey levels of reflectance): faint pencil
# on white paper is 0.15-0.3, JPEG noise and paper texture under 0.05 once the lighting is gone.
MIN_INK_CONTRAST = 0.08
# The threshold rises to this many standard deviations of the paper's grain on noisy pictures.
GRAIN_SIGMAS = 6.0

# A run of ink at least this fraction of the picture's width (height) long, and at most
# LINE_MAX_THICKNESS_FRACTION of it thick, is a ruled line, not a stroke.
LINE_MIN_LENGTH_FRACTION = 0.5
LINE_KERNEL_FRACTION = 0.1
LINE_MAX_THICKNESS_FRACTION = 0.015
LINE_ASPECT = 8
LINE_SQUEEZE = 4

# Components smaller than this are specks (dust, salt noise, JPEG blocks), whatever their contrast.
MIN_COMPONENT_PIXELS = 3
# In a small picture (the digit itself), components of this many pixels or fewer are dust: every
# pixel of a stroke, even a 1 px one, touches the next.
MAX_SPECK_PIXELS = 1
# A component touching the border over at least this fraction of the border's length is part of
# the page's surroundings (a table edge, a shadow), unless it spans at least SPANNING_FRACTION of
# the picture both ways, as a digit cropped tight to its ink does.
EDGE_CONTACT_FRACTION = 0.04
SPANNING_FRACTION = 0.5
EDGE_BAND_FRACTION = 0.08
EDGE_HUG_LENGTH_FRACTION = 0.25
EDGE_BAND_SHARE = 0.8
# A component at least EDGE_LIKE_LENGTH_FRACTION of the picture long and EDGE_LIKE_ASPECT times
# longer than wide is the straight edge of a sheet or a table unless nothing else is inked (a
# "1" drawn alone looks the same).
EDGE_LIKE_LENGTH_FRACTION = 0.6
EDGE_LIKE_ASPECT = 6
# Shadows left after flattening: at least SHADOW_MIN_SIDE_FRACTION of the shorter side both ways,
# filling at least SHADOW_MIN_FILL of their bounding box, with a mean contrast under SHADOW_CONTRAST.
SHADOW_MIN_SIDE_FRACTION = 0.15
SHADOW_MIN_FILL = 0.5
SHADOW_CONTRAST = 0.25
# Components with a mean contrast under this fraction of the strongest one's are faint marks
# (print-through, smudges, pencil ghosts of an erased digit).
FAINT_FRACTION = 0.5
# The digit's longer side is at least this fraction of the picture's longer side (and 3 px):
# smaller marks are dust or noise, not a digit someone meant to send.
MIN_DIGIT_FRACTION = 0.04
MIN_DIGIT_PIXELS = 3
# Components within this fraction of the digit's longer side of its box, with at least
# JOIN_MIN_AREA_FRACTION of its area, are strokes of the same digit.
JOIN_MARGIN_FRACTION = 0.35
JOIN_PASSES = 4
JOIN_MIN_MARGIN_FRACTION = 0.1
JOIN_CONTRAST_FRACTION = 0.7
# Once the digit is found, ink under this fraction of its mean contrast is not part of it.
RELATIVE_THRESHOLD = 0.3
DOMINANCE = 3
MAX_RIVALS = 3
STRONG_INK_RATIO = 2.5
BORDER_WEIGHT = 0.25
DIGIT_CONTRAST_RATIO = 1.6
JOIN_MIN_AREA_FRACTION = 0.02
# A page with at least this many candidate marks is cluttered (print-through text: a mark per
# word); a clean page holds a few. There only strokes at least JOIN_MIN_EXTENT_FRACTION of the main
# stroke's longer side long join the digit (words chain across the page otherwise), and the
# digit's box is judged again at CLUTTER_RELATIVE_THRESHOLD of its strokes' contrast.
CLUTTER_COMPONENTS = 20
JOIN_MIN_EXTENT_FRACTION = 0.3
CLUTTER_RELATIVE_THRESHOLD = 0.45


def _odd(size: float) -> int:
    """The odd whole number nearest above `size` (OpenCV's kernels have a centre pixel), at least 1."""
    return max(1, round(size) | 1)


def flatten_background(gray: np.ndarray, ink_is_dark: bool) -> np.ndarray:
    """The ink map of a picture: 0 on the paper wherever it lies and however lit, the ink's contrast elsewhere.

    1 - picture / paper, the ink's absorption, for dark ink; light ink on a dark ground is first
    inverted to dark on light. float32, in [0, 1].
    """
    if not ink_is_dark:
        gray = np.subtract(np.float32(1.0), gray, dtype=np.float32)
    height, width = gray.shape
    factor = max(1, min(height, width) // BACKGROUND_GRID)
    coarse = cv2.resize(gray, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    window = _odd(BACKGROUND_WINDOW_FRACTION * min(coarse.shape))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (window, window))
    # Padded first, so that the closing's maximum is taken beyond the edges too: a gradient that
    # runs into an edge (a page darker at the bottom) would otherwise come out too bright there.
    pad = window // 2 + 1
    padded = cv2.copyMakeBorder(coarse, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    coarse = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[pad:-pad, pad:-pad]
    # Smooths the closing's steps so that their edges do not print as faint lines on the page.
    coarse = cv2.GaussianBlur(coarse, (0, 0), max(1.0, window / 8))
    paper = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    # A ratio, not a difference: a stroke as wide as the window darkens the paper's estimate
    # there, and a ratio still reads the stroke, darker than that estimate, as ink.
    np.maximum(paper, np.float32(1e-3), out=paper)
    ink = cv2.divide(gray, paper)
    np.subtract(np.float32(1.0), ink, out=ink)
    return np.maximum(ink, np.float32(0.0), out=ink)


def ink_grain(ink: np.ndarray) -> float:
    """The ink map's noise on the paper as a standard deviation, from neighbouring pixels' differences.

    Most of a page is paper, and strokes make few jumps (at their edges), so the median absolute
    difference is the paper's; every fourth row is enough to estimate it.
    """
    rows = ink[::4] if ink.shape[0] >= 8 else ink
    if rows.shape[1] < 2:
        return 0.0
    differences = np.abs(rows[:, 1:] - rows[:, :-1]).ravel()
    if differences.size == 0:
        return 0.0
    return float(np.median(differences)) / (0.6745 * np.sqrt(2.0))


def ink_threshold(ink: np.ndarray) -> float:
    """The contrast above which a pixel of the ink map is ink; above 1 (nothing) on pure noise."""
    return max(MIN_INK_CONTRAST, GRAIN_SIGMAS * ink_grain(ink))


def ruled_lines(inked: np.ndarray) -> np.ndarray:
    """uint8 mask (1 = line) of ruled lines in a uint8 ink mask: long, thin, straight runs, two or
    more of them in the same direction (ruled paper has many; a digit's bar is one).

    Runs of LINE_KERNEL_FRACTION of the picture's width are found by an opening; those that chain
    (8-connected, so a line slanted by perspective still counts) over LINE_MIN_LENGTH_FRACTION of
    the picture and stay thin are lines. The search runs on a copy squeezed LINE_SQUEEZE times
    along the lines' direction (a pixel there is inked if any of its pixels is), where the runs
    are that much shorter and cheaper to find.
    """
    lines = np.zeros_like(inked)
    for horizontal in (True, False):
        found = _lines_along(inked, horizontal)
        if found is not None:
            lines |= found
    return lines


def _lines_along(inked: np.ndarray, horizontal: bool) -> np.ndarray | None:
    """The horizontal (or vertical) ruled lines of a uint8 ink mask (see ruled_lines), or None."""
    height, width = inked.shape
    side, across = (width, height) if horizontal else (height, width)
    squeezed_side = max(1, side // LINE_SQUEEZE)
    length = int(LINE_KERNEL_FRACTION * squeezed_side)
    if length < 4:
        return None
    size = (squeezed_side, height) if horizontal else (width, squeezed_side)  # OpenCV's sizes are (width, height)
    squeezed = cv2.resize(inked, size, interpolation=cv2.INTER_AREA)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (length, 1) if horizontal else (1, length))
    runs = cv2.morphologyEx((squeezed > 0).view(np.uint8), cv2.MORPH_OPEN, kernel)
    if cv2.countNonZero(runs) < 2 * LINE_MIN_LENGTH_FRACTION * squeezed_side:
        return None  # too few long runs for two lines
    count, labels, stats, _ = _components(runs)
    stats = stats.copy()
    stats[:, cv2.CC_STAT_WIDTH if horizontal else cv2.CC_STAT_HEIGHT] *= LINE_SQUEEZE  # the picture's scale
    is_line = np.zeros(count, dtype=bool)
    is_line[1:] = _line_like(stats[1:], side, across, horizontal, squeezed=True)
    if np.count_nonzero(is_line) < 2:
        return None
    found = cv2.resize(is_line[labels].view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    # Where ink runs across the line for longer than a line is thick, a stroke crosses or touches
    # it: those pixels stay, so the digit is not cut where a line runs through it.
    thickest = math.ceil(max(2.5, LINE_MAX_THICKNESS_FRACTION * across)) + 1
    crossing = cv2.morphologyEx(inked, cv2.MORPH_OPEN, cv2.getStructuringElement(
        cv2.MORPH_RECT, (1, thickest) if horizontal else (thickest, 1)))
    return found & inked & (crossing ^ 1)


def _components(inked: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's 8-connected components with their stats, by Grana's block-based labelling (on
    these masks several times faster than OpenCV's default choice)."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(inked, 8, cv2.CV_32S, cv2.CCL_GRANA)


def _line_like(stats: np.ndarray, side: int, across: int, horizontal: bool, squeezed: bool = False) -> np.ndarray:
    """bool per component (OpenCV stats rows): long along `side`, thin across it, and straight (its
    box LINE_ASPECT times longer than wide). `squeezed`: the stats are of a squeezed mask, whose
    area counts each pixel for LINE_SQUEEZE."""
    extent = stats[:, cv2.CC_STAT_WIDTH if horizontal else cv2.CC_STAT_HEIGHT]
    breadth = stats[:, cv2.CC_STAT_HEIGHT if horizontal else cv2.CC_STAT_WIDTH]
    area = stats[:, cv2.CC_STAT_AREA] * (LINE_SQUEEZE if squeezed else 1)
    thickness = area / np.maximum(extent, 1)
    return ((extent >= LINE_MIN_LENGTH_FRACTION * side) & (extent >= LINE_ASPECT * breadth)
            & (thickness <= max(2.5, LINE_MAX_THICKNESS_FRACTION * across)))


@dataclass(frozen=True)
class Components:
    """The connected components of an ink mask, and what the selection looks at for each (index 0: none)."""

    labels: np.ndarray  # int32 (H, W), 0 = no ink
    stats: np.ndarray  # OpenCV's (count, 5): left, top, width, height, area
    mean_contrast: np.ndarray  # float (count,)
    border_contact: np.ndarray  # int (count,): pixels in the picture's outermost ring
    in_border_band: np.ndarray  # int (count,): pixels within EDGE_BAND_FRACTION of a side

    @property
    def count(self) -> int:
        return len(self.stats)


def find_components(ink: np.ndarray, inked: np.ndarray) -> Components:
    """The 8-connected components of the uint8 mask `inked`, measured on the ink map."""
    count, labels, stats, _ = _components(inked)
    where = inked.view(bool)
    contrast_sums = np.bincount(labels[where], weights=ink[where], minlength=count)
    mean_contrast = contrast_sums / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    if min(labels.shape) <= 2:
        ring = labels.ravel()
    else:
        ring = np.concatenate((labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]))
    border_contact = np.bincount(ring, minlength=count)
    height, width = labels.shape
    band_rows, band_columns = math.ceil(EDGE_BAND_FRACTION * height), math.ceil(EDGE_BAND_FRACTION * width)
    band = np.concatenate((labels[:band_rows].ravel(), labels[height - band_rows :].ravel(),
                           labels[band_rows : height - band_rows, :band_columns].ravel(),
                           labels[band_rows : height - band_rows, width - band_columns :].ravel()))
    in_border_band = np.bincount(band, minlength=count)[:count]
    return Components(labels, stats, mean_contrast, border_contact, in_border_band)


def _candidates(components: Components, shape: tuple[int, int], on_page: bool, surroundings: bool = True) -> np.ndarray:
    """bool (count,): the components that may be (part of) a digit; never the background (0)."""
    height, width = shape
    keep = components.stats[:, cv2.CC_STAT_AREA] >= MIN_COMPONENT_PIXELS
    keep[0] = False
    dubious = np.zeros_like(keep)
    if on_page:  # a page around the digit: its surroundings go
        objects, dubious = _page_objects(components, height, width, surroundings)
        keep &= ~objects
        dubious &= keep
        if (keep & ~dubious & _digit_sized(components.stats, shape)).any():
            keep &= ~dubious
    if keep.any():
        keep &= components.mean_contrast >= FAINT_FRACTION * components.mean_contrast[keep].max()
    return keep


def _digit_sized(stats: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool per component: large enough to be a digit someone meant to send (MIN_DIGIT_FRACTION)."""
    longer = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    return longer >= max(MIN_DIGIT_PIXELS, MIN_DIGIT_FRACTION * max(shape))


def _edge_like(stats: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool per component: long and straight across the picture, as a sheet's or a table's edge is."""
    box_width, box_height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    tall = (box_height >= EDGE_LIKE_LENGTH_FRACTION * height) & (box_height >= EDGE_LIKE_ASPECT * box_width)
    wide = (box_width >= EDGE_LIKE_LENGTH_FRACTION * width) & (box_width >= EDGE_LIKE_ASPECT * box_height)
    return tall | wide


def _page_objects(components: Components, height: int, width: int,
                  surroundings: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(bool per component: the page's edge, a table, a shadow or a ruled line, not a stroke;
    bool per component: such an object, unless nothing else is inked, then a digit filling the
    picture: the surroundings spanning it, as a tight crop's digit does, and long straight edges).

    Without `surroundings` (a plain canvas, which shows no table or sheet's edge), where a
    component lies (along the border, in a band beside it) does not make it one of them.
    """
    stats = components.stats
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    box_width, box_height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    area = stats[:, cv2.CC_STAT_AREA]
    band_rows, band_columns = EDGE_BAND_FRACTION * height, EDGE_BAND_FRACTION * width
    # A digit cropped tight to its ink spans the picture and touches (nearly) every side: it stays.
    sides_touched = ((left == 0).astype(int) + (top == 0) + (left + box_width == width)
                     + (top + box_height == height))
    spans = ((box_width >= SPANNING_FRACTION * width) & (box_height >= SPANNING_FRACTION * height)
             & (sides_touched >= 3))
    ring_length = max(1, 2 * (height + width) - 4)
    along_border = components.border_contact >= EDGE_CONTACT_FRACTION * ring_length
    # Thin and across the whole picture, or long within a narrow band along one side: the edge of
    # a table or of the page's shadow.
    across = ((left == 0) & (left + box_width == width) & (box_height <= band_rows)) | (
        (top == 0) & (top + box_height == height) & (box_width <= band_columns))
    hugs = (((top <= band_rows) | (top + box_height >= height - band_rows)) & (box_height <= band_rows)
            & (box_width >= EDGE_HUG_LENGTH_FRACTION * width))
    hugs |= (((left <= band_columns) | (left + box_width >= width - band_columns)) & (box_width <= band_columns)
             & (box_height >= EDGE_HUG_LENGTH_FRACTION * height))
    # Nearly all within that band along the sides (the corner of a sheet on a table): the same.
    banded = components.in_border_band >= EDGE_BAND_SHARE * area
    beside_border = along_border | across | hugs | banded
    if not surroundings:
        beside_border[:] = False
    fill = area / np.maximum(box_width * box_height, 1)
    big = np.minimum(box_width, box_height) >= SHADOW_MIN_SIDE_FRACTION * min(height, width)
    shadows = big & (fill >= SHADOW_MIN_FILL) & (components.mean_contrast < SHADOW_CONTRAST)
    lines = _line_like(stats, width, height, True) | _line_like(stats, height, width, False)
    return (beside_border & ~spans) | shadows | lines, (beside_border & spans) | _edge_like(stats, height, width)


def select_digit(ink: np.ndarray, threshold: float, surroundings: bool = True) -> np.ndarray | None:
    """bool (H, W) mask of the digit's strokes in an ink map, or None when nothing in it is digit-like.

    Ruled lines are removed first. Ink at least `threshold` is judged then; when the digit found is much
    darker than that, its box is judged again at RELATIVE_THRESHOLD of its strokes' contrast, so
    that faint marks touching the digit (print-through, a shadow's rim) no longer join it; the
    ink within 2 px of the strokes found there (their soft edges) is kept. A small picture (the
    digit itself, a tight crop, a low-resolution scan) has no page around the digit: all its ink
    but single-pixel specks (MAX_SPECK_PIXELS) is the digit. `surroundings`: whether the picture
    may show the page's surroundings (a table, a shadow, the sheet's edge) beside its border; a
    drawing app's plain canvas does not, and a digit drawn near its edge is no table edge.
    """
    if min(ink.shape) < FLATTEN_MIN_SIDE:
        return _all_but_specks(ink >= threshold)
    lines = ruled_lines((ink >= threshold).view(np.uint8))
    if lines.any():
        ink = ink * (lines ^ 1)  # a copy: the caller's map keeps its lines
    found = _select(ink, threshold, on_page=True, surroundings=surroundings)
    if found is None:
        # The digit may be joined to a shadow's or the table's rim, and dropped with it: the
        # clearly dark ink off the border alone is judged again.
        found = _select(ink, STRONG_INK_RATIO * threshold, on_page=True, off_border=True, surroundings=surroundings)
    if found is None:
        return None
    digit, box, contrast, cluttered = found
    raised = (CLUTTER_RELATIVE_THRESHOLD if cluttered else RELATIVE_THRESHOLD) * contrast
    if raised <= 1.25 * threshold:
        return digit
    again = _select(ink[box], raised, on_page=False, cluttered=cluttered)
    if again is None:
        return digit
    strokes = np.zeros(ink.shape, dtype=np.uint8)
    strokes[box] = again[0]
    edges = cv2.dilate(strokes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return (ink >= threshold) & edges.view(bool)


def _all_but_specks(inked: np.ndarray) -> np.ndarray | None:
    """The inked pixels of components larger than MAX_SPECK_PIXELS, or None when there are none."""
    _, labels, stats, _ = _components(inked.view(np.uint8))
    large = stats[:, cv2.CC_STAT_AREA] > MAX_SPECK_PIXELS
    large[0] = False
    return large[labels] if large.any() else None


def _select(ink: np.ndarray, threshold: float, on_page: bool, off_border: bool = False,
            surroundings: bool = True, cluttered: bool = False
            ) -> tuple[np.ndarray, tuple[slice, slice], float, bool] | None:
    """(the digit's mask, its box, its main stroke's core contrast, whether the page is cluttered)
    at one threshold, or None.

    On a page, the page's surroundings are no candidates; within the digit's own box, every
    component is. `off_border`: nothing that touches the picture's border is. `cluttered` (or
    CLUTTER_COMPONENTS candidates on a page): only long strokes join the digit.
    """
    inked = (ink >= threshold).view(np.uint8)
    components = find_components(ink, inked)
    keep = _candidates(components, ink.shape, on_page, surroundings)
    if off_border:
        keep &= components.border_contact == 0
    if not keep.any():
        return None
    cluttered = cluttered or (on_page and np.count_nonzero(keep) >= CLUTTER_COMPONENTS)
    # On a page, weighed by their clearly dark pixels: a faint spread (print-through, a shadow's
    # rim, paper texture) has few or none, however large it is. Marks on the border weigh less:
    # the digit is written on the page, not at its edge.
    strong_level = STRONG_INK_RATIO * threshold if on_page else threshold
    strong = np.bincount(components.labels[ink >= strong_level], minlength=components.count)
    mass = np.where(keep, strong * components.mean_contrast ** 2, 0.0)
    if on_page:
        mass[components.border_contact > 0] *= BORDER_WEIGHT
    stats = components.stats
    digit_sized = _digit_sized(stats, ink.shape)
    main = int(np.argmax(mass))
    if strong[main] < MIN_COMPONENT_PIXELS:
        return None
    left, top, width, height = (int(value) for value in stats[main, :4])
    if on_page and (not digit_sized[main] or components.mean_contrast[main] < DIGIT_CONTRAST_RATIO * threshold):
        return None  # too small, or barely clearing the threshold: dust or paper texture, not a digit
    chosen = _join(components, keep, main, max(ink.shape), cluttered)
    if on_page:
        # Rivals off the border: what touches it is more likely the page's surroundings than a digit.
        rivals = np.where(keep & ~chosen & (components.border_contact == 0), mass, 0.0)
        comparable = rivals * DOMINANCE > mass[chosen].sum()
        if np.count_nonzero(comparable) >= MAX_RIVALS:
            return None  # marks of the same weight all over: noise or texture, not one digit
        # A few marks of the digit's weight away from it: pieces of the digit (strokes drawn apart,
        # a thin line broken by the camera), as everything inked once was.
        chosen |= comparable
    main_box = (slice(top, top + height), slice(left, left + width))
    cores = ink[main_box][components.labels[main_box] == main]
    rank = int(0.9 * (cores.size - 1))  # the 90th percentile: the strokes' cores, not their edges
    lefts, tops = stats[chosen, cv2.CC_STAT_LEFT], stats[chosen, cv2.CC_STAT_TOP]
    box = (slice(int(tops.min()), int((tops + stats[chosen, cv2.CC_STAT_HEIGHT]).max())),
           slice(int(lefts.min()), int((lefts + stats[chosen, cv2.CC_STAT_WIDTH]).max())))
    return chosen[components.labels], box, float(np.partition(cores, rank)[rank]), cluttered


def _join(components: Components, keep: np.ndarray, main: int, picture_side: int, cluttered: bool) -> np.ndarray:
    """bool per component: the main one and the strokes near it (JOIN_* rules), grown pass by pass;
    on a cluttered page only strokes at least JOIN_MIN_EXTENT_FRACTION of the main one's length."""
    stats = components.stats
    area = stats[:, cv2.CC_STAT_AREA]
    chosen = np.zeros(components.count, dtype=bool)
    chosen[main] = True
    joinable = keep & (area >= JOIN_MIN_AREA_FRACTION * area[main])
    joinable &= components.mean_contrast >= JOIN_CONTRAST_FRACTION * components.mean_contrast[main]
    if cluttered:
        extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
        joinable &= extent >= JOIN_MIN_EXTENT_FRACTION * extent[main]
    joinable[main] = False
    lefts, tops = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    rights, bottoms = lefts + stats[:, cv2.CC_STAT_WIDTH], tops + stats[:, cv2.CC_STAT_HEIGHT]
    box = [lefts[main], tops[main], rights[main], bottoms[main]]
    for _ in range(JOIN_PASSES):  # each pass takes in strokes near the digit as it has grown so far
        margin = max(JOIN_MARGIN_FRACTION * max(box[2] - box[0], box[3] - box[1]),
                     JOIN_MIN_MARGIN_FRACTION * picture_side)
        near = ((lefts <= box[2] + margin) & (rights >= box[0] - margin)
                & (tops <= box[3] + margin) & (bottoms >= box[1] - margin))
        joining = joinable & near & ~chosen
        if not joining.any():
            break
        chosen |= joining
        box = [lefts[chosen].min(), tops[chosen].min(), rights[chosen].max(), bottoms[chosen].max()]
    return chosen
