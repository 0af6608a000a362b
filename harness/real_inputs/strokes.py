"""A 28x28 MNIST digit -> the ink of a pen, a pencil, a marker or a tablet stylus, at a large scale.

The digit is upsampled smoothly (bicubic, then a slight blur so the pixel grid does not show) and
thresholded to its shape; the shape's medial axis (the ridge of its distance transform) is where
the pen went, and the stroke is every pixel within the pen's radius of that axis, antialiased. So
the width is the pen's, not the MNIST writer's: a thin ballpoint line or a wide marker, whatever
width the source digit had. A slight random rotation and shear imitate another hand.
"""
from __future__ import annotations

import cv2
import numpy as np

from .surfaces import fractal_noise

# Above this (of full ink) the upsampled digit is its shape: MNIST's strokes are soft-edged.
_SHAPE_LEVEL = 0.45


def digit_shape(digit_uint8: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side) float32 in [0, 1]: the digit upsampled smoothly, slightly rotated and sheared."""
    soft = cv2.resize(digit_uint8.astype(np.float32) / 255.0, (side, side), interpolation=cv2.INTER_CUBIC)
    soft = cv2.GaussianBlur(soft, (0, 0), side / 100.0)
    angle, shear = rng.uniform(-10.0, 10.0), rng.uniform(-0.15, 0.15)
    matrix = cv2.getRotationMatrix2D((side / 2.0, side / 2.0), angle, 1.0)
    matrix[0, 1] += shear
    matrix[0, 2] -= shear * side / 2.0
    return np.clip(cv2.warpAffine(soft, matrix, (side, side), flags=cv2.INTER_LINEAR), 0.0, 1.0)


def medial_axis(shape: np.ndarray) -> np.ndarray:
    """bool mask of the ridge of the shape's distance transform: the line a pen would have drawn."""
    inside = (shape > _SHAPE_LEVEL).astype(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    # Half a pixel of tolerance keeps the ridge connected where it runs diagonally across the grid.
    ridge = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8)) - 0.7) & (distance >= 1.0)
    # A closing bridges the ridge's small breaks, where it steps between rows of the grid.
    ridge = cv2.morphologyEx(ridge.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    # Bumps on the shape's outline leave short isolated ridges, which a pen would not draw as dots.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ridge, connectivity=8)
    sizes = stats[:, cv2.CC_STAT_AREA]
    keep = sizes >= max(4, shape.shape[0] // 25)
    keep[0] = False
    return keep[labels]


def pen_stroke(axis: np.ndarray, width_px: float) -> np.ndarray:
    """float32 alpha: a round pen of width_px run along the axis, with a one-pixel antialiased edge."""
    if not axis.any():
        return np.zeros(axis.shape, dtype=np.float32)
    away = cv2.distanceTransform((~axis).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(width_px / 2.0 + 0.5 - away, 0.0, 1.0).astype(np.float32)


def graphite(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Pencil: the stroke's alpha broken up by paper tooth (fine texture and speckle), and faint."""
    height, width = alpha.shape
    tooth = 0.6 + 0.2 * fractal_noise(rng, height, width, octaves=3, cells=max(4, width // 16))
    tooth += rng.normal(0.0, 0.15, alpha.shape).astype(np.float32)
    return alpha * np.clip(tooth, 0.0, 1.0)


# Pen widths relative to the digit's side (MNIST's own strokes are about 0.09 of the 28 px frame).
PEN_WIDTHS = {"pen": (0.018, 0.035), "pencil": (0.018, 0.03), "marker": (0.07, 0.1)}


def ink_alpha(digit_uint8: np.ndarray, side: int, tool: str, rng: np.random.Generator) -> np.ndarray:
    """(side, side) float32 alpha of the digit written with `tool` ("pen", "pencil", "marker")."""
    low, high = PEN_WIDTHS[tool]
    width_px = max(1.5, rng.uniform(low, high) * side)
    alpha = pen_stroke(medial_axis(digit_shape(digit_uint8, side, rng)), width_px)
    texture = graphite(rng, alpha)  # drawn for every tool: the page's random stream must not depend on it
    return texture if tool == "pencil" else alpha
