"""A photographed sheet of paper with something written on it: the composition every photo kind shares.

The order is the physical one: paper (colour, texture, grain), printed rules, the ink, the print of
the sheet's back showing through, the sheet laid on a table and photographed at a slight angle
(sometimes with the table showing along one border), light falling off across the scene and a
hand's shadow, then the camera's blur, noise and JPEG compression. A `PhotoStyle` says which of
these happen and how strongly; each is drawn per image from the generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import surfaces

Ink = Callable[[int, str, np.random.Generator], np.ndarray]  # (side, tool, generator) -> (side, side) alpha

# Ink colours (RGB) by tool: black and blue ballpoints, graphite, black / blue / red markers.
INK_COLOURS = {
    "pen": ((0.10, 0.10, 0.12), (0.12, 0.18, 0.50)),
    "pencil": ((0.38, 0.38, 0.40), (0.48, 0.48, 0.50)),
    "marker": ((0.08, 0.08, 0.08), (0.10, 0.15, 0.45), (0.55, 0.08, 0.10)),
}


@dataclass(frozen=True)
class PhotoStyle:
    """Which defects a kind of photo has: probabilities per image, and ranges drawn uniformly."""

    papers: tuple[str, ...] = tuple(surfaces.PAPER_COLOURS)
    tools: tuple[str, ...] = ("pen", "pen", "pencil", "marker")  # ballpoints are the most common
    shadow: float = 0.0  # probability of a hand's shadow
    table_edge: float = 0.0  # probability that the table shows along one border
    print_through: float = 0.0  # probability that the back's print shows through
    ruled: float = 0.0  # probability of lined paper
    light: tuple[float, float] = (0.0, 0.08)  # light lost from the lit side to the far one
    texture: tuple[float, float] = (0.003, 0.012)  # the paper's blotchiness, relative to its brightness
    tilt: float = 0.03  # perspective: corner displacement relative to the frame
    blur: tuple[float, float] = (0.3, 1.2)  # px
    noise: tuple[float, float] = (0.005, 0.025)
    jpeg_quality: tuple[int, int] = (60, 92)
    frame: tuple[int, int] | None = None  # (width, height); None: 640-1024 px, landscape or portrait
    ink_px: tuple[float, float] | None = None  # the ink square's side in px; None: ink_fraction
    ink_fraction: tuple[float, float] = (0.35, 0.6)  # the ink square's side relative to the shorter side


def _frame_size(rng: np.random.Generator, style: PhotoStyle) -> tuple[int, int]:
    longer = int(rng.integers(640, 1025))
    shorter = longer * 3 // 4
    portrait = rng.random() < 0.5
    if style.frame is not None:
        return style.frame
    return (shorter, longer) if portrait else (longer, shorter)


def photograph(rng: np.random.Generator, ink: Ink, style: PhotoStyle) -> bytes:
    """JPEG bytes of the scene: `ink` (an alpha square) written near the middle of a page."""
    width, height = _frame_size(rng, style)
    shorter = min(width, height)
    if style.ink_px is not None:
        side = int(rng.uniform(*style.ink_px))
    else:
        side = int(shorter * rng.uniform(*style.ink_fraction))
    side = min(side, shorter - 2)
    top = (height - side) // 2 + int(rng.uniform(-0.5, 0.5) * (height - side) * 0.4)
    left = (width - side) // 2 + int(rng.uniform(-0.5, 0.5) * (width - side) * 0.4)

    paper_name = style.papers[int(rng.integers(len(style.papers)))]
    page = surfaces.paper(rng, height, width, surfaces.PAPER_COLOURS[paper_name],
                          texture=rng.uniform(*style.texture), grain=rng.uniform(0.003, 0.015))
    ruled = rng.random() < style.ruled
    if ruled:
        rules, margin = surfaces.ruled_lines(rng, height, width, spacing=max(12, int(side * rng.uniform(0.25, 0.4))))
        surfaces.apply_ink(page, rules * rng.uniform(0.4, 0.8), (0.45, 0.6, 0.9))
        surfaces.apply_ink(page, margin * rng.uniform(0.4, 0.8), (0.9, 0.4, 0.4))

    tool = style.tools[int(rng.integers(len(style.tools)))]
    colours = INK_COLOURS[tool]
    ink_rgb = colours[int(rng.integers(len(colours)))]
    alpha = ink(side, tool, rng) * (rng.uniform(0.8, 1.0) if tool != "pencil" else 1.0)
    region = page[top:top + side, left:left + side]
    surfaces.apply_ink(region, alpha, ink_rgb)

    if rng.random() < style.print_through:
        page *= surfaces.print_through(rng, height, width, rng.uniform(0.1, 0.25))[..., None]
    band = rng.uniform(0.04, 0.15) if rng.random() < style.table_edge else 0.0
    frame = surfaces.place_on_table(rng, page, height, width, style.tilt, band)
    light = surfaces.lighting(rng, height, width, rng.uniform(*style.light))
    if rng.random() < style.shadow:
        light *= surfaces.hand_shadow(rng, height, width, rng.uniform(0.3, 0.55))
    finished = surfaces.camera_finish(rng, frame, light, rng.uniform(*style.blur), rng.uniform(*style.noise))
    return surfaces.encode_jpeg(finished, int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)))
