"""The edge-detection models of "Learning a Kernel": a 1x2 kernel learned from (X, Y) pairs."""
from __future__ import annotations

import torch
from torch import nn

from zoo.layers import Conv2D
from zoo.models.registry import FEATURE_MAP, register_model


class LearnedEdgeKernel(nn.Module):
    """The chapter's `nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)` on (N, 1, H, W) images."""

    def __init__(self, kernel_size: tuple[int, int] = (1, 2)):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=tuple(kernel_size), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @property
    def kernel(self) -> torch.Tensor:
        return self.conv.weight.detach().reshape(self.conv.weight.shape[-2:])


class ScratchEdgeKernel(nn.Module):
    """The same task on the from-scratch `Conv2D` (kernel and scalar bias), on (N, 1, H, W) images."""

    def __init__(self, kernel_size: tuple[int, int] = (1, 2)):
        super().__init__()
        self.conv = Conv2D(tuple(kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @property
    def kernel(self) -> torch.Tensor:
        return self.conv.weight.detach()


@register_model(
    "edge",
    task=FEATURE_MAP,
    input_size=None,
    description="Learnable 1x2 convolution (torch's Conv2d, no bias) that learns the edge kernel [1, -1]",
)
def edge(**config) -> LearnedEdgeKernel:
    return LearnedEdgeKernel(**config)


@register_model(
    "conv2d",
    task=FEATURE_MAP,
    input_size=None,
    description="The from-scratch Conv2D (1x2 kernel and scalar bias) learning the edge kernel",
)
def conv2d(**config) -> ScratchEdgeKernel:
    return ScratchEdgeKernel(**config)
