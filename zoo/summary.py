"""Per-layer summary of a model: output shape, parameters and multiply-adds of every leaf module.

    python -m zoo.summary lenet
    python -m zoo.summary lenet5-32 --input-shape 4,1,32,32

The d2l chapter's `layer_summary` prints from inside a loop over `net`; here forward hooks on the
leaf modules record what each layer produced, so any registered model can be summarised without
editing its forward, nested containers included.

Counting convention for multiply-adds (MACs): one MAC is one multiplication plus the addition that
accumulates it, for the whole input batch.

- Convolutions (torch's Conv2d, the from-scratch Conv2D, the EdgeDetector): every output element
  takes (input channels / groups) x kh x kw MACs, i.e. `zoo.shapes.conv_operation_count`'s
  multiplications. The documents count multiplications and additions separately, so their
  "operations" are twice the MACs.
- Linear: in_features MACs per output element.
- Bias additions, activations, pooling (comparisons or sums) and reshapes count 0: they are
  linear in the number of elements and small next to the products of the layers above.

Parameters are those a module owns (buffers such as the EdgeDetector's fixed kernel are not
parameters); a module called twice is listed twice but its parameters are counted once.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from zoo.layers import Conv2D, EdgeDetector
from zoo.models import UnknownModelError, get_model, get_model_spec, list_models

# The edge models take any image; the documents' 6x8 edge image is the natural example.
FEATURE_MAP_DEFAULT_HW = (6, 8)


@dataclass(frozen=True)
class LayerRow:
    """One leaf-module call as the summary table shows it."""

    position: int  # order of execution, from 0
    name: str  # qualified module name inside the model, e.g. "net.3"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]
    parameters: int
    multiply_adds: int

    @property
    def label(self) -> str:
        return f"{self.position}: {self.kind}"


def _spatial_conv_macs(output: torch.Tensor, kernel_hw: tuple[int, int], in_channels_per_group: int) -> int:
    # Each output element (batch and channels included) is one window's worth of products.
    return output.numel() * in_channels_per_group * kernel_hw[0] * kernel_hw[1]


def _torch_conv2d_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    return _spatial_conv_macs(output, tuple(module.kernel_size), module.in_channels // module.groups)


def _scratch_conv_macs(module: Conv2D, output: torch.Tensor) -> int:
    return _spatial_conv_macs(output, tuple(module.weight.shape), 1)


def _edge_detector_macs(module: EdgeDetector, output: torch.Tensor) -> int:
    return _spatial_conv_macs(output, tuple(module.kernel.shape), 1)


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


MAC_COUNTERS: dict[type, Callable[[nn.Module, torch.Tensor], int]] = {
    nn.Conv2d: _torch_conv2d_macs,
    Conv2D: _scratch_conv_macs,
    EdgeDetector: _edge_detector_macs,
    nn.Linear: _linear_macs,
}


def multiply_adds(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of `module` that produced `output` (0 for layers without products)."""
    for kind, counter in MAC_COUNTERS.items():
        if isinstance(module, kind):
            return counter(module, output)
    return 0


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"a leaf module returned {type(output).__name__}, expected a tensor")


def layer_summary(model: nn.Module, input_shape: Sequence[int]) -> list[LayerRow]:
    """Run one random input of `input_shape` through `model` and describe every leaf-module call.

    The model is run in eval mode without gradients and put back in the mode it was in.
    Raises ValueError when the model cannot take an input of that shape.
    """
    input_shape = tuple(int(size) for size in input_shape)
    if not input_shape or any(size < 1 for size in input_shape):
        raise ValueError(f"input shape must be positive sizes, got {input_shape}")
    leaves = [(name, module) for name, module in model.named_modules() if not any(module.children())]
    rows: list[LayerRow] = []
    counted: set[int] = set()

    def record(name: str):
        def hook(module: nn.Module, _inputs, output) -> None:
            output = _first_tensor(output)
            first_call = id(module) not in counted
            counted.add(id(module))
            rows.append(
                LayerRow(
                    position=len(rows),
                    name=name,
                    kind=type(module).__name__,
                    output_shape=tuple(output.shape),
                    parameters=sum(p.numel() for p in module.parameters(recurse=False)) if first_call else 0,
                    multiply_adds=multiply_adds(module, output),
                )
            )

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in leaves]
    was_training = model.training
    try:
        model.eval()
        # The values do not matter, only the shapes; a fixed generator keeps runs identical.
        generator = torch.Generator().manual_seed(0)
        example = torch.rand(input_shape, generator=generator)
        with torch.no_grad():
            model(example)
    except RuntimeError as error:
        raise ValueError(f"the model cannot take an input of shape {input_shape}: {error}") from error
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return rows


