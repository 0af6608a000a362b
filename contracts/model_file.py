"""An ONNX model file as it is served: loaded into a session, its card and graph checked before it serves.

A model's name, labels and input format come from the model card `export` writes into the file's
metadata (contracts.model_card); a third-party ONNX file without a card is served under its file stem,
through the KServe v2 API only, with its own input and output names and datatypes. Every problem
with a file (missing, truncated, not ONNX, a broken card, two models with one name) is found here,
before the file serves a request, and reported as a ModelLoadError naming the file and the fix.
Which versions serve, and when they are swapped, is serve.core.lifecycle's business; the
repository's folders are read by contracts.repository_layout.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from contracts.model_card import ModelCard, ModelCardError
from contracts.sessions import RuntimeOptions, SessionInfo, create_session, log_provider

log = logging.getLogger(__name__)

MODEL_SUFFIX = ".onnx"
# The version of a model given as a file (--model PATH.onnx) rather than in a repository.
MODEL_VERSION = "1"
UNKNOWN_TASK = "unknown"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# ONNX Runtime's type names -> (KServe v2 datatype, numpy dtype).
_TYPES: dict[str, tuple[str, np.dtype]] = {
    "tensor(bool)": ("BOOL", np.dtype(np.bool_)),
    "tensor(uint8)": ("UINT8", np.dtype(np.uint8)),
    "tensor(uint16)": ("UINT16", np.dtype(np.uint16)),
    "tensor(uint32)": ("UINT32", np.dtype(np.uint32)),
    "tensor(uint64)": ("UINT64", np.dtype(np.uint64)),
    "tensor(int8)": ("INT8", np.dtype(np.int8)),
    "tensor(int16)": ("INT16", np.dtype(np.int16)),
    "tensor(int32)": ("INT32", np.dtype(np.int32)),
    "tensor(int64)": ("INT64", np.dtype(np.int64)),
    "tensor(float16)": ("FP16", np.dtype(np.float16)),
    "tensor(float)": ("FP32", np.dtype(np.float32)),
    "tensor(double)": ("FP64", np.dtype(np.float64)),
    "tensor(string)": ("BYTES", np.dtype(object)),
}


# What ONNX Runtime raises for a file it cannot load (its exception classes derive from Exception only).
_ORT_LOAD_ERRORS = tuple(
    getattr(_ort_state, name)
    for name in ("Fail", "InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NotImplemented", "InvalidArgument",
                 "RuntimeException")
    if hasattr(_ort_state, name)
)


class ModelLoadError(Exception):
    """A model file cannot be served; the message names the file and what to do."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # KServe v2 name: "FP32", "INT64", ...
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    # The graph's name of each dynamic dimension ("N", "batch", ...; None when unnamed). Inputs whose
    # dimensions share a name must agree on their size, or the graph fails inside (a broadcast).
    dim_names: tuple[str | None, ...] = ()

    @classmethod
    def from_node(cls, node: ort.NodeArg, model_path: Path) -> "TensorSpec":
        if node.type not in _TYPES:
            raise ModelLoadError(
                f"{model_path}: tensor {node.name!r} has type {node.type}, which this server cannot carry "
                f"(supported: {', '.join(sorted(_TYPES))})"
            )
        datatype, dtype = _TYPES[node.type]
        dims = node.shape or []
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
        dim_names = tuple(d if isinstance(d, str) and d else None for d in dims)
        return cls(node.name, datatype, dtype, shape, dim_names)


@dataclass
class Model:
    name: str
    path: Path
    file_sha256: str
    card: ModelCard | None
    session: ort.InferenceSession
    provider: str
    provider_note: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Every output's leading dimension is the input's batch dimension (the same symbol, when the
    # graph names it): only then can a batch's outputs be cut back into each request's rows.
    outputs_follow_batch: bool = True
    # The repository's version folder the file came from (MODEL_VERSION for a file given alone).
    version: str = MODEL_VERSION

    @property
    def task(self) -> str:
        return self.card.task if self.card else UNKNOWN_TASK

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels) if self.card else []

    @property
    def classifies_images(self) -> bool:
        """Usable through the digits API: a classifier whose card says how its pixels look."""
        return self.card is not None and self.card.is_classifier

    @property
    def batchable(self) -> bool:
        """One input with a dynamic leading (batch) dimension and fixed others: requests can be stacked."""
        if len(self.inputs) != 1:
            return False
        shape = self.inputs[0].shape
        return (
            len(shape) >= 1 and shape[0] == -1 and all(d > 0 for d in shape[1:])
            and self.inputs[0].datatype != "BYTES" and self.outputs_follow_batch
        )

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def output_index(self, name: str) -> int:
        for index, spec in enumerate(self.outputs):
            if spec.name == name:
                return index
        raise KeyError(name)

    def run(self, feeds: dict[str, np.ndarray], run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
        """Every output, in `self.outputs` order (blocking: call from the inference thread)."""
        return self.session.run(self._output_names, feeds, run_options)

    def run_batch(self, inputs: np.ndarray) -> list[np.ndarray]:
        """The batcher's call: the single input of a batchable model."""
        return self.session.run(self._output_names, {self._input_name: inputs})

    def __post_init__(self) -> None:
        self._output_names = [spec.name for spec in self.outputs]
        self._input_name = self.inputs[0].name if self.inputs else ""


def find_model_files(paths: Iterable[Path]) -> list[Path]:
    """Files given directly, and the *.onnx files of folders given, in order."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix == MODEL_SUFFIX and p.is_file())
            if not found:
                raise ModelLoadError(f"model folder {path} holds no {MODEL_SUFFIX} files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise ModelLoadError(f"model file not found: {path} (pass --model PATH.onnx or a folder of .onnx files)")
    if not files:
        raise ModelLoadError("no models given: pass --model PATH.onnx (repeatable) or a folder of .onnx files")
    return files


# What torch.save writes (a zip archive, or a bare pickle in the legacy format), and its usual suffixes.
_CHECKPOINT_SIGNATURES = (b"PK\x03\x04", b"\x80\x02", b"\x80\x04", b"\x80\x05")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def check_model_file(path: Path) -> None:
    """The checks that need no ONNX Runtime session: the file exists, is not empty and is not a checkpoint.

    Cheap enough to run before a server binds its ports, so that a mistyped path or a checkpoint given
    as the model is reported as such, not hidden behind whatever binding then fails on."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (pass --model PATH.onnx or a folder of .onnx files)")
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise ModelLoadError(f"model file {path} is empty: re-export it (python -m export NAME -o {path})")
    if path.suffix in _CHECKPOINT_SUFFIXES or head.startswith(_CHECKPOINT_SIGNATURES):
        raise ModelLoadError(
            f"{path} is a PyTorch checkpoint, not an ONNX model: export it first (python -m export NAME writes "
            "models/NAME.onnx) and serve the .onnx file"
        )


