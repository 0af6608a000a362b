"""Where the weights come from, and the clear errors when they cannot be used."""
from __future__ import annotations

import pytest
import torch

from export.errors import ExportError
from export.source import default_checkpoint_path, load_source, models_with_checkpoints
from zoo.checkpoint import Checkpoint, save_checkpoint
from zoo.models import get_model


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ExportError, match=r"unknown model 'lenet-6'.*lenet-modern"):
        load_source("lenet-6")


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(ExportError) as caught:
        load_source("lenet", runs_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "lenet" / "checkpoint.pt") in message
    assert "python -m zoo.train lenet" in message and "--random-weights" in message


def test_latest_run_is_the_default(tmp_path, checkpoint_factory):
    path = checkpoint_factory(get_model("edge"), "edge", default_checkpoint_path("edge", tmp_path))
    source = load_source("edge", runs_dir=tmp_path)
    assert source.checkpoint_path == path and source.is_trained
    assert models_with_checkpoints(tmp_path) == ["edge"]


def test_checkpoint_weights_are_the_ones_exported(tmp_path, checkpoint_factory):
    torch.manual_seed(4)
    model = get_model("lenet")
    path = checkpoint_factory(model, "lenet", tmp_path / "lenet.pt", test_accuracy=0.9)
    source = load_source("lenet", checkpoint_path=path)
    for name, value in model.state_dict().items():
        assert torch.equal(source.model.state_dict()[name], value)
    assert not source.model.training
    assert source.labels == [str(digit) for digit in range(10)]
    assert source.preprocessing.input_size == (28, 28) and source.measured_accuracy == 0.9


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "corrupted or truncated"),
        (lambda data: b"not a checkpoint at all", "not a checkpoint"),
    ],
)
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, checkpoint_factory, damage, message):
    path = checkpoint_factory(get_model("lenet"), "lenet", tmp_path / "lenet.pt")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ExportError, match=message) as caught:
        load_source("lenet", checkpoint_path=path)
    assert str(path) in str(caught.value)


def test_checkpoint_of_another_model_is_refused(tmp_path, checkpoint_factory):
    path = checkpoint_factory(get_model("lenet-modern"), "lenet-modern", tmp_path / "modern.pt")
    with pytest.raises(ExportError, match=r"holds a 'lenet-modern' model, not 'lenet'.*python -m export lenet-modern"):
        load_source("lenet", checkpoint_path=path)


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    state = get_model("lenet5-32").state_dict()  # other layer sizes, saved under lenet's name
    path = save_checkpoint(Checkpoint("lenet", {}, state, {}), tmp_path / "odd.pt")
    with pytest.raises(ExportError, match="do not match model 'lenet'"):
        load_source("lenet", checkpoint_path=path)


def test_classifier_checkpoint_without_preprocessing_is_refused(tmp_path):
    path = save_checkpoint(Checkpoint("lenet", {}, get_model("lenet").state_dict(), {"labels": []}), tmp_path / "bare.pt")
    with pytest.raises(ExportError, match="lacks the classifier meta"):
        load_source("lenet", checkpoint_path=path)


def test_random_weights_only_when_asked_and_not_with_a_checkpoint(tmp_path):
    source = load_source("lenet", random_weights=True, seed=3)
    assert not source.is_trained and source.checkpoint_sha256 is None
    again = load_source("lenet", random_weights=True, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(source.model.state_dict().values(), again.model.state_dict().values()))
    with pytest.raises(ExportError, match="exclude each other"):
        load_source("lenet", checkpoint_path=tmp_path / "x.pt", random_weights=True)
