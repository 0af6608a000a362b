"""zoo.checkpoint: round trips, atomic writes, clear errors, and no code execution on load."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import zoo.checkpoint as checkpoint_module
from zoo.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from zoo.models import get_model

META = {
    "labels": [str(digit) for digit in range(10)],
    "preprocessing": {"input_size": [28, 28], "digit_size": 28, "value_range": [0.0, 1.0], "mean": [0.1307], "std": [0.3081]},
    "metrics": {"test_accuracy": 0.99, "dataset": "mnist", "test_images": 10000},
    "recipe": {"epochs": 1},
    "versions": {"torch": torch.__version__},
    "created": "2026-01-01T00:00:00+00:00",
}


def _lenet_checkpoint(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    model = get_model("lenet-modern")
    return Checkpoint("lenet-modern", {}, model.state_dict(), META)


def test_round_trip_rebuilds_the_same_model(tmp_path):
    original = _lenet_checkpoint()
    path = save_checkpoint(original, tmp_path / "nested" / "checkpoint.pt")
    loaded = load_checkpoint(path)
    assert loaded.model_name == "lenet-modern" and loaded.model_config == {} and loaded.meta == META
    pixels = torch.randn(8, 1, 28, 28)
    expected = get_model("lenet-modern")
    expected.load_state_dict(original.state_dict)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(pixels), expected.eval()(pixels))
    assert not loaded.build_model().training


def test_model_config_travels_with_the_weights(tmp_path):
    model = get_model("edge", kernel_size=(2, 2))
    path = save_checkpoint(Checkpoint("edge", {"kernel_size": [2, 2]}, model.state_dict(), {}), tmp_path / "c.pt")
    rebuilt = load_checkpoint(path).build_model()
    assert rebuilt.kernel.shape == (2, 2)


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(_lenet_checkpoint(seed=0), tmp_path / "checkpoint.pt")
    digest = file_sha256(path)
    real_save = torch.save

    def save_half_then_interrupt(payload, handle, *args, **kwargs):
        real_save(payload, handle, *args, **kwargs)
        handle.truncate(100)  # a torn write...
        raise KeyboardInterrupt  # ...cut short by Ctrl-C

    monkeypatch.setattr(checkpoint_module.torch, "save", save_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_lenet_checkpoint(seed=1), path)
    monkeypatch.undo()
    assert file_sha256(path) == digest
    load_checkpoint(path).build_model()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*python -m zoo.train"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupted_file_is_a_clear_error(tmp_path, damage):
    path = save_checkpoint(_lenet_checkpoint(), tmp_path / "checkpoint.pt")
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint at all" * 50, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


def test_foreign_file_format_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=f"not a {FORMAT} checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    state = get_model("lenet").state_dict()
    path = save_checkpoint(Checkpoint("lenet5-32", {}, state, {}), tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match model 'lenet5-32'"):
        load_checkpoint(path).build_model()


def test_unknown_model_name_is_refused(tmp_path):
    path = save_checkpoint(Checkpoint("alexnet", {}, {}, {}), tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="cannot build.*known models"):
        load_checkpoint(path).build_model()


class _WritesAMarker:
    """Unpickling this calls exec(): a crafted file that would run code on a plain torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch-zip", "plain-pickle"])
def test_crafted_pickle_does_not_execute(tmp_path, container):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "model_name": "lenet", "model_config": {}, "state_dict": {}, "meta_json": "{}",
               "evil": _WritesAMarker(marker)}
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # The file really is armed: an unrestricted unpickle runs the code.
    if container == "plain-pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        load_checkpoint(path)
    assert not marker.exists()
