"""How a digit classifier wants its pixels: size, padding and normalisation, as one record.

Training applies it to uint8 images; the checkpoint stores it; export bakes the normalisation into
the graph and copies the record into the ONNX model card, so nothing downstream has to guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from contracts.digit_format import DIGIT_SIZE, UINT8_MAX, VALUE_RANGE, padding_for

# Per-pixel mean and standard deviation of each training set, with pixels scaled to [0, 1].
NORMALISATION = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
    # The UCI digits (scikit-learn), after rescaling to MNIST's 28x28 format.
    "uci-digits": (0.1307, 0.3081),
}


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]
    mean: float
    std: float
    digit_size: int = DIGIT_SIZE

    @classmethod
    def for_model(cls, input_size: tuple[int, int], dataset: str) -> "Preprocessing":
        mean, std = NORMALISATION[dataset]
        return cls(tuple(input_size), mean, std)

    def pixels(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(N, 28, 28) uint8 -> (N, 1, H, W) float32 in [0, 1], padded with background as the server pads.

        The digit format's own functions are numpy; this is their torch twin for whole batches on the
        training device, taking its sizes and scale from the format so the two cannot drift apart.
        """
        pixels = images_uint8.to(torch.float32).div_(float(UINT8_MAX)).unsqueeze(1)
        top, bottom, left, right = padding_for(self.input_size, self.digit_size)
        if top or bottom or left or right:
            pixels = torch.nn.functional.pad(pixels, (left, right, top, bottom))
        return pixels

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def to_meta(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "digit_size": self.digit_size,
            "value_range": list(VALUE_RANGE),
            "mean": [self.mean],
            "std": [self.std],
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Preprocessing":
        return cls(tuple(meta["input_size"]), float(meta["mean"][0]), float(meta["std"][0]), int(meta["digit_size"]))
