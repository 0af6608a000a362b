"""Non-digit pictures for outlier exposure: letters, symbols and shapes, in MNIST's format.

A classifier trained on digits alone ranks its ten classes confidently for anything with ink.
Outlier exposure (Hendrycks, Mazeika and Dietterich, 2019) also shows it non-digits during
training and pushes its output for them towards the uniform distribution, so that a low top
probability comes to mean "no digit here".

The pictures are drawn here, reproducibly from a seed: glyphs rendered with the DejaVu fonts
(Pillow's built-in font where those are missing, so training works anywhere) and procedural
shapes (filled blobs and polygons, hatching, self-crossing scribbles, noise textures). Each is
drawn large, dark ink on light paper, and brought to MNIST's format by the server's own pipeline
(`contracts.images.preprocess.to_mnist_format`), so the model sees a non-digit exactly as the
server would feed it one.

What is left out matters as much as what is drawn: glyphs and shapes that read as digits (O, I,
l, S, Z, B, g, q, a plain ring, a single stroke ...) would teach the model to refuse real digits.
The evaluation's non-digits are made elsewhere from other fonts and from photographs; nothing
here may use those, so that training and evaluation stay disjoint.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from contracts.digit_format import to_uint8
from contracts.images.preprocess import to_mnist_format

DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
DEJAVU_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansCondensed.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf", "DejaVuSerifCondensed-BoldItalic.ttf",
)
# Glyphs that read as digits once scaled into MNIST's 20-pixel box: never drawn as non-digits.
DIGIT_LOOKALIKES = frozenset(
    "0123456789"
    "OoQDIlij|!/\\()[]-_"  # rings and single strokes: 0 and 1
    "SsZz$§?"  # 5 and 2
    "BbGgqdp&δβθ"  # loops over stems: 6, 8 and 9
    "£Γ"  # read as 2 or 7
)
# The glyphs drawn: letters and symbols, none of DIGIT_LOOKALIKES.
GLYPHS = tuple(
    glyph
    for glyph in (
        "ACEFHJKLMNPRTUVWXY"
        "acefhkmnrtuvwxy"
        "#%@*+=<>~^{}×÷±©®¶€¥"
        "ΩΣΔΠΦΨΓΞλπµαφψω"
    )
    if glyph not in DIGIT_LOOKALIKES
)
CANVAS = 112  # pixels a side: drawn large, like a photographed picture, then reduced by the pipeline
PAPER, INK = 255, 0


@dataclass(frozen=True)
class OutlierPool:
    images: np.ndarray  # uint8 (N, 28, 28), MNIST's format: ink bright on dark
    kinds: tuple[str, ...]  # what each image is: "glyph", "pair", "blob", "polygon", ...

    def __len__(self) -> int:
        return len(self.images)


def make_outliers(count: int, seed: int = 0) -> OutlierPool:
    """`count` non-digit images in MNIST's format; the same seed gives the same images.

    Glyphs (single letters and symbols, and pairs of them) and procedural shapes, in the shares of _MAKERS.
    A drawing that the pipeline finds blank is drawn again with the next draw of the generator.
    """
    if count < 0:
        raise ValueError(f"the outlier count cannot be negative, got {count}")
    rng = np.random.default_rng(seed)
    weights = np.array([weight for _, _, weight in _MAKERS])
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    kinds = []
    for index in range(count):
        while True:
            kind, maker, _ = _MAKERS[int(rng.choice(len(_MAKERS), p=weights / weights.sum()))]
            picture = maker(rng)
            digit = to_mnist_format(np.asarray(picture, dtype=np.float32) / 255.0)
            if digit.max() > 0:
                break
        images[index] = to_uint8(digit)
        kinds.append(kind)
    return OutlierPool(images, tuple(kinds))


# --- Glyphs -------------------------------------------------------------------------------------

@functools.cache
def _font(face: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if face is not None:
        return ImageFont.truetype(str(DEJAVU_DIR / face), size)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=1)
def available_faces() -> tuple[str | None, ...]:
    """The DejaVu faces on this machine; (None,) for Pillow's built-in font when there are none."""
    faces = tuple(face for face in DEJAVU_FACES if (DEJAVU_DIR / face).is_file())
    return faces or (None,)


def _text(rng: np.random.Generator, text: str) -> Image.Image:
    faces = available_faces()
    font = _font(faces[int(rng.integers(len(faces)))], int(rng.integers(56, 84)))
    picture = Image.new("L", (CANVAS, CANVAS), PAPER)
    ImageDraw.Draw(picture).text((CANVAS / 2, CANVAS / 2), text, font=font, fill=INK, anchor="mm")
    angle = float(rng.uniform(-15, 15))
    picture = picture.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=PAPER)
    if rng.random() < 0.3:
        picture = picture.filter(ImageFilter.MinFilter(3))  # a bolder stroke, as a marker draws it
    return picture


def _glyph(rng: np.random.Generator) -> Image.Image:
    return _text(rng, GLYPHS[int(rng.integers(len(GLYPHS)))])


def _pair(rng: np.random.Generator) -> Image.Image:
    first, second = rng.integers(len(GLYPHS), size=2)
    return _text(rng, GLYPHS[int(first)] + GLYPHS[int(second)])


# --- Shapes ---------------------------------------------------------------------------------------

def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    picture = Image.new("L", (CANVAS, CANVAS), PAPER)
    return picture, ImageDraw.Draw(picture)


