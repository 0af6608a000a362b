"""Printed letters and symbols that are not digits, and the ones left out because they pass for one.

A non-digit set must hold nothing a reader would call a digit: a glyph that looks like one in some
font (O like 0, l like 1, S like 5, ...) is left out, with the digit it passes for. What remains are
letters and symbols no one reads as a digit. Rendered in the Liberation fonts (see
surfaces.FONT_DIR), or Pillow's built-in font where those are missing.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from .surfaces import font, font_files

# Glyph -> the digit it passes for, in some font or hand.
EXCLUDED_GLYPHS: dict[str, str] = {
    "O": "0", "o": "0", "Q": "0", "D": "0", "U": "0",
    "I": "1", "l": "1", "i": "1", "j": "1", "J": "1", "L": "1", "|": "1", "!": "1", "/": "1",
    "(": "1", ")": "1", "[": "1", "]": "1", "T": "7",
    "Z": "2", "z": "2",
    "S": "5", "s": "5", "$": "5",
    "G": "6", "b": "6",
    "B": "8", "&": "8",
    "g": "9", "q": "9", "d": "9", "a": "9",
}
LETTERS = "ACEFHKMNPRVWXYcefhkmnprtuvwxy"
SYMBOLS = "#@%?*+=<>"
NON_DIGIT_GLYPHS = LETTERS + SYMBOLS


def glyph_mask(glyph: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side) float32 ink alpha of `glyph` in a random Liberation font, 50-75% of the side,
    slightly rotated, near the middle."""
    files = font_files()
    path = files[int(rng.integers(len(files)))]
    size = max(8, int(side * rng.uniform(0.5, 0.75)))
    canvas = Image.new("L", (side, side), 0)
    centre = (side / 2 + rng.uniform(-0.08, 0.08) * side, side / 2 + rng.uniform(-0.08, 0.08) * side)
    ImageDraw.Draw(canvas).text(centre, glyph, fill=255, font=font(path, size), anchor="mm")
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-12.0, 12.0), 1.0)
    return cv2.warpAffine(np.asarray(canvas, dtype=np.float32) / 255.0, matrix, (side, side), flags=cv2.INTER_LINEAR)


def pick_glyph(rng: np.random.Generator, glyphs: str) -> str:
    return glyphs[int(rng.integers(len(glyphs)))]
