"""KServe v2 tensors -> numpy arrays, with every check a request needs before it reaches a model.

A v2 input is (name, datatype, shape) plus its data, which travels either as raw little-endian
bytes (gRPC's `raw_input_contents`, HTTP's binary tensor extension: what Triton's clients send) or as
a flat list of typed values (gRPC's `contents.fp32_contents`, ..., HTTP's JSON `data`). Both become
numpy arrays here: raw bytes without a copy (np.frombuffer), values checked for range. The shape,
datatype, byte count and, for float inputs, finiteness are checked against the model's input, and
each failure says what was expected. Nothing here knows about a protocol: the front doors turn
their messages into `InferInput`s and the arrays back into their messages.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from contracts.errors import InvalidInput, TooLarge
from contracts.model_file import Model, TensorSpec

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


def from_raw(name: str, raw, shape: tuple[int, ...], spec: TensorSpec, source: str = "raw_input_contents") -> np.ndarray:
    """Raw little-endian bytes -> array of `shape`, without copying."""
    dtype = _RAW_DTYPES[spec.datatype]
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input {name!r}: {source} holds {len(raw)} bytes; shape {list(shape)} of {spec.datatype} "
            f"needs {expected} ({element_count(shape)} elements x {dtype.itemsize} bytes, little-endian, row-major)"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return array if dtype.byteorder in ("=", "|") or np.little_endian else array.astype(spec.dtype)


def from_values(name: str, values: Sequence, shape: tuple[int, ...], spec: TensorSpec, source: str = "data",
                hint: str = "") -> np.ndarray:
    """A flat sequence of typed values -> array of `shape`, range-checked for integer types."""
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: {source} holds {len(values)} values; shape {list(shape)} needs {count}{hint}")
    target = spec.dtype
    try:
        if target == np.bool_:
            if not all(isinstance(v, (bool, np.bool_)) for v in values):
                raise InvalidInput(f"input {name!r}: BOOL values must be true or false")
            array = np.array(values, dtype=np.bool_)
        elif np.issubdtype(target, np.integer):
            if any(isinstance(v, float) for v in values):
                raise InvalidInput(f"input {name!r}: {spec.datatype} values must be integers, got a number with a fraction")
            wide = np.array(values, dtype=np.int64 if np.issubdtype(target, np.signedinteger) else np.uint64)
            info = np.iinfo(target)
            if wide.size and (wide.min() < info.min or wide.max() > info.max):
                raise InvalidInput(
                    f"input {name!r}: values must fit {spec.datatype} [{info.min}, {info.max}], got [{wide.min()}, {wide.max()}]"
                )
            array = wide.astype(target)
        else:
            array = np.array(values, dtype=target)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"input {name!r}: {source} must hold {spec.datatype} numbers: {exc}") from None
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
    return array.tobytes()  # row-major, whatever the array's own layout


class InferInput:
    """One input tensor of a v2 request, as its front door received it.

    Exactly one of `raw` (little-endian bytes) and `values` (a flat sequence) carries the data;
    `source` names where it came from in the caller's message, so that errors point there. A plain
    class with slots: one is made per input of every call.
    """

    __slots__ = ("name", "datatype", "shape", "raw", "values", "source", "hint")

    def __init__(self, name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview | None = None,
                 values: Sequence | None = None, source: str = "data", hint: str = "") -> None:
        self.name, self.datatype, self.shape = name, datatype, shape
        self.raw, self.values = raw, values
        self.source = source
        # Appended to a count mismatch: what else the caller filled, when that explains the mistake.
        self.hint = hint

    def __repr__(self) -> str:
        return f"InferInput({self.name!r}, {self.datatype!r}, {list(self.shape)}, source={self.source!r})"


def decode_inputs(model: Model, inputs: Sequence[InferInput], max_batch: int | None) -> dict[str, np.ndarray]:
    """A request's inputs as numpy arrays by name, each checked against the model's input."""
    expected_names = [spec.name for spec in model.inputs]
    value_range = model.card.value_range if model.card is not None else None
    feeds: dict[str, np.ndarray] = {}
    for tensor in inputs:
        name = tensor.name
        try:
            spec = model.input(name)
        except KeyError:
            raise InvalidInput(f"model {model.name} has no input {name!r}; its inputs are {expected_names}") from None
        if name in feeds:
            raise InvalidInput(f"input {name!r} appears twice in the request")
        check_datatype(name, tensor.datatype, spec)
        shape = check_shape(name, tensor.shape, spec, max_batch)
        if tensor.raw is not None:
            array = from_raw(name, tensor.raw, shape, spec, tensor.source)
        else:
            array = from_values(name, tensor.values if tensor.values is not None else (), shape, spec, tensor.source, tensor.hint)
        check_values(name, array, spec.datatype, value_range)
        feeds[name] = array
    missing = [name for name in expected_names if name not in feeds]
    if missing:
        raise InvalidInput(f"model {model.name} needs inputs {missing} that the request lacks; its inputs are {expected_names}")
    check_named_dimensions(feeds, model.inputs)
    return feeds


def requested_outputs(model: Model, names: Sequence[str]) -> list[int]:
    """Indices into model.outputs of the outputs named (all of them when none are)."""
    if not names:
        return list(range(len(model.outputs)))
    indices = []
    for wanted in names:
        try:
            indices.append(model.output_index(wanted))
        except KeyError:
            known = [spec.name for spec in model.outputs]
            raise InvalidInput(f"model {model.name} has no output {wanted!r}; its outputs are {known}") from None
    return indices