@dataclass(frozen=True)
class Totals:
    parameters: int
    multiply_adds: int


def totals(rows: Sequence[LayerRow]) -> Totals:
    return Totals(sum(row.parameters for row in rows), sum(row.multiply_adds for row in rows))


def format_table(rows: Sequence[LayerRow], input_shape: Sequence[int]) -> str:
    """The summary as fixed-width text: one line per layer call, then the totals."""
    header = ("layer", "module", "output shape", "parameters", "multiply-adds")
    body = [
        (row.label, row.name, "x".join(map(str, row.output_shape)), f"{row.parameters:,}", f"{row.multiply_adds:,}")
        for row in rows
    ]
    total = totals(rows)
    footer = ("total", "", "", f"{total.parameters:,}", f"{total.multiply_adds:,}")
    widths = [max(len(line[column]) for line in [header, *body, footer]) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Text columns left-aligned, counts right-aligned so digits line up.
        return "  ".join(
            cell.rjust(width) if column >= 3 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(header))
    lines = [f"input shape: {'x'.join(map(str, input_shape))}", line(header), rule]
    lines += [line(cells) for cells in body]
    lines += [rule, line(footer), "multiply-adds: convolutions and linear layers only (see zoo/summary.py)"]
    return "\n".join(lines)


def default_input_shape(model_name: str) -> tuple[int, int, int, int]:
    """One grey image of the size the model is registered for (6x8 for the any-size edge models)."""
    spec = get_model_spec(model_name)
    height, width = spec.input_size if spec.input_size is not None else FEATURE_MAP_DEFAULT_HW
    return (1, 1, height, width)


@dataclass(frozen=True)
class SummaryConfig:
    model_name: str
    input_shape: tuple[int, ...] | None = None  # None: default_input_shape(model_name)


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,1,28,28' -> (1, 1, 28, 28); argparse turns the ValueError into a usage error."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"input shape must be comma-separated positive integers such as 1,1,28,28, got {text!r}"
        ) from None
    if any(size < 1 for size in shape):
        raise argparse.ArgumentTypeError(f"input shape sizes must be positive, got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.summary",
        description="Print a per-layer table (output shape, parameters, multiply-adds) of a registered model.",
    )
    parser.add_argument("model_name", metavar="NAME", help=f"registered model: {', '.join(list_models())}")
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        default=None,
        metavar="N,C,H,W",
        help="shape of the example input, e.g. 1,1,28,28 (default: 1,1,H,W with the model's registered size; 1,1,6,8 "
        "for the edge models)",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, SummaryConfig]:
    parser = build_parser()
    args = parser.parse_args(argv)
    return parser, SummaryConfig(model_name=args.model_name, input_shape=args.input_shape)


def main(argv: Sequence[str] | None = None) -> int:
    parser, config = parse_config(argv)
    try:
        spec = get_model_spec(config.model_name)
    except UnknownModelError as error:
        parser.error(str(error))
    input_shape = config.input_shape or default_input_shape(config.model_name)
    try:
        rows = layer_summary(get_model(config.model_name), input_shape)
    except ValueError as error:
        hint = ""
        if spec.input_size is not None:
            hint = f" ({spec.name} is built for N,1,{spec.input_size[0]},{spec.input_size[1]})"
        parser.error(f"{config.model_name}: {error}{hint}")
    print(format_table(rows, input_shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
