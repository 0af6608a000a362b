"""The ONNX model card: what `export` writes into an .onnx file's metadata and `serve` reads back.

This is the one definition of that metadata. It lives here, on the consuming side, so the server
never imports anything upstream of the .onnx file (and never torch); `export` writes through it.
Every value is a string in ONNX `metadata_props`: plain text for names, JSON for everything else,
so a person can read the card with Netron or `onnx.load(...).metadata_props`.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Mapping

from contracts.digit_format import DIGIT_SIZE, VALUE_RANGE, padding_for

FORMAT_KEY = "digit_zoo.format"
FORMAT_VERSION = "1"

CLASSIFICATION = "classification"
FEATURE_MAP = "feature-map"

# Input and output names of exported graphs: they say what the tensors hold.
PIXELS_INPUT = "pixels"  # float32 N x 1 x H x W, values in [0, 1], ink bright on dark (as MNIST)
LOGITS_OUTPUT = "logits"
PROBABILITIES_OUTPUT = "probabilities"
IMAGE_INPUT = "image"  # feature-map models: float32 N x 1 x H x W, any H and W
FEATURE_MAP_OUTPUT = "feature_map"


class ModelCardError(ValueError):
    """The model file claims to carry a card but a field is missing or malformed."""


@dataclass
class ModelCard:
    model_name: str
    task: str
    input_name: str
    output_names: list[str]
    # Fixed (height, width) of the input, or None when height and width are dynamic.
    input_size: list[int] | None
    labels: list[str] = field(default_factory=list)
    value_range: list[float] = field(default_factory=lambda: list(VALUE_RANGE))
    # Normalisation applied inside the graph: (pixels - mean) / std. Recorded for people and tools.
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    # Size of the MNIST-format digit before it is padded to input_size (28 padded by 2 gives 32).
    digit_size: int = DIGIT_SIZE
    test_accuracy: float | None = None
    dataset: str | None = None
    checkpoint_sha256: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    opset: int | None = None
    # The model this file is a variant of ("lenet" for lenet.int8 and lenet.opt): served beside it,
    # never chosen as the digits API's default in its place.
    variant_of: str | None = None
    # The temperature the graph's probabilities are computed with (softmax(logits / T)), fitted on
    # images held out from training; None: uncalibrated probabilities (softmax of the logits).
    temperature: float | None = None
    # How the temperature was fitted and what it changed: the held-out split, ECE before and after.
    calibration: dict[str, Any] = field(default_factory=dict)
    # contracts.verdicts.VerdictThresholds, measured at training time; empty: the defaults.
    verdict_thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION

    @property
    def digit_padding(self) -> int:
        """Background pixels added on each side of the 28x28 digit to reach the model's input size."""
        if not self.input_size:
            return 0
        return padding_for(self.input_size, self.digit_size)[0]

    def to_metadata_props(self) -> dict[str, str]:
        props = {FORMAT_KEY: FORMAT_VERSION}
        for key, value in asdict(self).items():
            props[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return props

    @classmethod
    def from_metadata_props(cls, props: Mapping[str, str]) -> "ModelCard | None":
        """The card of a file, or None for a third-party model that carries none."""
        if FORMAT_KEY not in props:
            return None
        if props[FORMAT_KEY] != FORMAT_VERSION:
            raise ModelCardError(
                f"model card format {props[FORMAT_KEY]!r} is not supported (expected {FORMAT_VERSION!r}); "
                "re-export the model with this version of `python -m export`"
            )
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = props.get(spec.name)
            if raw is None:
                if spec.default is MISSING and spec.default_factory is MISSING:
                    raise ModelCardError(f"model card is missing the required field {spec.name!r}")
                continue
            if spec.type in ("str", "str | None"):
                # to_metadata_props writes strings as they are and None as JSON null.
                values[spec.name] = None if spec.type == "str | None" and raw == "null" else raw
                continue
            try:
                values[spec.name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ModelCardError(f"model card field {spec.name!r} is not valid JSON: {raw[:80]!r}") from exc
        card = cls(**values)
        if card.task not in (CLASSIFICATION, FEATURE_MAP):
            raise ModelCardError(f"model card task {card.task!r} is not one of {CLASSIFICATION!r}, {FEATURE_MAP!r}")
        return card
