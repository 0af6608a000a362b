"""The ONNX files a benchmark measures, made by `export`'s own functions from the model's weights.

Weights: the latest training run's checkpoint (runs/NAME/checkpoint.pt) when there is one, else a
seeded random initialisation; which one is recorded with every result (speed does not depend on
the weights, accuracy does). Files: the FP32 graph with its model card (what `python -m export`
writes), ONNX Runtime's offline-optimised graph (`--optimize`) and the static INT8 QDQ model
(`--quantize int8`, calibrated on MNIST training images). The 10,000-image parity proof of a real
export is skipped here to keep the benchmark short; a small batch is still compared with PyTorch,
so a benchmark never times a graph that computes something else.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from contracts.digit_format import pixels_from_uint8
from export.card import attach_card, build_card
from export.graphs import export_graph, input_name
from export.onnx_export import DEFAULT_OPSET, export_onnx
from export.optimize import save_optimized
from export.quantize import quantize_int8
from export.source import default_checkpoint_path, load_source
from zoo.data import DataUnavailableError, load_split

log = logging.getLogger(__name__)

FP32, OPTIMIZED, INT8 = "fp32", "optimized", "int8"
VARIANTS = (FP32, OPTIMIZED, INT8)
CALIBRATION_DATASET = "mnist"
# Largest difference of the probabilities allowed between PyTorch and an FP32 graph.
FP32_TOLERANCE = 1e-4


class BenchSetupError(RuntimeError):
    """The benchmark cannot prepare what it measures; the message says what to do."""


@dataclass
class BenchModel:
    name: str
    weights: str  # "trained" or "random"
    weights_detail: str  # the checkpoint path, or the seed
    torch_module: torch.nn.Module  # the exported computation in PyTorch: pixels -> (logits, probabilities)
    input_name: str
    input_size: tuple[int, int]
    files: dict[str, Path] = field(default_factory=dict)  # variant -> .onnx file
    notes: list[str] = field(default_factory=list)


def weights_source(name: str, runs_dir: Path) -> tuple[bool, Path]:
    """Whether a trained checkpoint exists for `name`, and where it is (or would be)."""
    path = default_checkpoint_path(name, runs_dir)
    return path.is_file(), path


def calibration_pixels(data_dir: Path | None, count: int, input_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """`count` MNIST training digits chosen at random (never test digits), as graph inputs."""
    try:
        train = load_split(CALIBRATION_DATASET, train=True, data_dir=data_dir, download=False)
    except DataUnavailableError as exc:
        raise BenchSetupError(
            f"INT8 calibration needs the MNIST training images: {exc}. Point --data-dir (or ZOO_DATA_DIR) at the "
            "folder holding MNIST/raw, or leave int8 out with --variants fp32,optimized"
        ) from None
    count = min(count, len(train))
    chosen = np.sort(np.random.default_rng(seed).choice(len(train), size=count, replace=False))
    return pixels_from_uint8(train.images.numpy()[chosen], input_size)


def prepare_model(
    name: str,
    out_dir: Path,
    runs_dir: Path,
    data_dir: Path | None,
    variants: tuple[str, ...] = VARIANTS,
    calibration_images: int = 1000,
    check_pixels: np.ndarray | None = None,
    seed: int = 0,
) -> BenchModel:
    """Export `name` into `out_dir` as the requested variants, each checked against PyTorch on `check_pixels`."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise BenchSetupError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    trained, checkpoint = weights_source(name, runs_dir)
    source = load_source(name, checkpoint if trained else None, runs_dir, random_weights=not trained, seed=seed)
    if not source.spec.is_classifier:
        raise BenchSetupError(f"{name!r} is a feature-map model; the benchmarks measure the digit classifiers")
    input_size = tuple(source.preprocessing.input_size)
    model = BenchModel(
        name=name,
        weights="trained" if trained else "random",
        weights_detail=str(checkpoint) if trained else f"random initialisation, seed {seed} (no {checkpoint})",
        torch_module=export_graph(source),
        input_name=input_name(source),
        input_size=input_size,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = out_dir / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_onnx(source, DEFAULT_OPSET)
    attach_card(graph, build_card(source, DEFAULT_OPSET), source.spec.description)
    onnx.save_model(graph, fp32_path)
    model.files[FP32] = fp32_path
    if OPTIMIZED in variants:
        optimized_path = out_dir / f"{name}.opt.onnx"
        save_optimized(fp32_path, optimized_path)
        model.files[OPTIMIZED] = optimized_path
    if INT8 in variants:
        int8_path = out_dir / f"{name}.int8.onnx"
        quantize_int8(fp32_path, int8_path, model.input_name, calibration_pixels(data_dir, calibration_images, input_size, seed))
        model.files[INT8] = int8_path
    if check_pixels is not None:
        _check_against_torch(model, check_pixels)
    if FP32 not in variants:
        del model.files[FP32]
    return model


def _check_against_torch(model: BenchModel, pixels: np.ndarray) -> None:
    with torch.inference_mode():
        expected = model.torch_module(torch.from_numpy(pixels))[1].numpy()
    for variant, path in model.files.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["probabilities"], {model.input_name: pixels})[0]
        if variant == INT8:
            agreement = float((got.argmax(1) == expected.argmax(1)).mean())
            model.notes.append(
                f"{model.name} int8: top-1 agreement with FP32 PyTorch {100 * agreement:.1f}% on {len(pixels)} test digits"
            )
            continue
        difference = float(np.abs(got - expected).max())
        if difference > FP32_TOLERANCE:
            raise BenchSetupError(
                f"{path.name} differs from PyTorch by {difference:.2e} (allowed {FP32_TOLERANCE:g}) on the benchmark's "
                "digits: the export is broken, and timing it would mean nothing; run `python -m export` to see its parity"
            )
