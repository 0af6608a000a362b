"""Generated test sets of real-looking pictures, with and without a digit, made from MNIST test digits.

Every picture is drawn here from a 28x28 MNIST *test* digit and a seed (never a training digit,
never a downloaded photo): the same digit and seed give the same bytes (with the same numpy,
OpenCV and Pillow, whose resampling and encoders make them; a benchmark records their versions).
The kinds:

- digit kinds (`DIGIT_KINDS`): photos of a digit written on paper (pen, pencil, marker; coloured
  papers; lighting gradients, a hand's shadow, a table's edge, print showing through, ruled
  lines, perspective, blur, noise, JPEG; and a phone camera's full 2000x1500 frame), a tablet
  drawing app's export, low-resolution scans, and the clean digit as a PNG;
- non-digit kinds (`NON_DIGIT_KINDS`): printed letters and symbols (those that pass for digits
  left out: glyphs.EXCLUDED_GLYPHS), scribbles, blank pages, noise, crops of drawn outdoor scenes
  and clothing silhouettes: what a digit service should refuse or call unsure.

`render(kind_id, digit_uint8, seed)` draws one picture; `real_input_set(images, labels, ...)`
yields a reproducible set of `RealInput`s, a number per kind, from the MNIST test digits given
(`real_input_plan` yields the same set's specs undrawn, and `render_spec` draws one).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from . import digit_kinds, non_digit_kinds
from .glyphs import EXCLUDED_GLYPHS, NON_DIGIT_GLYPHS

__all__ = [
    "ALL_KINDS", "DIGIT_KINDS", "EXCLUDED_GLYPHS", "NON_DIGIT_GLYPHS", "NON_DIGIT_KINDS", "RealInput",
    "RealInputKind", "RealInputSpec", "kind_by_id", "real_input_plan", "real_input_set", "render", "render_spec",
]


@dataclass(frozen=True)
class RealInputKind:
    id: str  # stable: results are keyed by it
    group: str  # what a summary aggregates over: "photo", "tablet", "scan", "clean", "glyph", ...
    has_digit: bool
    render: Callable[[np.ndarray | None, int], bytes]  # (28x28 uint8 light-on-dark digit or None, seed) -> bytes

    @property
    def description(self) -> str:
        return (self.render.__doc__ or self.id).strip().splitlines()[0]


@dataclass(frozen=True)
class RealInput:
    kind_id: str
    data: bytes  # the encoded file
    label: int | None  # the digit drawn; None for a non-digit kind
    source_index: int | None  # the MNIST test digit's index; None for a non-digit kind
    seed: int


DIGIT_KINDS: tuple[RealInputKind, ...] = (
    *(RealInputKind(kind_id, "photo", True, digit_kinds.photo_renderer(kind_id))
      for kind_id in digit_kinds.PHOTO_STYLES),
    RealInputKind("tablet", "tablet", True, digit_kinds.tablet_png),
    RealInputKind("scan-lowres", "scan", True, digit_kinds.scan_lowres_png),
    RealInputKind("mnist-png", "clean", True, digit_kinds.mnist_png_reference),
)
NON_DIGIT_KINDS: tuple[RealInputKind, ...] = (
    RealInputKind("letters", "glyph", False, non_digit_kinds.letters_png),
    RealInputKind("letters-photo", "glyph", False, non_digit_kinds.letters_photo),
    RealInputKind("symbols", "glyph", False, non_digit_kinds.symbols_png),
    RealInputKind("scribble", "scribble", False, non_digit_kinds.scribble_photo),
    RealInputKind("blank-page", "blank", False, non_digit_kinds.blank_page),
    RealInputKind("noise", "noise", False, non_digit_kinds.noise_png),
    RealInputKind("scene-crop", "scene", False, non_digit_kinds.scene_crop_jpeg),
    RealInputKind("clothing", "clothing", False, non_digit_kinds.clothing),
)
ALL_KINDS: tuple[RealInputKind, ...] = DIGIT_KINDS + NON_DIGIT_KINDS
_BY_ID = {kind.id: kind for kind in ALL_KINDS}


def kind_by_id(kind_id: str) -> RealInputKind:
    try:
        return _BY_ID[kind_id]
    except KeyError:
        raise KeyError(f"unknown kind of real input {kind_id!r}; the kinds are: {', '.join(_BY_ID)}") from None


def render(kind_id: str, digit_uint8: np.ndarray | None, seed: int) -> bytes:
    """One picture of `kind_id`: the 28x28 uint8 light-on-dark digit drawn that way (non-digit kinds
    ignore it, and accept None), with `seed` choosing everything else. Deterministic."""
    kind = kind_by_id(kind_id)
    if kind.has_digit:
        if digit_uint8 is None or np.shape(digit_uint8) != (28, 28):
            raise ValueError(f"kind {kind_id!r} draws a digit: give a 28x28 uint8 MNIST digit, "
                             f"got {np.shape(digit_uint8)}")
        digit_uint8 = np.asarray(digit_uint8, dtype=np.uint8)
    return kind.render(digit_uint8, seed)


def _kind_seed(kind_id: str, seed: int) -> np.random.SeedSequence:
    """Each kind's own stream: adding or reordering kinds changes no other kind's pictures."""
    return np.random.SeedSequence([seed, zlib.crc32(kind_id.encode())])


@dataclass(frozen=True)
class RealInputSpec:
    """What to draw, not yet drawn: a set's plan, for callers that render in other processes."""

    kind_id: str
    label: int | None  # the digit to draw; None for a non-digit kind
    source_index: int | None  # the MNIST test digit's index; None for a non-digit kind
    seed: int


