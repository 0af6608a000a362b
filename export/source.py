"""What gets exported: a registered model with its weights and the meta that travels with them.

The weights come from a training checkpoint (by default the latest run's, RUNS_DIR/NAME/checkpoint.pt,
where `python -m zoo.train NAME` writes it) or, only when asked for explicitly, from a fresh random
initialisation for tests and benchmarks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.errors import ExportError
from zoo.checkpoint import (
    CHECKPOINT_FILENAME,
    CheckpointError,
    file_sha256,
    load_checkpoint,
)
from zoo.models import (
    ModelSpec,
    UnknownModelError,
    get_model,
    get_model_spec,
    list_models,
)
from zoo.preprocessing import Preprocessing

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = "runs"
# A randomly initialised classifier is exported as if it had been trained on MNIST.
RANDOM_WEIGHTS_DATASET = "mnist"
DIGIT_LABELS = [str(digit) for digit in range(10)]


@dataclass
class ExportSource:
    spec: ModelSpec
    model: nn.Module  # in eval mode
    checkpoint_path: Path | None  # None for random weights
    checkpoint_sha256: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    # Classifiers only: how pixels are sized and normalised, and what the 10 outputs mean.
    preprocessing: Preprocessing | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_trained(self) -> bool:
        return self.checkpoint_path is not None

    @property
    def measured_accuracy(self) -> float | None:
        return (self.meta.get("metrics") or {}).get("test_accuracy")

    @property
    def measured_dataset(self) -> str | None:
        return (self.meta.get("metrics") or {}).get("dataset")

    @property
    def temperature(self) -> float | None:
        """The temperature training fitted (the graph's probabilities are softmax(logits / T)); None: none fitted."""
        value = self.meta.get("temperature")
        return float(value) if value is not None else None


def default_checkpoint_path(model_name: str, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    return Path(runs_dir) / model_name / CHECKPOINT_FILENAME


def models_with_checkpoints(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> list[str]:
    return [name for name in list_models() if default_checkpoint_path(name, runs_dir).is_file()]


def model_spec(model_name: str) -> ModelSpec:
    try:
        return get_model_spec(model_name)
    except UnknownModelError as exc:
        raise ExportError(str(exc)) from None


def load_source(
    model_name: str,
    checkpoint_path: str | Path | None = None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    random_weights: bool = False,
    seed: int = 0,
) -> ExportSource:
    spec = model_spec(model_name)
    if random_weights:
        if checkpoint_path is not None:
            raise ExportError("--random-weights and --checkpoint exclude each other: pick one source of weights")
        return _random_source(spec, seed)
    if checkpoint_path is None:
        checkpoint_path = default_checkpoint_path(model_name, runs_dir)
        if not checkpoint_path.is_file():
            raise ExportError(
                f"no checkpoint for {model_name!r} at {checkpoint_path}: train one with "
                f"`python -m zoo.train {model_name}`, pass --checkpoint PATH (or --runs-dir DIR), "
                "or export untrained weights with --random-weights"
            )
        log.info("exporting %s from the latest training run: %s", model_name, checkpoint_path)
    return _checkpoint_source(spec, Path(checkpoint_path))


def _random_source(spec: ModelSpec, seed: int) -> ExportSource:
    torch.manual_seed(seed)
    model = get_model(spec.name).eval()
    log.warning("exporting %s with RANDOM weights (seed %d): for tests and benchmarks only", spec.name, seed)
    if not spec.is_classifier:
        return ExportSource(spec, model, None, None)
    return ExportSource(
        spec,
        model,
        None,
        None,
        preprocessing=Preprocessing.for_model(spec.input_size, RANDOM_WEIGHTS_DATASET),
        labels=list(DIGIT_LABELS),
    )


def _checkpoint_source(spec: ModelSpec, checkpoint_path: Path) -> ExportSource:
    try:
        checkpoint = load_checkpoint(checkpoint_path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if checkpoint.model_name != spec.name:
        raise ExportError(
            f"checkpoint {checkpoint_path} holds a {checkpoint.model_name!r} model, not {spec.name!r}: "
            f"run `python -m export {checkpoint.model_name} --checkpoint {checkpoint_path}`, "
            f"or pass a checkpoint of {spec.name!r}"
        )
    try:
        model = checkpoint.build_model()
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    source = ExportSource(spec, model, checkpoint_path, file_sha256(checkpoint_path), dict(checkpoint.meta))
    if spec.is_classifier:
        source.preprocessing, source.labels = _classifier_meta(checkpoint_path, checkpoint.meta)
        _check_calibration(source)
    return source


def _check_calibration(source: ExportSource) -> None:
    temperature = source.temperature
    if temperature is None:
        log.warning(
            "checkpoint %s has no calibration (no temperature, no verdict thresholds): its probabilities are the "
            "uncalibrated softmax and the server can only refuse blank inputs. Retrain with `python -m zoo.train %s`.",
            source.checkpoint_path, source.name,
        )
    elif not (temperature > 0 and temperature < float("inf")):
        raise ExportError(
            f"checkpoint {source.checkpoint_path} records temperature {temperature!r}; a temperature must be a "
            f"positive number: retrain with `python -m zoo.train {source.name}`"
        )


def _classifier_meta(checkpoint_path: Path, meta: dict[str, Any]) -> tuple[Preprocessing, list[str]]:
    """The preprocessing and labels a classifier was trained with: the graph bakes them in."""
    try:
        preprocessing = Preprocessing.from_meta(meta["preprocessing"])
        labels = [str(label) for label in meta["labels"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ExportError(
            f"checkpoint {checkpoint_path} lacks the classifier meta export needs "
            f"(preprocessing and labels; problem: {exc!r}): re-train with `python -m zoo.train`"
        ) from None
    if not labels:
        raise ExportError(f"checkpoint {checkpoint_path} has an empty label list: re-train with `python -m zoo.train`")
    return preprocessing, labels
