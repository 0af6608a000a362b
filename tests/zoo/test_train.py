"""python -m zoo.train: short real training runs, outputs, reproducibility, interruption, bad input."""
from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo.train as train_module
from contracts.data_dir import DATA_DIR_ENV
from zoo.checkpoint import load_checkpoint
from zoo.data import InMemoryLoader, load_split
from zoo.models import list_models
from zoo.ops.reference import corr2d
from zoo.preprocessing import Preprocessing
from zoo.recipes import MIN_FALLBACK_STEPS, RECIPES
from zoo.train import EXIT_DATA_UNAVAILABLE, EXIT_INTERRUPTED, main

REPO_ROOT = Path(__file__).resolve().parents[2]
TIME_FIELDS = {"seconds", "train_seconds", "train_cpu_seconds", "images_per_second"}


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _quick_mnist(mnist_root: Path, out: Path, *extra: str) -> list[str]:
    """A small lenet-modern run on a slice of MNIST."""
    return [
        "lenet-modern", "--data-dir", str(mnist_root), "--dataset", "mnist", "--no-download", "--out", str(out),
        "--batch-size", "32", "--train-limit", "640", "--test-limit", "200", "--no-plots", *extra,
    ]


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, mnist_root):
    """lenet-modern for 200 steps (2 epochs of 3,200 MNIST images), tested on 1,000 test images."""
    out = tmp_path_factory.mktemp("lenet-modern")
    code = main([
        "lenet-modern", "--data-dir", str(mnist_root), "--dataset", "mnist", "--no-download", "--out", str(out),
        "--epochs", "2", "--batch-size", "32", "--train-limit", "3200", "--test-limit", "1000",
    ])
    return code, out


