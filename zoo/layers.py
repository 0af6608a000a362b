"""The documents' layers: the from-scratch `Conv2D` and the finite-difference edge detector."""
from __future__ import annotations

import torch
from torch import nn

from zoo.ops import vectorised
from zoo.ops._args import pair

# The finite difference x[i, j] - x[i, j + 1]: 1 on a white-to-black edge, -1 on black-to-white.
VERTICAL_EDGE_KERNEL = ((1.0, -1.0),)


class Conv2D(nn.Module):
    """A 2D convolutional layer from scratch: one kernel, one scalar bias (d2l section 7.2.2).

    The kernel starts uniformly random in [0, 1) and the bias at zero, as in the documents. It runs
    on the vectorised cross-correlation, so it trains with autograd and exports to ONNX for any
    input height and width. Inputs are (..., H, W): a single image or a batch.
    """

    def __init__(self, kernel_size: int | tuple[int, int]):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.weight = nn.Parameter(torch.rand(self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vectorised.corr2d(x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class EdgeDetector(nn.Module):
    """The fixed kernel [1, -1] (vertical edges) or its transpose (horizontal edges).

    The kernel is a buffer, not a parameter: this detector is designed, not learned.
    """

    def __init__(self, orientation: str = "vertical"):
        super().__init__()
        if orientation not in ("vertical", "horizontal"):
            raise ValueError(f"orientation must be 'vertical' or 'horizontal', got {orientation!r}")
        self.orientation = orientation
        kernel = torch.tensor(VERTICAL_EDGE_KERNEL)
        self.register_buffer("kernel", kernel if orientation == "vertical" else kernel.t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vectorised.corr2d(x, self.kernel)

    def extra_repr(self) -> str:
        return f"orientation={self.orientation!r}"
