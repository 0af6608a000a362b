"""The served table, the digits API's default model, the index and the control modes' rules, with fakes."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from contracts.errors import InvalidInput, ModelNotFound
from serve.core.control import LifecycleOptions
from serve.core.digit_classifiers import DigitClassifiers
from serve.core.errors import NotAllowed
from serve.core.model_index import LOADING, READY, UNAVAILABLE, ModelIndex, ModelStates
from serve.core.served_models import ServedModels


@dataclass
class FakeCard:
    variant_of: str | None = None


@dataclass
class FakeModel:
    name: str
    version: str = "1"
    classifies_images: bool = True
    card: object | None = field(default_factory=lambda: FakeCard())
    task: str = "classification"


@dataclass
class FakeVersion:
    model: FakeModel
    statistics: str = ""


def served(name: str, version: str = "1", **model) -> FakeVersion:
    return FakeVersion(FakeModel(name, version, **model), statistics=f"{name} v{version}")


def table_of(*versions: FakeVersion, states: ModelStates | None = None) -> ServedModels:
    table = ServedModels((states or ModelStates()).explain_not_served)
    by_name: dict[str, dict[str, FakeVersion]] = {}
    for version in versions:
        by_name.setdefault(version.model.name, {})[version.model.version] = version
    for name, named in by_name.items():
        table.swap(name, named)
    return table


# The served table


def test_a_call_gets_the_newest_version_or_the_one_it_names():
    table = table_of(served("digits", "2"), served("digits", "10"), served("digits", "9"))
    assert table.served("digits").model.version == "10"  # by number, not by text
    assert table.served("digits", "9").model.version == "9"
    assert table.version_names("digits") == ["2", "9", "10"]
    with pytest.raises(ModelNotFound, match=r"no version '3' being served; it serves version\(s\) 2, 9, 10"):
        table.served("digits", "3")


def test_a_swap_replaces_a_models_versions_whole_and_an_empty_swap_stops_serving_it():
    old = served("digits", "1")
    table = table_of(old, served("other"))
    looked_up = table.current("digits")
    table.swap("digits", {"2": served("digits", "2")})
    assert looked_up == {"1": old}, "a lookup made before the swap keeps what it saw"
    assert table.version_names("digits") == ["2"]
    table.swap("digits", {})
    assert table.names() == ["other"]
    with pytest.raises(ModelNotFound, match="unknown model 'digits'; this server has: other"):
        table.served("digits")


def test_a_model_not_served_is_explained_by_its_states():
    states = ModelStates()
    states.set("digits", "1", UNAVAILABLE, "not a loadable ONNX model")
    table = table_of(served("other"), states=states)
    with pytest.raises(ModelNotFound) as missing:
        table.served("digits")
    assert str(missing.value) == (
        "model 'digits' is not being served (version 1: UNAVAILABLE (not a loadable ONNX model)); "
        "this server serves: other"
    )


# The digits API's default model


def test_the_default_classifier_is_the_first_classifier_served_unless_one_is_declared():
    table = table_of(served("thirdparty", classifies_images=False, card=None), served("lenet.int8"), served("lenet"))
    assert DigitClassifiers(table).classifier("").model.name == "lenet.int8"
    assert DigitClassifiers(table, default_model="lenet").classifier("").model.name == "lenet"
    # A card that declares its model a variant gives way to the model it is a variant of.
    table = table_of(served("lenet.int8", card=FakeCard(variant_of="lenet")), served("lenet"))
    assert DigitClassifiers(table).classifier("").model.name == "lenet"


def test_a_declared_default_that_is_not_served_is_not_found_and_one_that_is_no_classifier_is_refused():
    table = table_of(served("lenet"), served("edges", classifies_images=False, task="feature-map"))
    with pytest.raises(ModelNotFound, match="unknown model 'gone'"):
        DigitClassifiers(table, default_model="gone").classifier("")
    with pytest.raises(InvalidInput, match="model 'edges' is a feature-map model, not a digit classifier"):
        DigitClassifiers(table, default_model="edges").classifier("")


def test_a_version_named_without_a_model_is_a_version_of_the_default():
    table = table_of(served("lenet", "1"), served("lenet", "2"))
    classifiers = DigitClassifiers(table)
    assert classifiers.classifier("", "1").model.version == "1"
    assert classifiers.classifier("").model.version == "2"
    with pytest.raises(ModelNotFound):
        classifiers.classifier("", "3")


def test_no_classifier_at_all_says_where_the_models_are_served():
    table = table_of(served("thirdparty", classifies_images=False, card=None))
    with pytest.raises(ModelNotFound, match="no digit classifier with a model card; use the KServe v2 API .*: thirdparty"):
        DigitClassifiers(table).classifier("")
    with pytest.raises(InvalidInput, match="'thirdparty' is a third-party model without a model card"):
        DigitClassifiers(table).classifier("thirdparty")


# The index and the statistics


def test_the_index_lists_every_model_of_the_source_with_its_versions_states():
    states = ModelStates()
    states.set("digits", "1", UNAVAILABLE, "version 2 replaced it")
    states.set("digits", "2", READY)
    states.set("loading", "1", LOADING)
    table = table_of(served("digits", "2"), states=states)
    index = ModelIndex(table, states, lambda: ["digits", "loading", "never"])
    assert [(e.name, e.version, e.state) for e in index.index()] == [
        ("digits", "1", UNAVAILABLE), ("digits", "2", READY), ("loading", "1", LOADING), ("never", "", UNAVAILABLE),
    ]
    assert [(e.name, e.version) for e in index.index(ready_only=True)] == [("digits", "2")]


def test_statistics_are_of_the_versions_served():
    table = table_of(served("digits", "1"), served("digits", "2"), served("other"))
    index = ModelIndex(table, ModelStates(), list)
    assert index.statistics() == ["digits v1", "digits v2", "other v1"]
    assert index.statistics("digits") == ["digits v1", "digits v2"]
    assert index.statistics("digits", "2") == ["digits v2"]
    with pytest.raises(InvalidInput, match="must name its model too"):
        index.statistics("", "2")
    with pytest.raises(ModelNotFound):
        index.statistics("gone")


# What each control mode allows


@pytest.mark.parametrize("mode, polls, loads_on_request, workers_allowed", [
    ("none", False, False, 4),
    ("poll", True, False, 4),
    ("explicit", False, True, 1),
])
def test_what_each_control_mode_allows(mode, polls, loads_on_request, workers_allowed):
    options = LifecycleOptions(mode)
    assert (options.polls, options.loads_on_request) == (polls, loads_on_request)
    options.check_workers(workers_allowed)
    if workers_allowed == 1:
        with pytest.raises(ValueError, match="explicit needs --workers 1"):
            options.check_workers(2)
    options.check_source(from_repository=True)
    if mode == "none":
        options.check_source(from_repository=False)
        with pytest.raises(NotAllowed, match="given as files"):
            options.check_request("load", from_repository=False)
    else:
        with pytest.raises(ValueError, match="need a --model-repository"):
            options.check_source(from_repository=False)
    if loads_on_request:
        options.check_request("unload", from_repository=True)
    else:
        with pytest.raises(NotAllowed, match=f"cannot unload models: the server runs with --model-control-mode {mode}"):
            options.check_request("unload", from_repository=True)


def test_what_each_control_mode_loads():
    available, served_now = ["a", "b", "c"], ["b", "gone"]
    assert LifecycleOptions("none").startup_names(available) == available
    assert LifecycleOptions("explicit").startup_names(available) == []
    assert LifecycleOptions("explicit", startup_models=("c",)).startup_names(available) == ["c"]
    assert LifecycleOptions("explicit", startup_models=("*",)).startup_names(available) == available
    assert LifecycleOptions("poll").reread_names(available, served_now) == available
    assert LifecycleOptions("explicit").reread_names(available, served_now) == ["b"]
    with pytest.raises(ValueError, match="--load-model names the models to load in explicit mode"):
        LifecycleOptions("none", startup_models=("a",))