def test_short_run_learns(classifier_run):
    code, out = classifier_run
    assert code == 0
    metrics = _metrics(out)
    assert metrics["dataset"] == "mnist" and metrics["train_images"] == 3200 and metrics["test_images"] == 1000
    assert [entry["epoch"] for entry in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][-1]["steps"] == 200
    assert metrics["test_accuracy"] > 0.8  # chance is 0.1
    assert metrics["epochs"][1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert all(entry["images_per_second"] > 0 and entry["seconds"] > 0 for entry in metrics["epochs"])


def test_run_writes_checkpoint_metrics_and_pictures(classifier_run):
    _, out = classifier_run
    for name in ("checkpoint.pt", "metrics.json", "curves.png", "confusion.png", "filters.png", "misclassified.png"):
        assert (out / name).is_file(), name
    for picture in out.glob("*.png"):
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [path for path in out.iterdir() if path.name.startswith(".")], "temporary files left behind"


def test_checkpoint_carries_the_weights_meta(classifier_run):
    _, out = classifier_run
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    meta = checkpoint.meta
    assert checkpoint.model_name == "lenet-modern"
    assert meta["labels"] == [str(digit) for digit in range(10)]
    assert Preprocessing.from_meta(meta["preprocessing"]) == Preprocessing.for_model((28, 28), "mnist")
    assert meta["metrics"]["dataset"] == "mnist" and meta["metrics"]["test_images"] == 1000
    assert meta["metrics"]["test_accuracy"] == _metrics(out)["test_accuracy"]
    assert meta["recipe"]["epochs"] == 2 and meta["recipe"]["batch_size"] == 32 and meta["recipe"]["seed"] == 0
    assert meta["recipe"]["train_limit"] == 3200  # a cut-down run says so
    assert set(meta["versions"]) == {"torch", "torchvision"} and meta["versions"]["torch"] == torch.__version__
    datetime.fromisoformat(meta["created"])


def test_checkpoint_round_trips_to_the_same_predictions(classifier_run, mnist_root):
    _, out = classifier_run
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    model = checkpoint.build_model()
    split = load_split("mnist", train=False, data_dir=mnist_root, download=False).head(1000)
    preprocessing = Preprocessing.from_meta(checkpoint.meta["preprocessing"])
    evaluation = train_module.evaluate(model, InMemoryLoader(split, preprocessing, 250))
    assert evaluation.accuracy == checkpoint.meta["metrics"]["test_accuracy"]
    rebuilt = load_checkpoint(out / "checkpoint.pt").build_model()
    pixels, _ = next(iter(InMemoryLoader(split.head(64), preprocessing, 64)))
    with torch.no_grad():
        assert torch.equal(model(pixels), rebuilt(pixels))


def test_same_seed_same_result_different_seed_different_result(tmp_path, mnist_root):
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert main(_quick_mnist(mnist_root, tmp_path / name, "--seed", seed, "--epochs", "2", "--max-steps", "30")) == 0
        runs[name] = (_metrics(tmp_path / name), load_checkpoint(tmp_path / name / "checkpoint.pt").state_dict)

    def without_times(metrics):
        return [{k: v for k, v in entry.items() if k not in TIME_FIELDS} for entry in metrics["epochs"]]

    assert without_times(runs["a"][0]) == without_times(runs["b"][0])
    assert all(torch.equal(runs["a"][1][key], runs["b"][1][key]) for key in runs["a"][1])
    assert not all(torch.equal(runs["a"][1][key], runs["c"][1][key]) for key in runs["a"][1])


def test_max_steps_stops_the_run(tmp_path, mnist_root):
    assert main(_quick_mnist(mnist_root, tmp_path, "--epochs", "5", "--max-steps", "25")) == 0
    metrics = _metrics(tmp_path)
    assert [entry["steps"] for entry in metrics["epochs"]] == [20, 25]


def test_lenet5_32_is_fed_padded_digits(tmp_path, mnist_root):
    args = ["lenet5-32", "--data-dir", str(mnist_root), "--no-download", "--out", str(tmp_path), "--no-plots",
            "--train-limit", "64", "--test-limit", "50", "--batch-size", "32", "--epochs", "1"]
    assert main(args) == 0
    meta = load_checkpoint(tmp_path / "checkpoint.pt").meta
    assert meta["preprocessing"]["input_size"] == [32, 32]


def test_offline_fallback_trains_on_uci_digits(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "run"
    args = ["lenet-modern", "--data-dir", str(empty), "--no-download", "--out", str(out), "--no-plots",
            "--epochs", "4", "--batch-size", "32"]
    assert main(args) == 0
    metrics = _metrics(out)
    assert metrics["dataset"] == "uci-digits" and metrics["test_images"] == 360
    assert metrics["test_accuracy"] > 0.8
    fallback_lines = [record.getMessage() for record in caplog.records if record.name == "zoo.data"]
    assert len(fallback_lines) == 1 and "UCI digits" in fallback_lines[0]
    meta = load_checkpoint(out / "checkpoint.pt").meta
    assert meta["metrics"]["dataset"] == "uci-digits"
    assert Preprocessing.from_meta(meta["preprocessing"]) == Preprocessing.for_model((28, 28), "uci-digits")


def test_quick_start_default_learns_on_the_offline_fallback(tmp_path):
    # The README's first command, offline with no MNIST: the default lenet recipe (6 epochs, tuned on
    # MNIST's 469 steps an epoch) was 72 steps on the UCI digits and ended at chance (10%). Its
    # epochs now grow to a step budget, and an explicit --epochs is still obeyed.
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "run"
    assert main(["lenet", "--data-dir", str(empty), "--no-download", "--out", str(out), "--no-plots"]) == 0
    metrics = _metrics(out)
    assert metrics["dataset"] == "uci-digits"
    assert metrics["recipe"]["epochs"] * 12 >= MIN_FALLBACK_STEPS
    assert metrics["test_accuracy"] > 0.95

    explicit = tmp_path / "explicit"
    args = ["lenet", "--data-dir", str(empty), "--no-download", "--out", str(explicit), "--no-plots", "--epochs", "2"]
    assert main(args) == 0
    assert _metrics(explicit)["recipe"]["epochs"] == 2


def test_strict_mnist_fails_naming_the_folder(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    code = main(["lenet", "--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download", "--out", str(tmp_path / "run")])
    assert code == EXIT_DATA_UNAVAILABLE
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert any(str(tmp_path / "MNIST" / "raw") in message for message in errors)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def _write_idx(path: Path, tensor: torch.Tensor) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def test_fashion_mnist_run_records_its_labels_and_normalisation(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = torch.randint(0, 256, (40, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", torch.arange(40) % 10)
    out = tmp_path / "run"
    assert main(["lenet", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-download",
                 "--out", str(out), "--epochs", "1", "--batch-size", "8", "--no-plots"]) == 0
    meta = load_checkpoint(out / "checkpoint.pt").meta
    assert meta["labels"][0] == "T-shirt/top" and meta["metrics"]["dataset"] == "fashion-mnist"
    assert Preprocessing.from_meta(meta["preprocessing"]) == Preprocessing.for_model((28, 28), "fashion-mnist")


@pytest.mark.parametrize("name", ["edge", "conv2d"])
def test_edge_models_learn_the_kernel(name, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert main([name, "--out", str(tmp_path)]) == 0
    metrics = _metrics(tmp_path)
    learned = torch.tensor(metrics["kernel"])
    assert learned.shape == (1, 2)
    assert torch.allclose(learned, torch.tensor([[1.0, -1.0]]), atol=0.05)
    assert metrics["max_kernel_error"] < 0.05
    assert metrics["losses"][-1] < metrics["losses"][0] / 100
    if name == "conv2d":
        assert abs(metrics["bias"]) < 0.05
    else:
        assert metrics["bias"] is None
    # The documents' log: the summed squared error every 2 iterations, three decimals.
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("iteration")]
    assert len(lines) == metrics["iterations"] // 2
    assert re.fullmatch(r"iteration 2, loss \d+\.\d{3}", lines[0])
    assert (tmp_path / "kernel.png").is_file()
    meta = load_checkpoint(tmp_path / "checkpoint.pt").meta
    assert meta["labels"] == [] and meta["preprocessing"] is None


def test_edge_run_takes_the_documents_gradient_steps(tmp_path, monkeypatch):
    """`python -m zoo.train edge` is the documents' "Learning a Kernel" loop: from the same starting
    kernel, the same losses at every step and the same learned kernel."""
    starting_kernels = []
    build = train_module.get_model

    def build_and_record(name, **config):
        model = build(name, **config)
        starting_kernels.append(model.conv.weight.detach().clone())
        return model

    monkeypatch.setattr(train_module, "get_model", build_and_record)
    assert main(["edge", "--out", str(tmp_path), "--no-plots"]) == 0
    metrics = _metrics(tmp_path)
    assert len(metrics["losses"]) == RECIPES["edge"].epochs  # its recipe's plain gradient steps

    # The documents' data: 6x8 ones with a dark band in columns 2-5, and its edges under [1, -1].
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    Y = corr2d(X, torch.tensor([[1.0, -1.0]]))
    X, Y = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    # The documents' loop, as printed, from the run's starting kernel.
    conv2d = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    conv2d.weight.data[:] = starting_kernels[-1]
    lr = 3e-2
    losses = []
    for i in range(len(metrics["losses"])):
        Y_hat = conv2d(X)
        l = (Y_hat - Y) ** 2
        conv2d.zero_grad()
        l.sum().backward()
        conv2d.weight.data[:] -= lr * conv2d.weight.grad
        losses.append(l.sum().item())
    learned = conv2d.weight.detach().reshape(1, 2)
    torch.testing.assert_close(torch.tensor(metrics["losses"]), torch.tensor(losses), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(metrics["kernel"]), learned, rtol=1e-5, atol=1e-6)


def test_interrupt_keeps_the_last_good_checkpoint(tmp_path, mnist_root, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    real_evaluate = train_module.evaluate
    calls = []

    def evaluate_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_then_interrupt)
    assert main(_quick_mnist(mnist_root, tmp_path, "--epochs", "3")) == EXIT_INTERRUPTED
    checkpoint_path = tmp_path / "checkpoint.pt"
    assert f"interrupted; last good checkpoint: {checkpoint_path}" in caplog.text
    checkpoint = load_checkpoint(checkpoint_path)
    assert checkpoint.meta["metrics"]["epochs_completed"] == 1
    checkpoint.build_model()
    assert len(_metrics(tmp_path)["epochs"]) == 1
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_interrupt_before_the_first_epoch_says_there_is_no_checkpoint(tmp_path, mnist_root, monkeypatch, caplog):
    caplog.set_level(logging.INFO)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_epoch", interrupted)
    assert main(_quick_mnist(mnist_root, tmp_path)) == EXIT_INTERRUPTED
    assert "interrupted; last good checkpoint: none" in caplog.text


def test_unknown_model_exits_2_listing_the_known_ones(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["resnet50"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "unknown model 'resnet50'" in error
    assert "conv2d, edge, lenet, lenet-modern, lenet5-32" in error


@pytest.mark.parametrize(
    "args, message",
    [
        (["lenet", "--epochs", "0"], "epochs must be at least 1"),
        (["lenet", "--lr", "-1"], "learning rate must be positive"),
        (["lenet", "--train-limit", "0"], "--train-limit must be at least 1"),
        (["lenet", "--optimizer", "lamb"], "invalid choice"),
        (["edge", "--dataset", "mnist"], "digit classifiers only"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["lenet", "--device", "cuda"])
    assert caught.value.code == 2
    assert "--device cpu" in capsys.readouterr().err


def test_help_documents_every_flag_model_and_recipe(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--seed", "--device", "--data-dir", "--dataset", "--out",
                 "--train-limit", "--test-limit", "--max-steps", "--threads", "--no-download"):
        assert flag in text, flag
    assert all(name in text for name in list_models()), "the help is built from the registry: every model is named"
    assert DATA_DIR_ENV in text  # the variable the data folder is really read from


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "zoo.train", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def test_cli_trains_edge_and_exits_0(tmp_path):
    result = _run_cli("edge", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "iteration 2, loss" in result.stderr and "learned kernel" in result.stderr
    assert str(tmp_path) in result.stderr  # the summary says where the files are
    assert (tmp_path / "checkpoint.pt").is_file()


def test_cli_strict_mode_exits_nonzero_naming_the_folder(tmp_path):
    result = _run_cli("lenet", "--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download", "--out", str(tmp_path / "run"))
    assert result.returncode == EXIT_DATA_UNAVAILABLE
    assert str(tmp_path / "MNIST" / "raw") in result.stderr
    assert "Traceback" not in result.stderr
