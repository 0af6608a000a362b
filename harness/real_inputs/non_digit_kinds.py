"""Pictures that hold no digit, which a digit service should refuse or call unsure: printed letters and
symbols (glyphs.py leaves out those that pass for digits), scribbles and hatching, blank pages,
noise, crops of procedurally drawn outdoor scenes, and clothing silhouettes (Fashion-MNIST's
subject). Each renderer is (digit, seed) -> encoded bytes with the digit ignored, so that the
digit and non-digit kinds share one signature. Nothing is downloaded: every scene is drawn here.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import surfaces
from .glyphs import LETTERS, SYMBOLS, glyph_mask, pick_glyph
from .photos import PhotoStyle, photograph
from .strokes import PEN_WIDTHS

# Non-digit photos have every defect the digit photos have, each on about a third of them.
MIXED_PHOTO = PhotoStyle(shadow=0.35, table_edge=0.35, print_through=0.35, ruled=0.35, light=(0.05, 0.4))
_SUBPIXEL_BITS = 4  # cv2's drawing calls take fixed-point coordinates with this many fraction bits


def _flat_print(rng: np.random.Generator, alpha: np.ndarray) -> bytes:
    """Ink on a plain sheet as a scanner or a screenshot gives it: light paper, a little grain, PNG."""
    side = alpha.shape[0]
    colour = surfaces.PAPER_COLOURS[("white", "white", "beige", "grey")[int(rng.integers(4))]]
    page = surfaces.paper(rng, side, side, colour, texture=rng.uniform(0.0, 0.01), grain=rng.uniform(0.0, 0.01))
    surfaces.apply_ink(page, alpha, (0.08, 0.08, 0.1))
    return surfaces.encode_png(surfaces.to_uint8(page.mean(axis=2)))


def _glyph_renderer(glyphs: str, photographed: float):
    def render(digit_uint8: np.ndarray | None, seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        glyph = pick_glyph(rng, glyphs)
        if rng.random() < photographed:
            return photograph(rng, lambda side, tool, ink_rng: glyph_mask(glyph, side, ink_rng), MIXED_PHOTO)
        side = int(rng.integers(64, 401))
        return _flat_print(rng, glyph_mask(glyph, side, rng))

    return render


letters_png = _glyph_renderer(LETTERS, photographed=0.0)
letters_png.__doc__ = "A printed letter that passes for no digit, dark on a light sheet, PNG 64-400 px."
letters_photo = _glyph_renderer(LETTERS, photographed=1.0)
letters_photo.__doc__ = "A printed letter on a photographed page (the photo kinds' defects), JPEG."
symbols_png = _glyph_renderer(SYMBOLS, photographed=0.5)
symbols_png.__doc__ = "A printed symbol (# @ % ? * + = < >): half flat PNGs, half photographed."


def _draw_curve(mask: np.ndarray, points: np.ndarray, width_px: float) -> None:
    fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.polylines(mask, [fixed], False, 1.0, max(1, round(width_px)), cv2.LINE_AA, _SUBPIXEL_BITS)


def scribble_mask(side: int, tool: str, rng: np.random.Generator) -> np.ndarray:
    """A pen's scribble (a long curve of several harmonics, crossing itself many times) or a patch of
    hatching (parallel strokes, sometimes cross-hatched), in a (side, side) alpha."""
    mask = np.zeros((side, side), dtype=np.float32)
    # A marker scribbling at its full width fills a blob: it scribbles at twice a pen's width.
    low, high = PEN_WIDTHS["pen" if tool == "marker" else tool]
    width_px = max(1.5, rng.uniform(low, high) * side * (2.0 if tool == "marker" else 1.0))
    if rng.random() < 0.6:
        t = np.linspace(0.0, 2.0 * np.pi, 600)
        # Two harmonics per axis with frequencies 3-7: a tangle, never a single loop or a figure of eight.
        freq = rng.integers(3, 8, size=(2, 2))
        phase = rng.uniform(0.0, 2.0 * np.pi, size=(2, 2))
        weight = rng.uniform(0.3, 1.0, size=(2, 2))
        x = (weight[0, :, None] * np.sin(freq[0, :, None] * t + phase[0, :, None])).sum(axis=0)
        y = (weight[1, :, None] * np.sin(freq[1, :, None] * t + phase[1, :, None])).sum(axis=0)
        x, y = x / np.abs(x).max(), y / np.abs(y).max()
        points = np.stack([(0.5 + 0.4 * x) * side, (0.5 + 0.4 * y) * side], axis=1)
        points += rng.normal(0.0, side * 0.004, points.shape)
        _draw_curve(mask, points, width_px)
    else:
        sets = 1 + int(rng.random() < 0.5)
        for _ in range(sets):
            angle = rng.uniform(0.0, np.pi)
            direction, across = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
            count = int(rng.integers(8, 20))
            for offset in np.linspace(-0.35, 0.35, count):
                half = rng.uniform(0.2, 0.4)
                centre = 0.5 + offset * across + rng.normal(0.0, 0.01, 2)
                ends = np.stack([centre - half * direction, centre + half * direction]) * side
                _draw_curve(mask, ends, width_px)
    return mask


def scribble_photo(digit_uint8: np.ndarray | None, seed: int) -> bytes:
    """A scribble or hatching on a photographed page, JPEG."""
    return photograph(np.random.default_rng(seed), scribble_mask, MIXED_PHOTO)


BLANK_STYLE = PhotoStyle(shadow=0.4, table_edge=0.4, print_through=0.3, ruled=0.3, light=(0.05, 0.4))


def blank_page(digit_uint8: np.ndarray | None, seed: int) -> bytes:
    """A sheet with nothing written on it: a photographed page (any paper, light, shadow, table edge,
    print-through or rules), or a quarter of the time a flat grainy sheet as PNG."""
    rng = np.random.default_rng(seed)
    if rng.random() < 0.75:
        return photograph(rng, lambda side, tool, ink_rng: np.zeros((side, side), np.float32), BLANK_STYLE)
    side = int(rng.integers(64, 601))
    return _flat_print(rng, np.zeros((side, side), dtype=np.float32))


def noise_png(digit_uint8: np.ndarray | None, seed: int) -> bytes:
    """Noise and nothing else, 28-512 px: uniform, Gaussian about a grey, salt-and-pepper on white or
    black, or colour noise."""
    rng = np.random.default_rng(seed)
    height, width = (int(rng.integers(28, 513)) for _ in range(2))
    which = int(rng.integers(4))
    if which == 0:
        pixels = rng.random((height, width), dtype=np.float32)
    elif which == 1:
        level, spread = rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.25)
        pixels = level + spread * rng.standard_normal((height, width), dtype=np.float32)
    elif which == 2:
        pixels = np.full((height, width), float(rng.random() < 0.5), dtype=np.float32)
        flipped = rng.random((height, width)) < rng.uniform(0.02, 0.3)
        pixels[flipped] = 1.0 - pixels[flipped]
    else:
        pixels = rng.random((height, width, 3), dtype=np.float32)
    return surfaces.encode_png(surfaces.to_uint8(pixels))


_SKY = ((0.45, 0.65, 0.95), (0.75, 0.85, 0.95), (0.85, 0.75, 0.6), (0.6, 0.62, 0.68))
_GROUND = ((0.25, 0.45, 0.18), (0.5, 0.4, 0.25), (0.45, 0.45, 0.45), (0.75, 0.7, 0.5))
_THINGS = ((0.1, 0.3, 0.1), (0.55, 0.2, 0.15), (0.8, 0.8, 0.75), (0.3, 0.3, 0.35), (0.9, 0.8, 0.2), (0.2, 0.25, 0.6))


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 outdoor scene: a sky gradient over textured ground, and 3-9 overlapping
    things (trees, houses, stones, a sun) in natural colours, softly edged."""
    horizon = int(height * rng.uniform(0.3, 0.7))
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky_top, sky_low = (np.asarray(_SKY[int(rng.integers(len(_SKY)))], np.float32) for _ in range(2))
    picture = sky_top * (1.0 - rows) + sky_low * rows
    picture = np.broadcast_to(picture, (height, width, 3)).copy()
    ground = np.asarray(_GROUND[int(rng.integers(len(_GROUND)))], np.float32)
    texture = 1.0 + 0.25 * surfaces.fractal_noise(rng, height - horizon, width, octaves=5, cells=8)
    picture[horizon:] = ground * texture[..., None]
    for _ in range(int(rng.integers(3, 10))):
        colour = np.asarray(_THINGS[int(rng.integers(len(_THINGS)))], np.float32) * rng.uniform(0.7, 1.2)
        mask = np.zeros((height, width), dtype=np.uint8)
        x, y = int(rng.integers(0, width)), int(rng.integers(horizon // 2, height))
        size = int(rng.uniform(0.05, 0.3) * min(height, width)) + 2
        shape = int(rng.integers(3))
        if shape == 0:  # a tree's crown or a stone
            cv2.ellipse(mask, (x, y), (size, int(size * rng.uniform(0.6, 1.4))), rng.uniform(0, 180), 0, 360, 1, -1)
        elif shape == 1:  # a house: a wall and a roof
            cv2.rectangle(mask, (x - size, y - size // 2), (x + size, y + size), 1, -1)
            roof = np.array([[x - size - 4, y - size // 2], [x, y - size * 3 // 2], [x + size + 4, y - size // 2]])
            cv2.fillPoly(mask, [roof.astype(np.int32)], 1)
        else:  # an irregular polygon: a bush, a rock, a shadow
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
            radii = size * rng.uniform(0.5, 1.0, angles.size)
            outline = np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], axis=1)
            cv2.fillPoly(mask, [outline.astype(np.int32)], 1)
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(0.8, 3.0))[..., None]
        shade = 1.0 + 0.15 * rng.standard_normal((height, width), dtype=np.float32)[..., None]
        picture = picture * (1.0 - soft) + colour * shade * soft
    return picture


def scene_crop_jpeg(digit_uint8: np.ndarray | None, seed: int) -> bytes:
    """A crop (30-80% of each side) of a drawn outdoor scene, resized to 64-400 px, JPEG."""
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(240, 481)), int(rng.integers(320, 641))
    picture = _scene(rng, height, width)
    crop_h, crop_w = int(height * rng.uniform(0.3, 0.8)), int(width * rng.uniform(0.3, 0.8))
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    crop = picture[top:top + crop_h, left:left + crop_w]
    longer = int(rng.integers(64, 401))
    scale = longer / max(crop_h, crop_w)
    resized = cv2.resize(crop, (max(8, int(crop_w * scale)), max(8, int(crop_h * scale))), interpolation=cv2.INTER_AREA)
    return surfaces.encode_jpeg(surfaces.to_uint8(resized), int(rng.integers(70, 93)))


def _garment(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side) uint8 mask of a filled garment or accessory silhouette, in unit coordinates scaled."""
    which = int(rng.integers(6))
    w = rng.uniform(0.85, 1.15)  # a little wider or narrower

    def poly(*points: tuple[float, float]) -> np.ndarray:
        unit = np.asarray(points, dtype=np.float64)
        unit[:, 0] = 0.5 + (unit[:, 0] - 0.5) * w
        return np.round(unit * side).astype(np.int32)

    mask = np.zeros((side, side), dtype=np.uint8)
    if which == 0:  # T-shirt
        cv2.fillPoly(mask, [poly((0.3, 0.15), (0.42, 0.12), (0.58, 0.12), (0.7, 0.15), (0.92, 0.32),
                                 (0.82, 0.42), (0.72, 0.36), (0.72, 0.88), (0.28, 0.88), (0.28, 0.36),
                                 (0.18, 0.42), (0.08, 0.32))], 1)
    elif which == 1:  # pullover (long sleeves)
        cv2.fillPoly(mask, [poly((0.3, 0.12), (0.7, 0.12), (0.88, 0.25), (0.95, 0.85), (0.82, 0.86), (0.74, 0.38),
                                 (0.74, 0.9), (0.26, 0.9), (0.26, 0.38), (0.18, 0.86), (0.05, 0.85), (0.12, 0.25))], 1)
    elif which == 2:  # trousers
        cv2.fillPoly(mask, [poly((0.3, 0.08), (0.7, 0.08), (0.74, 0.92), (0.56, 0.92), (0.5, 0.3), (0.44, 0.92),
                                 (0.26, 0.92))], 1)
    elif which == 3:  # dress
        cv2.fillPoly(mask, [poly((0.38, 0.08), (0.62, 0.08), (0.64, 0.35), (0.82, 0.92), (0.18, 0.92),
                                 (0.36, 0.35))], 1)
    elif which == 4:  # shoe
        cv2.fillPoly(mask, [poly((0.08, 0.45), (0.3, 0.42), (0.45, 0.55), (0.88, 0.6), (0.94, 0.72), (0.92, 0.78),
                                 (0.08, 0.78))], 1)
    else:  # bag with a handle
        cv2.fillPoly(mask, [poly((0.15, 0.4), (0.85, 0.4), (0.9, 0.88), (0.1, 0.88))], 1)
        cv2.ellipse(mask, (side // 2, int(0.4 * side)), (int(0.22 * side * w), int(0.2 * side)), 0, 180, 360, 1,
                    max(2, side // 20))
    return mask


def clothing(digit_uint8: np.ndarray | None, seed: int) -> bytes:
    """A garment, shoe or bag: half as Fashion-MNIST has them (28x28 grey levels, light on black, PNG,
    some enlarged), half as a shop's photo (a coloured item on a light backdrop, 200-400 px, JPEG)."""
    rng = np.random.default_rng(seed)
    work = 112
    mask = cv2.GaussianBlur(_garment(rng, work).astype(np.float32), (0, 0), 1.0)
    shading = 0.75 + 0.2 * surfaces.fractal_noise(rng, work, work, octaves=3, cells=4)
    if rng.random() < 0.5:
        item = cv2.resize(mask * np.clip(shading, 0.3, 1.0), (28, 28), interpolation=cv2.INTER_AREA)
        pixels = surfaces.to_uint8(item)
        factor = (1, 1, 4, 10)[int(rng.integers(4))]
        if factor > 1:
            pixels = cv2.resize(pixels, (28 * factor, 28 * factor), interpolation=cv2.INTER_LINEAR)
        return surfaces.encode_png(pixels)
    side = int(rng.integers(200, 401))
    colour = rng.uniform(0.05, 0.9, 3).astype(np.float32)
    backdrop = surfaces.paper(rng, side, side, (0.92, 0.92, 0.9), texture=0.01, grain=0.01)
    alpha = cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    shade = cv2.resize(shading, (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    picture = backdrop * (1.0 - alpha) + colour * shade * alpha
    return surfaces.encode_jpeg(surfaces.to_uint8(picture), int(rng.integers(75, 93)))
