"""python -m zoo.evaluate: re-measures a checkpoint and compares with what it recorded."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from zoo.evaluate import (
    EXIT_BAD_CHECKPOINT,
    EXIT_DATA_UNAVAILABLE,
    evaluate_checkpoint,
    main,
)
from zoo.models import get_model
from zoo.train import main as train_main

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_root) -> Path:
    out = tmp_path_factory.mktemp("evaluate")
    code = train_main([
        "lenet-modern", "--data-dir", str(mnist_root), "--dataset", "mnist", "--no-download", "--out", str(out),
        "--epochs", "1", "--batch-size", "32", "--train-limit", "1600", "--test-limit", "500", "--no-plots",
    ])
    assert code == 0
    return out / "checkpoint.pt"


def test_remeasures_the_recorded_accuracy(trained, mnist_root):
    result = evaluate_checkpoint(trained, data_dir=mnist_root, download=False, test_limit=500)
    recorded = load_checkpoint(trained).meta["metrics"]["test_accuracy"]
    assert result["test_images"] == 500 and result["dataset"] == "mnist"
    assert result["test_accuracy"] == recorded
    assert result["correct"] == round(recorded * 500)


def test_cli_prints_accuracy_and_the_comparison(trained, mnist_root, capsys):
    assert main([str(trained), "--data-dir", str(mnist_root), "--no-download", "--test-limit", "500"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("lenet-modern: test accuracy ")
    assert "/500 mnist test images" in line and "difference +0.00 points" in line


def test_full_test_set_is_compared_as_a_different_set(trained, mnist_root, capsys):
    assert main([str(trained), "--data-dir", str(mnist_root), "--no-download", "--batch-size", "2500"]) == 0
    line = capsys.readouterr().out
    assert "/10000 mnist test images" in line and "measured on a different test set" in line


def test_edge_checkpoint_reports_its_kernel(tmp_path, capsys):
    model = get_model("edge")
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([[[[1.0, -1.0]]]]))
    path = save_checkpoint(Checkpoint("edge", {}, model.state_dict(), {"metrics": {"final_loss": 0.0}}), tmp_path / "e.pt")
    assert main([str(path)]) == 0
    line = capsys.readouterr().out
    assert "loss 0.0000" in line and "max error 0.0000" in line


def test_corrupted_checkpoint_exits_2_with_a_message(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02 definitely not a checkpoint")
    assert main([str(path)]) == EXIT_BAD_CHECKPOINT
    assert str(path) in caplog.text


def test_classifier_without_preprocessing_is_refused(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = save_checkpoint(Checkpoint("lenet", {}, get_model("lenet").state_dict(), {}), tmp_path / "bare.pt")
    assert main([str(path)]) == EXIT_BAD_CHECKPOINT
    assert "lacks the preprocessing" in caplog.text


def test_missing_dataset_exits_1_naming_the_folder(trained, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert main([str(trained), "--data-dir", str(tmp_path), "--no-download"]) == EXIT_DATA_UNAVAILABLE
    assert str(tmp_path / "MNIST" / "raw") in caplog.text


def test_cli_exit_code_for_a_missing_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "zoo.evaluate", str(tmp_path / "absent.pt")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == EXIT_BAD_CHECKPOINT
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
