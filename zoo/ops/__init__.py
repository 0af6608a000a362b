"""Cross-correlation and pooling, twice: the documents' loops and the vectorised, exportable versions.

`reference` keeps the nested loops of the d2l chapters exactly as readable as they are there;
`vectorised` computes the same numbers with whole-tensor operations, so that autograd and the ONNX
exporter can handle them for any input height and width. Tests hold each against the other.
"""
from zoo.ops import reference, vectorised
from zoo.ops.vectorised import (
    conv2d_strict,
    corr2d,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_multi_in_out_1x1,
    pad2d,
    pool2d,
)

__all__ = [
    "reference",
    "vectorised",
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "conv2d_strict",
    "pad2d",
    "pool2d",
]
