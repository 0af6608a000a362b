"""Batched augmentations: shapes and range kept, reproducible from the generator, off means unchanged."""
from __future__ import annotations

import torch

from zoo.augment import Augmentation, random_affine, random_blur, random_stroke_width


def _digits(n: int = 16) -> torch.Tensor:
    pixels = torch.zeros(n, 1, 28, 28)
    pixels[:, :, 6:22, 12:16] = 1.0  # a thick vertical bar in each
    return pixels


def test_every_augmentation_keeps_shape_and_range_and_is_seeded():
    augmentation = Augmentation(rotate=15, scale=0.1, shear=10, stroke=0.5, blur=0.5, noise=0.05)
    first = augmentation(_digits(), torch.Generator().manual_seed(3))
    again = augmentation(_digits(), torch.Generator().manual_seed(3))
    other = augmentation(_digits(), torch.Generator().manual_seed(4))
    assert first.shape == (16, 1, 28, 28) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_no_augmentation_is_inactive_and_zero_strength_affine_is_the_identity():
    assert not Augmentation().active and Augmentation(blur=0.1).active
    pixels = _digits()
    unchanged = random_affine(pixels, 0.0, 0.0, 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(unchanged, pixels, atol=1e-5)


def test_rotation_moves_ink_but_keeps_most_of_it():
    pixels = _digits()
    rotated = random_affine(pixels, 40.0, 0.0, 0.0, torch.Generator().manual_seed(0))
    assert not torch.allclose(rotated, pixels, atol=0.1)
    ink, rotated_ink = pixels.sum((1, 2, 3)), rotated.sum((1, 2, 3))
    assert torch.all((rotated_ink - ink).abs() <= 0.1 * ink)


def test_stroke_width_makes_ink_bolder_or_thinner():
    pixels = _digits(64)
    changed = random_stroke_width(pixels, 1.0, torch.Generator().manual_seed(0))
    ink, changed_ink = pixels.sum((1, 2, 3)), changed.sum((1, 2, 3))
    assert (changed_ink > ink).any() and (changed_ink < ink).any() and (changed_ink != ink).all()
    assert torch.equal(random_stroke_width(pixels, 0.0, torch.Generator().manual_seed(0)), pixels)


def test_blur_spreads_the_ink_and_keeps_its_mass():
    pixels = _digits()
    blurred = random_blur(pixels, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(blurred.sum((1, 2, 3)), pixels.sum((1, 2, 3)), rtol=1e-5)
    assert (blurred > 0).sum() > (pixels > 0).sum()
