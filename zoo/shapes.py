"""Shape and cost arithmetic of convolutions and pooling, as plain functions of integers.

The formulas are the documents': an n-wide input, a k-wide window, p rows or columns of padding in
total (both sides together) and stride s give floor((n - k + p + s) / s) outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from zoo.ops._args import pair


def conv_output_size(n: int, kernel: int, padding_total: int = 0, stride: int = 1) -> int:
    """floor((n - k + p + s) / s), with p the total padding of the axis (both sides)."""
    if kernel < 1 or stride < 1 or padding_total < 0:
        raise ValueError(f"need kernel >= 1, stride >= 1, padding >= 0; got k={kernel}, s={stride}, p={padding_total}")
    if n + padding_total < kernel:
        raise ValueError(f"window {kernel} is larger than the padded input {n} + {padding_total}")
    return (n - kernel + padding_total + stride) // stride


def conv_output_shape(
    input_hw: tuple[int, int],
    kernel_size: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
) -> tuple[int, int]:
    """Output height and width for a layer given torch-style padding per side (as nn.Conv2d takes it)."""
    k = pair(kernel_size, "kernel_size")
    p = pair(padding, "padding")
    s = pair(stride, "stride")
    return (
        conv_output_size(input_hw[0], k[0], 2 * p[0], s[0]),
        conv_output_size(input_hw[1], k[1], 2 * p[1], s[1]),
    )


def pool_output_shape(
    input_hw: tuple[int, int],
    pool_size: int | tuple[int, int],
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Pooling follows the same formula; the stride defaults to the window, as in torch's layers."""
    return conv_output_shape(input_hw, pool_size, padding, pool_size if stride is None else stride)


@dataclass(frozen=True)
class Window:
    """One layer of a stack as the receptive-field calculation sees it (kernel and stride)."""

    kernel: int
    stride: int = 1


def receptive_field(layers: Iterable[Window]) -> int:
    """Width of the input region that one output element of the stack can see.

    Each layer widens the field by (k - 1) times the product of the strides below it.
    """
    field, jump = 1, 1
    for layer in layers:
        field += (layer.kernel - 1) * jump
        jump *= layer.stride
    return field


def conv_parameter_count(c_in: int, c_out: int, kernel_size: int | tuple[int, int], bias: bool = True) -> int:
    k_h, k_w = pair(kernel_size, "kernel_size")
    return c_out * c_in * k_h * k_w + (c_out if bias else 0)


def linear_parameter_count(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_out * n_in + (n_out if bias else 0)


@dataclass(frozen=True)
class OperationCount:
    multiplications: int
    additions: int

    @property
    def total(self) -> int:
        return self.multiplications + self.additions


def conv_operation_count(
    c_in: int, c_out: int, output_hw: tuple[int, int], kernel_size: int | tuple[int, int]
) -> OperationCount:
    """Multiplications and additions of a convolution's forward pass, counted separately.

    Every output element takes c_in * k_h * k_w products; summing them takes one addition fewer,
    and adding the bias takes that one back, so additions equal multiplications with a bias.
    """
    k_h, k_w = pair(kernel_size, "kernel_size")
    products = c_in * k_h * k_w
    outputs = c_out * output_hw[0] * output_hw[1]
    return OperationCount(multiplications=outputs * products, additions=outputs * products)


# The parameter counts of "From Fully Connected Layers to Convolutions", as functions of the image.
def fully_connected_image_parameters(height: int, width: int) -> int:
    """Every hidden pixel sees every input pixel: (h * w)^2 weights for an h x w hidden image."""
    return (height * width) ** 2


def translation_invariant_parameters(height: int, width: int) -> int:
    """Offsets a in (-h, h), b in (-w, w): about (2h) * (2w) = 4hw weights, shared by all positions."""
    return (2 * height) * (2 * width)


def local_parameters(delta: int) -> int:
    """Offsets limited to |a|, |b| <= Delta: the documents count this as 4 * Delta^2."""
    return 4 * delta**2