def _points_around(rng: np.random.Generator, count: int, radius_low: float, radius_high: float) -> list[tuple[float, float]]:
    """`count` points around the centre, in angle order: the outline of a star-shaped region.

    The angles are evenly spread and jittered, so the region is never a thin sliver (a one).
    """
    angles = (np.arange(count) + rng.uniform(-0.3, 0.3, count)) * 2 * math.pi / count + rng.uniform(0, 2 * math.pi)
    radii = rng.uniform(radius_low, radius_high, count) * CANVAS / 2
    centre = CANVAS / 2 + rng.uniform(-8, 8, 2)
    return [(float(centre[0] + r * math.cos(a)), float(centre[1] + r * math.sin(a))) for a, r in zip(angles, radii)]


def _blob(rng: np.random.Generator) -> Image.Image:
    # Filled, never outlined: an outline of a round blob is a zero.
    picture, draw = _canvas()
    draw.polygon(_points_around(rng, int(rng.integers(8, 16)), 0.35, 0.85), fill=INK)
    return picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))


def _polygon(rng: np.random.Generator) -> Image.Image:
    picture, draw = _canvas()
    sides = int(rng.integers(3, 7))
    if rng.random() < 0.5:  # a star: alternate outer and inner radii
        outer = _points_around(rng, sides * 2, 0.7, 0.9)
        inner_scale = float(rng.uniform(0.3, 0.5))
        centre = CANVAS / 2
        points = [
            point if index % 2 == 0 else (centre + (point[0] - centre) * inner_scale, centre + (point[1] - centre) * inner_scale)
            for index, point in enumerate(outer)
        ]
    else:
        points = _points_around(rng, sides, 0.6, 0.9)
    draw.polygon(points, fill=INK)
    return picture


def _rectangles(rng: np.random.Generator) -> Image.Image:
    # Near-square blocks: a long thin bar reads as a one.
    picture, draw = _canvas()
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(10, 50, 2)
        side = float(rng.uniform(25, 50))
        x1, y1 = x0 + side, y0 + side * float(rng.uniform(0.7, 1.4))
        draw.rectangle((float(x0), float(y0), float(x1), float(y1)), fill=INK)
    return picture.rotate(float(rng.uniform(0, 90)), resample=Image.Resampling.BILINEAR, fillcolor=PAPER)


def _hatching(rng: np.random.Generator) -> Image.Image:
    # At least three parallel strokes: one or two would be a 1 or an 11.
    picture, draw = _canvas()
    directions = 2 if rng.random() < 0.5 else 1
    width = int(rng.integers(3, 8))
    for _ in range(directions):
        angle = rng.uniform(0, math.pi)
        dx, dy = math.cos(angle), math.sin(angle)
        spacing = float(rng.uniform(10, 18))
        lines = int(rng.integers(3, 7))
        for line in range(lines):
            offset = (line - (lines - 1) / 2) * spacing
            cx, cy = CANVAS / 2 - dy * offset, CANVAS / 2 + dx * offset
            half = 40
            draw.line((cx - dx * half, cy - dy * half, cx + dx * half, cy + dy * half), fill=INK, width=width)
    return picture


def _scribble(rng: np.random.Generator) -> Image.Image:
    # A curve through many random points crosses itself several times: no digit has that many crossings.
    picture, draw = _canvas()
    anchors = rng.uniform(15, CANVAS - 15, (int(rng.integers(10, 16)), 2))
    steps = np.linspace(0, 1, 12, endpoint=False)
    path = []
    for start, control, end in zip(anchors[:-2], anchors[1:-1], anchors[2:]):
        a, b = (start + control) / 2, (control + end) / 2
        for t in steps:  # quadratic Bezier between midpoints: a smooth pen stroke
            point = (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b
            path.append((float(point[0]), float(point[1])))
    draw.line(path, fill=INK, width=int(rng.integers(3, 9)), joint="curve")
    return picture


def _texture(rng: np.random.Generator) -> Image.Image:
    # Blotchy noise: coarse random values, enlarged smoothly and thresholded into patches of ink.
    cells = int(rng.integers(4, 10))
    coarse = rng.random((cells, cells)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(to_uint8(coarse)).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC), dtype=np.float32)
    level = np.quantile(smooth, float(rng.uniform(0.5, 0.8)))
    return Image.fromarray(np.where(smooth > level, INK, PAPER).astype(np.uint8))


def _speckle(rng: np.random.Generator) -> Image.Image:
    picture, draw = _canvas()
    for _ in range(int(rng.integers(25, 60))):
        x, y = rng.uniform(15, CANVAS - 15, 2)
        r = float(rng.uniform(2, 6))
        draw.ellipse((float(x) - r, float(y) - r, float(x) + r, float(y) + r), fill=INK)
    return picture


# Each kind of drawing and its share of the pool: glyphs are the nearest non-digits to digits.
_MAKERS: tuple[tuple[str, Callable[[np.random.Generator], Image.Image], float], ...] = (
    ("glyph", _glyph, 3.0),
    ("pair", _pair, 1.0),
    ("blob", _blob, 1.0),
    ("polygon", _polygon, 1.0),
    ("rectangles", _rectangles, 0.5),
    ("hatching", _hatching, 1.0),
    ("scribble", _scribble, 1.0),
    ("texture", _texture, 0.5),
    ("speckle", _speckle, 0.5),
)
