"""The model card an exported file carries: built from the checkpoint's meta, written into the ONNX file.

`contracts.model_card.ModelCard` is the schema (the server reads it back from `metadata_props`); this
module fills it in and also sets the fields that tools such as Netron show: producer, doc strings
of the model and of each input and output.
"""
from __future__ import annotations

import onnx
import onnxruntime
import onnxscript
import torch

from contracts.model_card import CLASSIFICATION, FEATURE_MAP, ModelCard
from export.graphs import input_name, output_names
from export.source import ExportSource

PRODUCER_NAME = "digit-zoo export (torch.onnx dynamo exporter)"


def build_card(source: ExportSource, opset: int) -> ModelCard:
    versions = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    # The libraries the weights were trained with, kept apart from the ones that exported them.
    for library, version in (source.meta.get("versions") or {}).items():
        versions[f"trained_with_{library}"] = str(version)
    card = ModelCard(
        model_name=source.name,
        task=CLASSIFICATION if source.spec.is_classifier else FEATURE_MAP,
        input_name=input_name(source),
        output_names=output_names(source),
        input_size=None,
        checkpoint_sha256=source.checkpoint_sha256,
        recipe=dict(source.meta.get("recipe") or {}),
        versions=versions,
        opset=opset,
    )
    if source.spec.is_classifier:
        preprocessing = source.preprocessing
        card.input_size = list(preprocessing.input_size)
        card.labels = list(source.labels)
        card.mean = [preprocessing.mean]
        card.std = [preprocessing.std]
        card.digit_size = preprocessing.digit_size
        card.test_accuracy = source.measured_accuracy
        card.dataset = source.measured_dataset
        card.temperature = source.temperature
        card.calibration = dict(source.meta.get("calibration") or {})
        card.verdict_thresholds = dict(source.meta.get("verdict_thresholds") or {})
    return card


def describe(card: ModelCard, description: str) -> str:
    if card.is_classifier:
        height, width = card.input_size
        padding = (
            f"; a {card.digit_size}x{card.digit_size} digit padded by {card.digit_padding} pixels on each side"
            if card.digit_padding
            else ""
        )
        return (
            f"{card.model_name}: {description}. Input {card.input_name!r}: float32 N x 1 x {height} x {width}, "
            f"pixel values in [0, 1], ink bright on a dark background (MNIST's convention){padding}. The graph normalises it "
            f"itself: (pixels - {card.mean[0]}) / {card.std[0]}. Outputs {card.output_names[0]!r} and "
            f"{card.output_names[1]!r}: N x {len(card.labels)}, for the labels {card.labels}."
        )
    return (
        f"{card.model_name}: {description}. Input {card.input_name!r}: float32 N x 1 x H x W (any H, W the "
        f"kernel fits in). Output {card.output_names[0]!r}: the cross-correlation, N x 1 x H' x W'."
    )


def _tensor_docs(card: ModelCard) -> dict[str, str]:
    if card.is_classifier:
        return {
            card.input_name: "float32 N x 1 x H x W, pixel values in [0, 1], normalised inside the graph",
            card.output_names[0]: "float32 N x classes, unnormalised scores (argmax is the prediction)",
            card.output_names[1]: (
                "float32 N x classes, softmax of the logits"
                + (f" divided by the temperature {card.temperature:.4g} (calibrated)" if card.temperature else "")
            ),
        }
    return {card.input_name: "float32 N x 1 x H x W image", card.output_names[0]: "float32 N x 1 x H' x W' feature map"}


def attach_card(model: onnx.ModelProto, card: ModelCard, description: str) -> onnx.ModelProto:
    """Write the card into the file (replacing any previous one) with readable doc strings."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, card.to_metadata_props())
    model.producer_name = PRODUCER_NAME
    model.producer_version = torch.__version__
    model.doc_string = describe(card, description)
    model.graph.name = card.model_name
    docs = _tensor_docs(card)
    for value in [*model.graph.input, *model.graph.output]:
        value.doc_string = docs.get(value.name, value.doc_string)
    return model


def read_card(model: onnx.ModelProto) -> ModelCard | None:
    return ModelCard.from_metadata_props({prop.key: prop.value for prop in model.metadata_props})
