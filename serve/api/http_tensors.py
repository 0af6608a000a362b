"""KServe v2 REST inference bodies <-> the data plane's InferRequest and InferResult.

A request body is a JSON object (`inputs`, optional `outputs`, `id`, `parameters`), optionally followed
by Triton's binary tensor data extension: the `Inference-Header-Content-Length` header gives the JSON
part's length, and each input whose `parameters.binary_data_size` is set takes that many raw
little-endian bytes from what follows, in the order of `inputs` (as memoryview slices of the body:
no copy). Outputs come back as JSON `data`, or as binary data after the JSON when the request asks
(`binary_data` per output, else `binary_data_output` in the request's parameters).

Only the protocol's own shapes are checked here (is it JSON, is `shape` a list of integers, do the
byte counts add up); datatypes, shapes against the model, counts and values are checked by
serve.core.tensors, the same checks as gRPC's. Every failure is an InvalidInput that says what to fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contracts.errors import InvalidInput
from serve.core.dataplane import InferRequest, InferResult
from serve.core.tensors import InferInput, to_raw

INFER_HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
_FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
_INTEGER_DATATYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_UNSUPPORTED_PARAMETERS = {
    "shared_memory_region": "shared memory is not supported by this server: send `data` or binary data",
    "classification": "the classification extension is not supported by this server: ask for the output itself",
}


@dataclass(frozen=True)
class HttpInferRequest:
    request: InferRequest
    # Triton's `parameters.timeout`, in seconds; None when the request set none (or 0).
    timeout_s: float | None = None
    # Per requested output, whether it goes back as binary data; outputs not named follow the default.
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_by_default: bool = False

    def wants_binary(self, output_name: str) -> bool:
        return self.binary_outputs.get(output_name, self.binary_by_default)


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, memoryview)) else "bytes"
    return text if len(text) <= 60 else text[:57] + "..."


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part of the body and the binary part after it."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if length < 0 or length > len(body):
        raise InvalidInput(
            f"the {INFER_HEADER_LENGTH} header is {header_length!r}, but it must be the byte length of the JSON "
            f"part that starts the body (0 to {len(body)}, the body's size)"
        )
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def _load_json(header: bytes, has_header: bool) -> dict:
    try:
        document = json.loads(header)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        if has_header:
            hint = f" (is {INFER_HEADER_LENGTH} the length of the JSON part alone?)"
        elif isinstance(exc, UnicodeDecodeError) or getattr(exc, "msg", "") == "Extra data":
            hint = f" (binary data after the JSON needs the {INFER_HEADER_LENGTH} header: the JSON part's length)"
        else:
            hint = ""
        raise InvalidInput(f"the request body is not valid JSON: {exc}{hint}") from None
    except RecursionError:
        raise InvalidInput("the request JSON is nested too deeply to read") from None
    if not isinstance(document, dict):
        raise InvalidInput(f'the request body must be a JSON object {{"inputs": [...]}}, got {_describe(document)}')
    return document


def _parameters(entry: dict, where: str) -> dict:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: `parameters` must be a JSON object, got {_describe(parameters)}")
    for key, detail in _UNSUPPORTED_PARAMETERS.items():
        if key in parameters:
            raise InvalidInput(f"{where}: parameters.{key}: {detail}")
    return parameters


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flat_values(name: str, datatype: str, data: Any):
    """A JSON `data` list, flat or nested row-major, as one flat sequence of its values."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {name!r}: `data` must be a list (flat, or nested row-major), got {_describe(data)}")
    uneven = InvalidInput(f"input {name!r}: `data` is nested unevenly; nest it exactly as the shape, or send one flat list")
    if datatype in _FLOAT_DATATYPES:
        # The common case, converted by numpy in one call (no Python loop over the values).
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError):
            raise uneven from None
        if array.size and array.dtype.kind not in "iuf":
            found = "strings" if array.dtype.kind == "U" else "values that are not numbers"
            raise InvalidInput(f"input {name!r} is {datatype}: `data` must hold only numbers, but it holds {found}")
        return array.reshape(-1)
    # Integers and booleans stay Python objects, so that tensors.from_values range-checks each exactly
    # (numpy would turn a mix of small and above-int64 integers into floats).
    try:
        flat = np.asarray(data, dtype=object).reshape(-1).tolist()
    except ValueError:
        raise uneven from None
    if any(isinstance(value, list) for value in flat):
        raise uneven
    if datatype == "BOOL":
        wrong, expected = [value for value in flat if not isinstance(value, bool)], "true or false"
    elif datatype in _INTEGER_DATATYPES:
        wrong, expected = [value for value in flat if not _is_integer(value)], "integers"
    else:
        return flat  # an unknown datatype: tensors.check_datatype names what the model expects
    if wrong:
        raise InvalidInput(f"input {name!r} is {datatype}: `data` must hold only {expected}, but it holds {_describe(wrong[0])}")
    return flat


