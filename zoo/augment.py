"""Batched training augmentations on pixels (N, 1, H, W) in [0, 1], ink bright on dark.

MNIST's digits are clean, centred, upright and drawn with one pen; the digits the server gets are
photographed, thick or thin, slanted and slightly blurred. Each augmentation here imitates one
of those differences on a whole batch at once (one grid sample, one pooling, one convolution),
so it costs a few percent of a training step. Every draw comes from the loader's generator: a
seed fixes the run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Augmentation:
    rotate: float = 0.0  # degrees, each way
    scale: float = 0.0  # relative size change, each way (0.1: 90% to 110%)
    shear: float = 0.0  # degrees, each way
    stroke: float = 0.0  # share of images whose strokes are made one pixel thicker or thinner
    blur: float = 0.0  # share of images blurred by a 3x3 Gaussian
    noise: float = 0.0  # standard deviation of Gaussian noise added to the ink (0: none)

    @property
    def active(self) -> bool:
        return any((self.rotate, self.scale, self.shear, self.stroke, self.blur, self.noise))

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.rotate or self.scale or self.shear:
            pixels = random_affine(pixels, self.rotate, self.scale, self.shear, generator)
        if self.stroke:
            pixels = random_stroke_width(pixels, self.stroke, generator)
        if self.blur:
            pixels = random_blur(pixels, self.blur, generator)
        if self.noise:
            pixels = (pixels + self.noise * _randn(pixels.shape, generator, pixels.device)).clamp_(0.0, 1.0)
        return pixels


def _rand(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Drawn on the CPU from the (CPU) generator, then moved: the same numbers on every device.
    return torch.rand(shape, generator=generator).to(device)


def _randn(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device)


def random_affine(
    pixels: torch.Tensor, rotate: float, scale: float, shear: float, generator: torch.Generator
) -> torch.Tensor:
    """Each image rotated, scaled and sheared about its centre by its own random amounts."""
    n = pixels.shape[0]
    draws = _rand((3, n), generator, pixels.device) * 2 - 1  # uniform in [-1, 1]
    angle = torch.deg2rad(draws[0] * rotate)
    zoom = 1.0 + draws[1] * scale
    slant = torch.tan(torch.deg2rad(draws[2] * shear))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid maps output coordinates to input ones: the inverse of the wanted transform,
    # so dividing by the zoom makes the digit larger for a zoom above 1.
    theta = torch.zeros(n, 2, 3, device=pixels.device, dtype=pixels.dtype)
    theta[:, 0, 0] = (cos + slant * sin) / zoom
    theta[:, 0, 1] = (-sin + slant * cos) / zoom
    theta[:, 1, 0] = sin / zoom
    theta[:, 1, 1] = cos / zoom
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke_width(pixels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A `share` of the images drawn one pixel bolder (grey dilation) or thinner (grey erosion), half each."""
    n = pixels.shape[0]
    draws = _rand((n,), generator, pixels.device)
    thicker = (draws < share / 2).view(n, 1, 1, 1)
    thinner = ((draws >= share / 2) & (draws < share)).view(n, 1, 1, 1)
    dilated = F.max_pool2d(pixels, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-pixels, 3, stride=1, padding=1)
    # Erosion can remove a thin digit altogether: keep the image unless ink remains.
    eroded_has_ink = eroded.flatten(1).amax(1).view(n, 1, 1, 1) > 0.5
    return torch.where(thicker, dilated, torch.where(thinner & eroded_has_ink, eroded, pixels))


_GAUSSIAN_3X3 = torch.tensor([1.0, 2.0, 1.0]).outer(torch.tensor([1.0, 2.0, 1.0])) / 16.0


def random_blur(pixels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A `share` of the images blurred by a 3x3 Gaussian, as a slightly defocused photo."""
    n = pixels.shape[0]
    chosen = (_rand((n,), generator, pixels.device) < share).view(n, 1, 1, 1)
    kernel = _GAUSSIAN_3X3.to(pixels.device, pixels.dtype).view(1, 1, 3, 3)
    blurred = F.conv2d(pixels, kernel, padding=1)
    return torch.where(chosen, blurred, pixels)

