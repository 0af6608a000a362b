"""The model registry: names, specs, builders, overrides and the error for an unknown name."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.models import (
    CLASSIFICATION,
    FEATURE_MAP,
    UnknownModelError,
    get_model,
    get_model_spec,
    list_models,
    register_model,
)

EXPECTED_MODELS = ["conv2d", "edge", "lenet", "lenet-modern", "lenet5-32"]
CLASSIFIERS = ["lenet", "lenet-modern", "lenet5-32"]
FEATURE_MAP_MODELS = ["conv2d", "edge"]


def test_every_model_is_registered_once_and_sorted():
    assert list_models() == EXPECTED_MODELS


def test_top_level_package_reexports_the_registry():
    import zoo

    assert zoo.list_models() == EXPECTED_MODELS
    assert zoo.get_model_spec("lenet") is get_model_spec("lenet")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_specs(name):
    spec = get_model_spec(name)
    assert spec.name == name and spec.task == CLASSIFICATION and spec.is_classifier
    assert spec.description


@pytest.mark.parametrize("name", FEATURE_MAP_MODELS)
def test_feature_map_specs_and_outputs_at_any_size(name):
    spec = get_model_spec(name)
    assert spec.task == FEATURE_MAP and not spec.is_classifier and spec.input_size is None
    model = get_model(name)
    for height, width in [(6, 8), (11, 5), (1, 2)]:
        assert model(torch.rand(2, 1, height, width)).shape == (2, 1, height, width - 1)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_the_registered_input_size_is_the_one_the_model_accepts(name):
    # Training pads digits and export fixes the graph's input to this size: a wrong entry would
    # feed every 28x28 digit to a model that cannot take it.
    height, width = get_model_spec(name).input_size
    model = get_model(name).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, height, width)).shape == (2, 10)
        for other in ((height - 4, width - 4), (height + 4, width + 4)):
            with pytest.raises(RuntimeError):
                model(torch.rand(2, 1, *other))


def test_unknown_model_lists_the_known_names():
    for lookup in (get_model, get_model_spec):
        with pytest.raises(UnknownModelError) as error:
            lookup("resnet50")
        message = str(error.value)
        assert "resnet50" in message
        for name in EXPECTED_MODELS:
            assert name in message
    assert issubclass(UnknownModelError, ValueError)  # CLIs that catch ValueError still report it


def test_every_call_builds_a_fresh_model():
    torch.manual_seed(0)
    first, second = get_model("lenet"), get_model("lenet")
    assert first is not second
    assert not torch.equal(first.net[0].weight, second.net[0].weight)


def test_config_overrides_the_registered_defaults():
    model = get_model("lenet", num_classes=5)
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 5)
    modern = get_model("lenet-modern")
    assert isinstance(modern.net[1], nn.ReLU) and isinstance(modern.net[2], nn.MaxPool2d)
    # An override on top of a variant's defaults wins, the rest of the variant stays.
    sigmoid_modern = get_model("lenet-modern", activation="sigmoid")
    assert isinstance(sigmoid_modern.net[1], nn.Sigmoid) and isinstance(sigmoid_modern.net[2], nn.MaxPool2d)
    assert get_model("edge", kernel_size=(2, 2))(torch.rand(1, 1, 6, 8)).shape == (1, 1, 5, 7)


def test_lenet_variants_differ_as_described():
    lenet = get_model("lenet")
    assert isinstance(lenet.net[1], nn.Sigmoid) and isinstance(lenet.net[2], nn.AvgPool2d)
    assert lenet.net[0].padding == (2, 2)
    lenet32 = get_model("lenet5-32")
    assert lenet32.net[0].out_channels == 20 and lenet32.net[0].padding == (0, 0)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="activation must be one of"):
        get_model("lenet", activation="tanh")
    with pytest.raises(ValueError, match="pooling must be one of"):
        get_model("lenet", pooling="min")
    with pytest.raises(ValueError, match="init must be"):
        get_model("lenet", init="orthogonal")
    with pytest.raises(TypeError, match="unexpected keyword argument 'dropout'"):
        get_model("lenet", dropout=0.5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        get_model("lenet", input_size=8)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("lenet", task=CLASSIFICATION, input_size=(28, 28), description="duplicate")(lambda: None)
    assert list_models() == EXPECTED_MODELS