def _input(index: int, entry: Any, binary: memoryview, offset: int, has_header: bool) -> tuple[InferInput, int]:
    """inputs[index] as an InferInput, and the offset in the binary part after its bytes."""
    if not isinstance(entry, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype and data; got {_describe(entry)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] needs a `name` string (the model's input name), got {_describe(name)}")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input {name!r} needs a `datatype` string such as \"FP32\", got {_describe(datatype)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_integer(d) for d in shape):
        raise InvalidInput(f"input {name!r}: `shape` must be a list of integers such as [1, 1, 28, 28], got {_describe(shape)}")
    parameters = _parameters(entry, f"input {name!r}")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in entry:
            raise InvalidInput(
                f"input {name!r} has no data: send `data` (a list, flat or nested row-major) or binary data after "
                f"the JSON with parameters.binary_data_size and the {INFER_HEADER_LENGTH} header"
            )
        return InferInput(name, datatype, shape, values=_flat_values(name, datatype, entry["data"])), offset
    if "data" in entry:
        raise InvalidInput(f"input {name!r} has both `data` and parameters.binary_data_size; send its data one way only")
    if not _is_integer(size) or size < 0:
        raise InvalidInput(f"input {name!r}: parameters.binary_data_size must be a byte count (an integer >= 0), got {_describe(size)}")
    remaining = len(binary) - offset
    if size > remaining:
        if not has_header:
            raise InvalidInput(
                f"input {name!r} has parameters.binary_data_size but the request has no binary part: send the "
                f"{INFER_HEADER_LENGTH} header with the JSON part's length, the raw bytes after the JSON"
            )
        raise InvalidInput(
            f"input {name!r}: parameters.binary_data_size is {size} bytes, but only {remaining} bytes of binary data "
            "remain after the JSON part and the inputs before it"
        )
    raw = binary[offset : offset + size]
    return InferInput(name, datatype, shape, raw=raw, source="its binary data"), offset + size


def _timeout_s(parameters: dict) -> float | None:
    timeout_us = parameters.get("timeout")
    if timeout_us is None:
        return None
    if not _is_integer(timeout_us) or timeout_us < 0:
        raise InvalidInput(
            f"parameters.timeout must be a whole number of microseconds (0: no timeout), got {_describe(timeout_us)}"
        )
    return timeout_us / 1e6 if timeout_us else None


def _binary_flag(parameters: dict, key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameters.{key} must be true or false, got {_describe(value)}")
    return value


def parse_infer_request(body: bytes, header_length: str | None, model_name: str, model_version: str = "") -> HttpInferRequest:
    """A v2 REST inference body (with the Inference-Header-Content-Length header's value, if sent)."""
    header, binary = _split_body(body, header_length)
    document = _load_json(header, header_length is not None)
    parameters = _parameters(document, "the request")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput(f"the request's `id` must be a string, got {_describe(request_id)}")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(
            'the request needs `inputs`, a non-empty list of {"name", "shape", "datatype", "data"} objects; '
            f"got {_describe(inputs)}"
        )
    offset, tensors = 0, []
    for index, entry in enumerate(inputs):
        tensor, offset = _input(index, entry, binary, offset, header_length is not None)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"the body holds {len(binary)} bytes after the JSON part, but the inputs' parameters.binary_data_size "
            f"account for {offset}; each binary input must give its exact byte count"
        )
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidInput(f'`outputs` must be a list of {{"name": ...}} objects, got {_describe(outputs)}')
    names, binary_outputs = [], {}
    for index, wanted in enumerate(outputs):
        if not isinstance(wanted, dict) or not isinstance(wanted.get("name"), str):
            raise InvalidInput(f'outputs[{index}] must be an object with a `name` string, got {_describe(wanted)}')
        where = f"output {wanted['name']!r}"
        flag = _binary_flag(_parameters(wanted, where), "binary_data", where)
        names.append(wanted["name"])
        if flag is not None:
            binary_outputs[wanted["name"]] = flag
    return HttpInferRequest(
        request=InferRequest(model_name, tensors, model_version, request_id, names),
        timeout_s=_timeout_s(parameters),
        binary_outputs=binary_outputs,
        binary_by_default=bool(_binary_flag(parameters, "binary_data_output", "the request")),
    )


def infer_response_body(result: InferResult, parsed: HttpInferRequest) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary outputs follow it (else None)."""
    outputs, chunks = [], []
    for spec, array in result.outputs:
        output = {"name": spec.name, "datatype": spec.datatype, "shape": list(array.shape)}
        if parsed.wants_binary(spec.name):
            raw = to_raw(array)
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            output["data"] = array.ravel().tolist()
        outputs.append(output)
    model = result.model
    document = {"model_name": model.name, "model_version": model.version, "id": result.id, "outputs": outputs}
    header = json.dumps(document, separators=(",", ":")).encode("utf-8")
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
