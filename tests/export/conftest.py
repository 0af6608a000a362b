"""Fixtures for the export tests: checkpoints made here (random or briefly trained), and MNIST splits."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch

from zoo.checkpoint import Checkpoint, save_checkpoint
from zoo.data import DIGIT_LABELS, load_split
from zoo.models import get_model, get_model_spec
from zoo.preprocessing import Preprocessing

TRAIN_STEPS = 250
TRAIN_BATCH = 128
TRAIN_IMAGES = 20_000


def make_checkpoint(model: torch.nn.Module, model_name: str, path: Path, test_accuracy: float | None = None) -> Path:
    """A checkpoint with the meta training writes (labels, preprocessing, metrics, recipe, versions)."""
    spec = get_model_spec(model_name)
    meta: dict = {"recipe": {"made_by": "tests/export"}, "versions": {"torch": torch.__version__}}
    meta["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    if spec.is_classifier:
        meta["labels"] = list(DIGIT_LABELS)
        meta["preprocessing"] = Preprocessing.for_model(spec.input_size, "mnist").to_meta()
        if test_accuracy is not None:
            meta["metrics"] = {"test_accuracy": test_accuracy, "dataset": "mnist", "test_images": 10_000}
    else:
        meta["labels"] = []
    return save_checkpoint(Checkpoint(model_name, {}, model.state_dict(), meta), path)


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread():
    """One torch thread: these models are tiny, and on a shared 2-core runner two threads spend
    more time waiting for each other than computing (measured: 5x slower training)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint_factory():
    """make(model, name, path, test_accuracy=None) -> path of a checkpoint with training's meta."""
    return make_checkpoint


@pytest.fixture(scope="session")
def mnist_test(mnist_root):
    return load_split("mnist", train=False, data_dir=mnist_root, download=False)


@pytest.fixture(scope="session")
def trained_lenet_checkpoint(tmp_path_factory, mnist_root, mnist_test) -> Path:
    """The d2l LeNet-5 after a few hundred Adam steps on MNIST (about 90% test accuracy, a few seconds)."""
    torch.manual_seed(0)
    spec = get_model_spec("lenet")
    preprocessing = Preprocessing.for_model(spec.input_size, "mnist")
    train = load_split("mnist", train=True, data_dir=mnist_root, download=False).head(TRAIN_IMAGES)
    model = get_model("lenet")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(TRAIN_STEPS):
        index = torch.randint(0, len(train), (TRAIN_BATCH,), generator=generator)
        logits = model(preprocessing.normalise(preprocessing.pixels(train.images[index])))
        loss = torch.nn.functional.cross_entropy(logits, train.labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(preprocessing.normalise(preprocessing.pixels(mnist_test.images))).argmax(1)
    accuracy = float((predicted == mnist_test.labels).float().mean())
    assert accuracy > 0.8, f"the briefly trained LeNet reached only {accuracy:.3f}"
    runs_dir = tmp_path_factory.mktemp("runs")
    return make_checkpoint(model, "lenet", runs_dir / "lenet" / "checkpoint.pt", test_accuracy=accuracy)


@pytest.fixture(scope="session")
def random_export(tmp_path_factory):
    """export(name) -> (source, path): each registered model exported once per session, random weights, with card."""
    import onnx

    from export.card import attach_card, build_card
    from export.onnx_export import DEFAULT_OPSET, export_onnx
    from export.source import load_source

    folder = tmp_path_factory.mktemp("random-exports")
    cache: dict = {}

    def export(name: str):
        if name not in cache:
            source = load_source(name, random_weights=True, seed=1)
            model = export_onnx(source, DEFAULT_OPSET)
            attach_card(model, build_card(source, DEFAULT_OPSET), source.spec.description)
            path = folder / f"{name}.onnx"
            onnx.save_model(model, path)
            cache[name] = (source, path)
        return cache[name]

    return export


CALIBRATED_TEMPERATURE = 1.7
CALIBRATED_THRESHOLDS = {"min_confidence": 0.6, "min_margin": 0.2, "no_digit_below": 0.4}


@pytest.fixture(scope="session")
def calibrated_lenet_checkpoint(trained_lenet_checkpoint, tmp_path_factory) -> Path:
    """The briefly trained LeNet with the calibration meta training writes (a made-up temperature and thresholds)."""
    from zoo.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(trained_lenet_checkpoint)
    meta = dict(checkpoint.meta)
    meta["temperature"] = CALIBRATED_TEMPERATURE
    meta["calibration"] = {"method": "made up by tests/export", "temperature": CALIBRATED_TEMPERATURE}
    meta["verdict_thresholds"] = dict(CALIBRATED_THRESHOLDS)
    path = tmp_path_factory.mktemp("calibrated-runs") / "lenet" / "checkpoint.pt"
    return save_checkpoint(Checkpoint("lenet", {}, checkpoint.state_dict, meta), path)
