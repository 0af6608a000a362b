"""The kinds of picture of one MNIST test digit: photos of paper, tablet drawings, low-resolution
scans, and the clean digit as a reference. Each renderer is (28x28 uint8 light-on-dark digit,
seed) -> encoded file bytes."""
from __future__ import annotations

import cv2
import numpy as np

from harness.sample_images import mnist_png

from . import surfaces
from .photos import PhotoStyle, photograph
from .strokes import digit_shape, ink_alpha, medial_axis, pen_stroke

# The digit's 28 px frame holds a 20 px box: a digit D px tall needs a frame of D * 28 / 20.
_FRAME_PER_DIGIT = 28 / 20

PHOTO_STYLES: dict[str, PhotoStyle] = {
    # Ballpoint on white or beige paper, nearly even light: the friendly case.
    "photo-pen": PhotoStyle(papers=("white", "beige"), tools=("pen",)),
    # Faint, grainy graphite on white, beige or grey paper.
    "photo-pencil": PhotoStyle(papers=("white", "beige", "grey"), tools=("pencil",)),
    # Bold marker on paper of any colour, blue and green included.
    "photo-marker": PhotoStyle(tools=("marker",)),
    # Lined paper: blue rules, sometimes a red margin.
    "photo-ruled": PhotoStyle(tools=("pen", "pencil"), ruled=1.0),
    # Light falling off across the page: a lamp to one side, a window.
    "photo-gradient": PhotoStyle(light=(0.15, 0.45)),
    # The photographer's hand shades part of the page.
    "photo-shadow": PhotoStyle(shadow=1.0),
    # The page does not fill the frame: a dark table shows along one border.
    "photo-table-edge": PhotoStyle(table_edge=1.0, tilt=0.04),
    # Thin paper: the print on its back shows through, mirrored.
    "photo-print-through": PhotoStyle(print_through=1.0),
    # A bit of everything, each defect on about a third of the photos.
    "photo-mixed": PhotoStyle(shadow=0.35, table_edge=0.35, print_through=0.35, ruled=0.35, light=(0.05, 0.4),
                              texture=(0.005, 0.03)),
    # A phone camera's full frame, 2000x1500, the digit 150-300 px tall in the middle.
    "photo-camera": PhotoStyle(shadow=0.3, table_edge=0.3, print_through=0.3, ruled=0.3, light=(0.05, 0.35),
                               texture=(0.005, 0.03),
                               frame=(2000, 1500), ink_px=(150 * _FRAME_PER_DIGIT, 300 * _FRAME_PER_DIGIT),
                               blur=(0.5, 1.8), jpeg_quality=(75, 92)),
}


def photo_renderer(kind_id: str):
    style = PHOTO_STYLES[kind_id]

    def render(digit_uint8: np.ndarray, seed: int) -> bytes:
        def ink(side: int, tool: str, rng: np.random.Generator) -> np.ndarray:
            return ink_alpha(digit_uint8, side, tool, rng)

        return photograph(np.random.default_rng(seed), ink, style)

    render.__doc__ = f"A photo of the digit on paper, style {kind_id!r}."
    return render


TABLET_CANVAS_PX = (1000, 2000)
TABLET_DIGIT_PX = (80, 400)


def tablet_png(digit_uint8: np.ndarray, seed: int) -> bytes:
    """A tablet drawing app's export: a 1000-2000 px white canvas, the digit 80-400 px tall anywhere on
    it, one constant-width stylus line (2-10 px); a third are RGBA with a transparent background."""
    rng = np.random.default_rng(seed)
    width, height = (int(rng.integers(*TABLET_CANVAS_PX)) for _ in range(2))
    side = int(rng.uniform(*TABLET_DIGIT_PX) * _FRAME_PER_DIGIT)
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    stroke = pen_stroke(medial_axis(digit_shape(digit_uint8, side, rng)), rng.uniform(2.0, 10.0))
    ink_rgb = np.asarray(((0.0, 0.0, 0.0), (0.1, 0.1, 0.35), (0.2, 0.2, 0.2))[int(rng.integers(3))], np.float32)
    window = (slice(top, top + side), slice(left, left + side))  # only the digit's square holds ink
    if rng.random() < 1 / 3:
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., :3] = surfaces.to_uint8(ink_rgb)
        rgba[window + (3,)] = surfaces.to_uint8(stroke)
        return surfaces.encode_png(rgba)
    gray = np.full((height, width), 255, dtype=np.uint8)
    gray[window] = surfaces.to_uint8(1.0 - stroke * (1.0 - float(ink_rgb.mean())))
    return surfaces.encode_png(gray)


SCAN_SIDES = (8, 13)  # sklearn's digits are 8x8 in 17 grey levels
SCAN_LEVELS = 17


def scan_lowres_png(digit_uint8: np.ndarray, seed: int) -> bytes:
    """A low-resolution scan: the 28 px frame averaged down to 8-12 px a side, 17 grey levels, dark
    on light paper, saved as a small PNG, half of them blown up again with nearest-neighbour."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(*SCAN_SIDES))
    small = cv2.resize(digit_uint8.astype(np.float32) / 255.0, (side, side), interpolation=cv2.INTER_AREA)
    small = small / max(float(small.max()), 1e-6)  # a scanner's auto-exposure: the darkest ink is black
    levels = np.round(small * (SCAN_LEVELS - 1)) / (SCAN_LEVELS - 1)
    paper_level = rng.uniform(0.85, 1.0)
    scanned = paper_level * (1.0 - levels * rng.uniform(0.8, 1.0)) + rng.normal(0.0, 0.01, levels.shape)
    pixels = surfaces.to_uint8(scanned)
    if rng.random() < 0.5:
        factor = int(rng.integers(2, 9))
        pixels = cv2.resize(pixels, (side * factor, side * factor), interpolation=cv2.INTER_NEAREST)
    return surfaces.encode_png(pixels)


def mnist_png_reference(digit_uint8: np.ndarray, seed: int) -> bytes:
    """The 28x28 digit itself as a PNG, dark on white: the clean reference."""
    return mnist_png(digit_uint8, seed)
