"""Paper, light and camera: the surfaces and defects a photographed page brings, as float32 arrays in [0, 1].

Every function draws what it needs from the generator it is given, and the number of draws never
depends on the ink: a page rendered with a blank digit and the same seed is the same page without
ink (the tests use that to find the ink). Slow filters (large blurs) run at a reduced resolution
and are upsampled, since what they make is smooth anyway.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# RGB of paper under neutral light.
PAPER_COLOURS = {
    "white": (0.95, 0.95, 0.93),
    "beige": (0.93, 0.87, 0.74),
    "grey": (0.80, 0.80, 0.79),
    "blue": (0.74, 0.82, 0.93),
    "green": (0.78, 0.90, 0.75),
}
# RGB of what a page lies on: dark wood, a black desk, a grey laminate.
TABLE_COLOURS = ((0.30, 0.20, 0.12), (0.10, 0.10, 0.11), (0.38, 0.36, 0.34), (0.22, 0.14, 0.08))
# The fonts of everything printed (print-through, letters): Liberation only. DejaVu is left to the
# training-time outlier set so that the non-digits measured here and those trained on stay apart.
FONT_DIR = Path("/usr/share/fonts/truetype/liberation")
_SMOOTH_FACTOR = 8  # large blurs run at 1/8 of the resolution


def fractal_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 4, cells: int = 4) -> np.ndarray:
    """Smooth random texture with unit standard deviation: octaves of bicubically upsampled random grids."""
    total = np.zeros((height, width), dtype=np.float32)
    amplitude = 1.0
    longer = max(height, width)
    for octave in range(octaves):
        across = cells * 2**octave
        grid_h, grid_w = max(2, round(across * height / longer)), max(2, round(across * width / longer))
        grid = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        amplitude *= 0.5
    return total / max(float(total.std()), 1e-6)


def smooth_mask(mask_small: np.ndarray, height: int, width: int, sigma_small: float) -> np.ndarray:
    """A mask drawn at low resolution, blurred there and upsampled: a soft-edged region, cheaply."""
    blurred = cv2.GaussianBlur(mask_small.astype(np.float32), (0, 0), sigma_small)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


def paper(rng: np.random.Generator, height: int, width: int, colour: tuple[float, float, float],
          texture: float, grain: float) -> np.ndarray:
    """(H, W, 3) paper: its colour, a fibrous texture (`texture`: relative depth) and grain."""
    # Made at half the resolution and upsampled: the texture is smooth, and grain two pixels
    # across looks like paper fibres as much as one pixel across does, at a quarter of the draws.
    half_h, half_w = max(2, height // 2), max(2, width // 2)
    fibres = fractal_noise(rng, half_h, half_w, octaves=4, cells=16)
    fibres *= texture
    fibres += rng.standard_normal((half_h, half_w), dtype=np.float32) * grain
    shade = cv2.resize(fibres, (width, height), interpolation=cv2.INTER_LINEAR)
    shade += 1.0
    return shade[..., None] * np.asarray(colour, dtype=np.float32)[None, None, :]


def apply_ink(picture: np.ndarray, alpha: np.ndarray, ink_rgb: tuple[float, float, float]) -> None:
    """Ink absorbs light: where alpha is 1 the paper's colour is multiplied by the ink's (in place)."""
    ink = np.asarray(ink_rgb, dtype=np.float32)[None, None, :]
    picture *= 1.0 - alpha[..., None] * (1.0 - ink)


def lighting(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """(H, W) multiplier: light falling off across the page in a random direction, and a vignette."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    # Smooth: computed at 1/8 of the resolution and upsampled.
    small_h, small_w = max(2, height // _SMOOTH_FACTOR), max(2, width // _SMOOTH_FACTOR)
    rows = np.linspace(-1.0, 1.0, small_h, dtype=np.float32)[:, None]
    columns = np.linspace(-1.0, 1.0, small_w, dtype=np.float32)[None, :]
    ramp = (np.cos(angle) * columns + np.sin(angle) * rows) * 0.5 + 0.5  # 0 at the lit side, 1 at the far one
    vignette = rng.uniform(0.0, 0.5) * strength * (rows**2 + columns**2) / 2.0
    light = (1.0 - strength * ramp - vignette).astype(np.float32)
    return cv2.resize(light, (width, height), interpolation=cv2.INTER_LINEAR)


def hand_shadow(rng: np.random.Generator, height: int, width: int, depth: float) -> np.ndarray:
    """(H, W) multiplier: the soft shadow of a hand and forearm reaching in from one edge."""
    small_h, small_w = max(8, height // _SMOOTH_FACTOR), max(8, width // _SMOOTH_FACTOR)
    edge = int(rng.integers(4))
    reach = rng.uniform(0.3, 0.6)  # how far into the page the hand comes
    centre = rng.uniform(0.2, 0.8)
    arm = rng.uniform(0.25, 0.45)  # the forearm's width, relative to the side it enters
    # Drawn as if entering from the left, in unit coordinates (x across, y along the edge), then turned.
    tip = np.array([[0.0, centre - arm / 2], [reach * 0.8, centre - arm / 2.5], [reach, centre],
                    [reach * 0.8, centre + arm / 2.5], [0.0, centre + arm / 2]])
    if edge == 1:
        tip = np.stack([1.0 - tip[:, 0], tip[:, 1]], axis=1)
    elif edge == 2:
        tip = tip[:, ::-1]
    elif edge == 3:
        tip = np.stack([tip[:, 1], 1.0 - tip[:, 0]], axis=1)
    points = np.round(tip * [small_w - 1, small_h - 1]).astype(np.int32)
    mask = np.zeros((small_h, small_w), dtype=np.uint8)
    cv2.fillPoly(mask, [points], 1)
    soft = smooth_mask(mask, height, width, sigma_small=rng.uniform(3.0, 6.0))
    return (1.0 - depth * soft).astype(np.float32)


@lru_cache(maxsize=64)
def font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A Liberation font file at `size` px, or Pillow's built-in font where the file is missing."""
    if path is not None and Path(path).is_file():
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def font_files() -> tuple[str | None, ...]:
    """The Liberation fonts installed here; (None,) (Pillow's built-in font) when there are none."""
    found = tuple(sorted(str(path) for path in FONT_DIR.glob("Liberation*.ttf"))) if FONT_DIR.is_dir() else ()
    return found or (None,)


# Letters and, four times as often as any one letter, spaces: words of about six letters.
_TEXT_ALPHABET = "abcdefghijklmnopqrstuvwxyz" + " " * 4


def text_font_file() -> str | None:
    """The font that prints body text: Liberation Serif where installed."""
    files = font_files()
    return next((path for path in files if path and path.endswith("Serif-Regular.ttf")), files[0])


def printed_lines(rng: np.random.Generator, height: int, width: int, line_px: int) -> np.ndarray:
    """(H, W) float32 mask of lines of printed text (random words in a Liberation font), ink 1."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    typeface = font(text_font_file(), max(6, int(line_px * 0.7)))
    margin = int(width * rng.uniform(0.05, 0.12))
    chars_per_line = max(4, int((width - 2 * margin) / (line_px * 0.38)))
    for y in range(int(rng.integers(0, line_px)), height, line_px):
        codes = rng.integers(0, len(_TEXT_ALPHABET), chars_per_line)
        draw.text((margin, y), "".join(_TEXT_ALPHABET[code] for code in codes), fill=255, font=typeface)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def print_through(rng: np.random.Generator, height: int, width: int, strength: float) -> np.ndarray:
    """(H, W) multiplier: the text printed on the back of the sheet, mirrored, blurred and faint."""
    line_px = max(8, int(height * rng.uniform(0.03, 0.05)))
    text = printed_lines(rng, height, width, line_px)[:, ::-1]
    blurred = cv2.GaussianBlur(text, (0, 0), rng.uniform(1.0, 2.5))
    return (1.0 - strength * blurred / max(float(blurred.max()), 1e-6)).astype(np.float32)


def ruled_lines(rng: np.random.Generator, height: int, width: int, spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """(blue rules, red margin) alpha masks of lined paper, antialiased, 1-3 px wide."""
    rules = np.zeros((height, width), dtype=np.float32)
    thickness = int(rng.integers(1, 4))
    offset = int(rng.integers(0, spacing))
    for y in range(offset, height, spacing):
        cv2.line(rules, (0, y), (width - 1, y), 1.0, thickness, cv2.LINE_AA)
    margin = np.zeros_like(rules)
    if rng.random() < 0.6:
        x = int(width * rng.uniform(0.06, 0.15))
        cv2.line(margin, (x, 0), (x, height - 1), 1.0, thickness, cv2.LINE_AA)
    return rules, margin


def place_on_table(rng: np.random.Generator, page: np.ndarray, frame_h: int, frame_w: int,
                   tilt: float, table_band: float) -> np.ndarray:
    """The page photographed at a slight angle: warped into a (frame_h, frame_w, 3) uint8 frame.

    `tilt`: how far (relative to the frame) each corner may move, a mild perspective. `table_band`:
    0 makes the page overfill the frame; above 0 the page stops that fraction short of one border
    and the table shows there, as a dark band.
    """
    height, width = page.shape[:2]
    jitter = rng.uniform(-tilt, tilt, (4, 2)) * [frame_w, frame_h]
    corners = np.array([[0, 0], [frame_w, 0], [frame_w, frame_h], [0, frame_h]], dtype=np.float64)
    spill = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.04 * [frame_w, frame_h]
    target = corners + spill + jitter
    side = int(rng.integers(4))  # top, right, bottom, left
    if table_band > 0:
        pull = table_band * (frame_w if side in (1, 3) else frame_h)
        moved = {0: ([0, 1], (0.0, 1.0)), 1: ([1, 2], (-1.0, 0.0)), 2: ([2, 3], (0.0, -1.0)), 3: ([0, 3], (1.0, 0.0))}
        which, (dx, dy) = moved[side]
        target[which] = corners[which] + np.array([dx, dy]) * pull + jitter[which] * 0.5
    table_rgb = np.asarray(TABLE_COLOURS[int(rng.integers(len(TABLE_COLOURS)))], dtype=np.float32)
    # The table's grain is smooth: made at 1/8 of the resolution and upsampled.
    small_h, small_w = max(2, frame_h // _SMOOTH_FACTOR), max(2, frame_w // _SMOOTH_FACTOR)
    grain = 1.0 + 0.15 * fractal_noise(rng, small_h, small_w, octaves=3, cells=6)
    table = cv2.resize(to_uint8(grain[..., None] * table_rgb[None, None, :]), (frame_w, frame_h),
                       interpolation=cv2.INTER_LINEAR)
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(source, target.astype(np.float32))
    # BORDER_TRANSPARENT: the table stays wherever the page does not reach.
    page_uint8 = cv2.convertScaleAbs(page, alpha=255.0)
    cv2.warpPerspective(page_uint8, matrix, (frame_w, frame_h), dst=table, flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_TRANSPARENT)
    return table


def camera_finish(rng: np.random.Generator, frame_uint8: np.ndarray, light: np.ndarray, blur: float,
                  noise: float) -> np.ndarray:
    """Lens blur (Gaussian, `blur` px), the scene's light (an (H, W) multiplier) and sensor noise
    (`noise`: standard deviation), clipped to uint8."""
    if blur > 0.3:
        frame_uint8 = cv2.GaussianBlur(frame_uint8, (0, 0), blur)
    height, width = frame_uint8.shape[:2]
    sensor = rng.standard_normal((height, width), dtype=np.float32)
    sensor *= noise * 255.0
    channels = frame_uint8.shape[2]
    lit = cv2.multiply(frame_uint8, cv2.merge([light] * channels), dtype=cv2.CV_32F)
    lit = cv2.add(lit, cv2.merge([sensor] * channels))
    # Rounded and saturated to 0-255, as a camera's pipeline does (negatives first raised to 0).
    return cv2.convertScaleAbs(cv2.max(lit, 0.0))


def encode_jpeg(rgb_uint8: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", _bgr(rgb_uint8), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return data.tobytes()


def encode_png(pixels_uint8: np.ndarray) -> bytes:
    """Gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) -> PNG bytes (fast compression: mostly flat images)."""
    ok, data = cv2.imencode(".png", _bgr(pixels_uint8), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return data.tobytes()


def _bgr(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[..., [2, 1, 0, 3]])
    return np.ascontiguousarray(pixels[..., ::-1])


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
