"""KServe v2 tensors <-> numpy arrays, with every check a request needs before it reaches a model.

A v2 input arrives as (name, datatype, shape) plus its data, either as raw little-endian bytes
(`raw_input_contents`, what Triton's clients send) or as a typed list (`contents.fp32_contents`,
...). Both become numpy arrays here: raw bytes without a copy (np.frombuffer), typed lists checked
for range. The shape, datatype, byte count and, for float inputs, finiteness are checked against
the model's input, and each failure says what was expected. Nothing here knows about gRPC.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from serve.core.errors import InvalidInput, TooLarge
from serve.core.repository import TensorSpec

# The InferTensorContents field that carries each datatype (the small integers travel widened).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_FLOAT_TYPES = ("FP16", "FP32", "FP64")
# Datatypes with a little-endian numpy dtype (FP16 and the rest can also travel raw).
_RAW_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def check_shape(name: str, shape: Sequence[int], spec: TensorSpec, max_batch: int | None) -> tuple[int, ...]:
    """The request's shape for input `name`, checked against the model's (-1 = any size)."""
    shape = tuple(int(d) for d in shape)
    expected = list(spec.shape)
    if len(shape) != len(expected):
        raise InvalidInput(
            f"input {name!r} has shape {list(shape)} ({len(shape)} dimensions); the model expects "
            f"{len(expected)} dimensions: {expected} (-1 = any size)"
        )
    for axis, (got, want) in enumerate(zip(shape, expected)):
        if got < 0:
            raise InvalidInput(f"input {name!r} has a negative dimension {got} at axis {axis}; shape was {list(shape)}")
        if want != -1 and got != want:
            raise InvalidInput(
                f"input {name!r} has shape {list(shape)}; the model expects {expected} (-1 = any size): "
                f"axis {axis} must be {want}, got {got}"
            )
    if shape and shape[0] == 0:
        raise InvalidInput(f"input {name!r} has an empty batch (shape {list(shape)}); send at least one item")
    if max_batch is not None and expected and expected[0] == -1 and shape[0] > max_batch:
        raise TooLarge(
            f"input {name!r} holds a batch of {shape[0]}; the limit is {max_batch} per request: split the request"
        )
    return shape


def check_named_dimensions(arrays: dict[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Dimensions the graph names alike (the batch "N" of two inputs, say) must have one size."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in specs:
        if spec.name not in arrays:
            continue
        for axis, dim_name in enumerate(spec.dim_names):
            if dim_name is None or axis >= arrays[spec.name].ndim:
                continue
            size = arrays[spec.name].shape[axis]
            first = seen.setdefault(dim_name, (spec.name, size))
            if first[1] != size:
                raise InvalidInput(
                    f"inputs {first[0]!r} and {spec.name!r} must agree on dimension {dim_name!r} (the model names "
                    f"both so): got {first[1]} and {size}"
                )


def check_datatype(name: str, datatype: str, spec: TensorSpec) -> None:
    if datatype != spec.datatype:
        raise InvalidInput(f"input {name!r} has datatype {datatype or '(empty)'}; the model expects {spec.datatype}")
    if datatype == "BYTES":
        raise InvalidInput(f"input {name!r}: BYTES tensors are not supported by this server")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def from_raw(name: str, raw: bytes, shape: tuple[int, ...], spec: TensorSpec) -> np.ndarray:
    """Raw little-endian bytes -> array of `shape`, without copying."""
    dtype = _RAW_DTYPES[spec.datatype]
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r}: raw_input_contents holds {len(raw)} bytes; shape {list(shape)} of {spec.datatype} "
            f"needs {expected} ({element_count(shape)} elements x {dtype.itemsize} bytes, little-endian, row-major)"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return array if dtype.byteorder in ("=", "|") or np.little_endian else array.astype(spec.dtype)


def from_contents(name: str, contents, shape: tuple[int, ...], spec: TensorSpec) -> np.ndarray:
    """InferTensorContents (the typed field of the datatype) -> array of `shape`, range-checked."""
    field_name = CONTENTS_FIELD.get(spec.datatype)
    if field_name is None:
        raise InvalidInput(f"input {name!r}: {spec.datatype} tensors can only be sent as raw_input_contents")
    values = getattr(contents, field_name)
    count = element_count(shape)
    if len(values) != count:
        populated = [f.name for f, v in contents.ListFields()]
        hint = f" (the request filled {', '.join(populated)})" if populated and field_name not in populated else ""
        raise InvalidInput(
            f"input {name!r}: contents.{field_name} holds {len(values)} values; shape {list(shape)} needs {count}{hint}"
        )
    target = spec.dtype
    if np.issubdtype(target, np.integer):
        wide = np.array(values, dtype=np.int64 if np.issubdtype(target, np.signedinteger) else np.uint64)
        info = np.iinfo(target)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(
                f"input {name!r}: values must fit {spec.datatype} [{info.min}, {info.max}], got [{wide.min()}, {wide.max()}]"
            )
        array = wide.astype(target)
    else:
        array = np.array(values, dtype=target)
    return array.reshape(shape)


def check_values(name: str, array: np.ndarray, datatype: str, value_range: Sequence[float] | None) -> None:
    """Float inputs must be finite, and within the model card's value range when it has one."""
    if datatype not in _FLOAT_TYPES or array.size == 0:
        return
    low, high = float(array.min()), float(array.max())  # NaN and inf propagate to these
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InvalidInput(f"input {name!r} holds {bad} NaN or infinite values; send finite numbers")
    if value_range and (low < value_range[0] or high > value_range[1]):
        raise InvalidInput(
            f"input {name!r} values must lie in [{value_range[0]:g}, {value_range[1]:g}], got [{low:g}, {high:g}]"
            + ("; divide 8-bit pixels by 255" if high > 1.0 and value_range[1] == 1.0 else "")
        )


def to_raw(array: np.ndarray) -> bytes:
    """An output array as raw little-endian bytes (what Triton's clients read)."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def fill_contents(contents, array: np.ndarray, datatype: str) -> None:
    """Write an output array into the typed InferTensorContents field of its datatype."""
    field_name = CONTENTS_FIELD.get(datatype)
    if field_name is None:
        raise InvalidInput(f"output datatype {datatype} can only be returned as raw_output_contents; send raw inputs")
    getattr(contents, field_name).extend(array.ravel().tolist())