def check_model_paths(paths: Iterable[Path]) -> None:
    """check_model_file on every file that `paths` (files and folders) name; ModelLoadError on the first bad one."""
    for path in find_model_files(paths):
        check_model_file(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def load_model(path: Path, options: RuntimeOptions, name: str | None = None, version: str = MODEL_VERSION) -> Model:
    """The model in `path`. `name`: the repository folder it is served from, which its card must name."""
    path = Path(path)
    check_model_file(path)
    try:
        info: SessionInfo = create_session(path, options, model_name=str(path))
    except _ORT_LOAD_ERRORS as exc:
        raise ModelLoadError(
            f"model file {path} is not a loadable ONNX model (truncated, corrupt or not ONNX?): {_first_line(exc)}"
        ) from exc
    session = info.session
    try:
        card = ModelCard.from_metadata_props(session.get_modelmeta().custom_metadata_map)
    except ModelCardError as exc:
        raise ModelLoadError(f"model file {path}: {exc}") from exc
    input_nodes, output_nodes = session.get_inputs(), session.get_outputs()
    inputs = [TensorSpec.from_node(node, path) for node in input_nodes]
    outputs = [TensorSpec.from_node(node, path) for node in output_nodes]
    if name is not None and card is not None and card.model_name != name:
        raise ModelLoadError(
            f"model file {path}: its card names the model {card.model_name!r}, but it is in the repository folder "
            f"{name!r}; put it under {card.model_name}/<version>/ or re-export it as {name!r}"
        )
    name = name or (card.model_name if card else path.stem)
    if not _NAME.match(name):
        raise ModelLoadError(
            f"model file {path}: model name {name!r} is not usable (letters, digits, '.', '_' and '-' only); rename the file"
        )
    if card is not None:
        _check_card(card, inputs, outputs, path)
    log_provider(name, info)
    return Model(
        name=name,
        path=path,
        file_sha256=_sha256(path),
        card=card,
        session=session,
        provider=info.provider,
        provider_note=info.provider_note,
        inputs=inputs,
        outputs=outputs,
        outputs_follow_batch=_outputs_follow_batch(input_nodes, output_nodes),
        version=version,
    )


def _outputs_follow_batch(input_nodes: Sequence[ort.NodeArg], output_nodes: Sequence[ort.NodeArg]) -> bool:
    if len(input_nodes) != 1 or not input_nodes[0].shape:
        return False
    batch = input_nodes[0].shape[0]
    for node in output_nodes:
        if not node.shape or isinstance(node.shape[0], int):
            return False  # a fixed leading size cannot be a batch of any size
        if isinstance(batch, str) and isinstance(node.shape[0], str) and node.shape[0] != batch:
            return False  # another symbol: an independent size, not the batch
    return True


def _check_card(card: ModelCard, inputs: list[TensorSpec], outputs: list[TensorSpec], path: Path) -> None:
    """The card and the graph must agree, or the server would feed the graph the wrong thing."""
    input_names = [spec.name for spec in inputs]
    output_names = [spec.name for spec in outputs]
    if input_names != [card.input_name]:
        raise ModelLoadError(
            f"model file {path}: its card names the input {card.input_name!r} but the graph's inputs are {input_names}; re-export it"
        )
    missing = [name for name in card.output_names if name not in output_names]
    if missing:
        raise ModelLoadError(f"model file {path}: its card names outputs {missing} that the graph lacks; re-export it")
    spec = inputs[0]
    if spec.datatype != "FP32" or len(spec.shape) != 4:
        raise ModelLoadError(
            f"model file {path}: input {spec.name!r} is {spec.datatype} {list(spec.shape)}, expected FP32 N x 1 x H x W"
        )
    if card.is_classifier:
        if "probabilities" not in output_names:
            raise ModelLoadError(f"model file {path}: a classifier card needs a 'probabilities' output; re-export it")
        if card.input_size and list(spec.shape[2:]) != list(card.input_size):
            raise ModelLoadError(
                f"model file {path}: card input size {card.input_size} disagrees with the graph's {list(spec.shape[2:])}"
            )
