"""The model card written into the file round-trips, and serve reads it the way it will in production."""
from __future__ import annotations

import dataclasses

import onnx
import onnxruntime as ort
import pytest
import torch

from contracts.model_card import ModelCard
from export.card import PRODUCER_NAME, attach_card, build_card, read_card
from export.onnx_export import DEFAULT_OPSET, export_onnx
from export.source import load_source
from zoo.checkpoint import file_sha256
from zoo.models import get_model


@pytest.mark.parametrize("name", ["lenet", "lenet5-32", "conv2d"])
def test_card_round_trips_through_the_file(name, random_export):
    source, path = random_export(name)
    expected = build_card(source, DEFAULT_OPSET)
    model = onnx.load(path)
    assert read_card(model) == expected
    # The server reads the card through ONNX Runtime, without onnx or torch.
    served = ModelCard.from_metadata_props(ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map)
    assert served == expected
    assert model.producer_name == PRODUCER_NAME
    assert model.graph.name == name


def test_classifier_card_says_how_to_feed_the_model(random_export):
    source, path = random_export("lenet5-32")
    card = read_card(onnx.load(path))
    assert card.is_classifier
    assert (card.input_name, card.output_names) == ("pixels", ["logits", "probabilities"])
    assert card.input_size == [32, 32] and card.digit_padding == 2
    assert card.labels == [str(digit) for digit in range(10)]
    assert card.value_range == [0.0, 1.0]
    assert (card.mean, card.std) == ([0.1307], [0.3081])
    assert card.opset == DEFAULT_OPSET
    assert card.versions["torch"] == torch.__version__ and card.versions["onnx"] == onnx.__version__
    # Random weights: nothing measured, no checkpoint.
    assert card.test_accuracy is None and card.checkpoint_sha256 is None
    doc = onnx.load(path).doc_string
    assert "(pixels - 0.1307) / 0.3081" in doc and "32 x 32" in doc


def test_feature_map_card(random_export):
    card = read_card(onnx.load(random_export("edge")[1]))
    assert not card.is_classifier
    assert (card.input_name, card.output_names, card.input_size) == ("image", ["feature_map"], None)
    assert card.labels == [] and card.mean == []


def test_card_carries_the_checkpoint_facts(tmp_path, checkpoint_factory):
    torch.manual_seed(0)
    checkpoint = checkpoint_factory(get_model("lenet-modern"), "lenet-modern", tmp_path / "ckpt.pt", test_accuracy=0.987)
    source = load_source("lenet-modern", checkpoint_path=checkpoint)
    model = export_onnx(source)
    attach_card(model, build_card(source, DEFAULT_OPSET), source.spec.description)
    card = read_card(model)
    assert card.checkpoint_sha256 == file_sha256(checkpoint)
    assert card.test_accuracy == 0.987 and card.dataset == "mnist"
    assert card.recipe == {"made_by": "tests/export"}
    assert card.versions["trained_with_torch"] == torch.__version__


def test_attaching_a_card_replaces_the_old_one(random_export):
    source, path = random_export("lenet")
    model = onnx.load(path)
    card = dataclasses.replace(build_card(source, DEFAULT_OPSET), test_accuracy=0.5)
    attach_card(model, card, "again")
    keys = [prop.key for prop in model.metadata_props]
    assert len(keys) == len(set(keys))
    assert read_card(model).test_accuracy == 0.5