def real_input_plan(labels: np.ndarray, *, digits_per_kind: int, non_digits_per_kind: int,
                    kinds: Sequence[str] | None = None, seed: int = 0) -> Iterator[RealInputSpec]:
    """The specs of `real_input_set`, in its order: for each kind, `digits_per_kind` distinct MNIST test
    digits drawn at random (by index into `labels`), or `non_digits_per_kind` seeds."""
    labels = np.asarray(labels)
    selected = [kind_by_id(kind_id) for kind_id in kinds] if kinds is not None else list(ALL_KINDS)
    for kind in selected:
        stream = np.random.default_rng(_kind_seed(kind.id, seed))
        count = digits_per_kind if kind.has_digit else non_digits_per_kind
        picture_seeds = stream.integers(0, 2**31, size=count)
        if kind.has_digit:
            indices = stream.choice(len(labels), size=count, replace=count > len(labels))
            for index, picture_seed in zip(indices, picture_seeds):
                yield RealInputSpec(kind.id, int(labels[index]), int(index), int(picture_seed))
        else:
            for picture_seed in picture_seeds:
                yield RealInputSpec(kind.id, None, None, int(picture_seed))


def render_spec(spec: RealInputSpec, images: np.ndarray) -> bytes:
    """The file a spec describes, its digit taken from `images` (the MNIST test digits it indexes)."""
    digit = images[spec.source_index] if spec.source_index is not None else None
    return kind_by_id(spec.kind_id).render(digit, spec.seed)


def real_input_set(images: np.ndarray, labels: np.ndarray, *, digits_per_kind: int, non_digits_per_kind: int,
                   kinds: Sequence[str] | None = None, seed: int = 0) -> Iterator[RealInput]:
    """A reproducible set: for each kind in order, `digits_per_kind` pictures of MNIST test digits
    (distinct digits, drawn at random from `images`) or `non_digits_per_kind` pictures without one.

    `images` (N x 28 x 28 uint8) and `labels` must be MNIST's *test* digits: the models under test
    trained on the others. The same arguments yield the same bytes.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"give N x 28 x 28 digits and N labels, got {images.shape} and {labels.shape}")
    plan = real_input_plan(labels, digits_per_kind=digits_per_kind, non_digits_per_kind=non_digits_per_kind,
                           kinds=kinds, seed=seed)
    for spec in plan:
        yield RealInput(spec.kind_id, render_spec(spec, images), spec.label, spec.source_index, spec.seed)
