"""The torch side of an export: the module that becomes the ONNX graph, and the reference it must match.

A digit classifier is wrapped so that the exported graph takes what a client has, pixels in [0, 1],
and applies the training normalisation itself: (pixels - mean) / std -> model -> logits, and a
softmax for probabilities. Feature-map models are exported as they are, with named tensors.

The parity reference deliberately does not reuse the wrapper: it composes the training-side
`Preprocessing.normalise` with the model, so a wrong constant or a missing step in the wrapper
shows up as a parity failure instead of being exported twice.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from contracts.model_card import (
    FEATURE_MAP_OUTPUT,
    IMAGE_INPUT,
    LOGITS_OUTPUT,
    PIXELS_INPUT,
    PROBABILITIES_OUTPUT,
)
from export.source import ExportSource


class ClassifierGraph(nn.Module):
    """pixels (N, 1, H, W) in [0, 1] -> (logits, probabilities), each (N, classes).

    The probabilities are softmax(logits / T) with the temperature training fitted (calibrated);
    without one, the plain softmax. The logits are the model's own either way.
    """

    def __init__(self, model: nn.Module, mean: float, std: float, temperature: float | None = None):
        super().__init__()
        self.model = model
        # Buffers, so the constants show up as named initializers in the graph.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32))
        self.calibrated = temperature is not None
        if self.calibrated:
            self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model((pixels - self.pixel_mean) / self.pixel_std)
        scaled = logits / self.temperature if self.calibrated else logits
        return logits, torch.softmax(scaled, dim=1)


class FeatureMapGraph(nn.Module):
    """image (N, 1, H, W) -> feature_map; the wrapper only gives the input its name."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


def input_name(source: ExportSource) -> str:
    return PIXELS_INPUT if source.spec.is_classifier else IMAGE_INPUT


def output_names(source: ExportSource) -> list[str]:
    return [LOGITS_OUTPUT, PROBABILITIES_OUTPUT] if source.spec.is_classifier else [FEATURE_MAP_OUTPUT]


def export_graph(source: ExportSource) -> nn.Module:
    if source.spec.is_classifier:
        return ClassifierGraph(
            source.model, source.preprocessing.mean, source.preprocessing.std, source.temperature
        ).eval()
    return FeatureMapGraph(source.model).eval()


def example_input(source: ExportSource, batch: int = 2) -> torch.Tensor:
    """The tracing input. No dimension is 1, so the exporter keeps every dynamic one symbolic."""
    height, width = source.preprocessing.input_size if source.spec.is_classifier else (16, 20)
    return torch.rand(batch, 1, height, width, generator=torch.Generator().manual_seed(0))


@torch.inference_mode()
def reference_outputs(source: ExportSource, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What the PyTorch model computes for a batch of graph inputs, keyed by ONNX output name."""
    batch = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    if not source.spec.is_classifier:
        return {FEATURE_MAP_OUTPUT: source.model(batch).numpy()}
    logits = source.model(source.preprocessing.normalise(batch))
    scaled = logits / source.temperature if source.temperature is not None else logits
    return {LOGITS_OUTPUT: logits.numpy(), PROBABILITIES_OUTPUT: torch.softmax(scaled, dim=1).numpy()}
