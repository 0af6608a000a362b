"""The command line: exit codes and messages a user (or a CI script) can act on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from onnx import numpy_helper

import export.pipeline
from export.__main__ import main
from zoo.models import get_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_unknown_model_exits_2(capsys):
    assert main(["lenet-6"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'lenet-6'" in err and "lenet-modern" in err


def test_export_with_random_weights_exits_0_and_writes_every_artifact(tmp_path):
    """The real command in a fresh process, as a user or CI runs it."""
    completed = _run_cli("conv2d", "--random-weights", "-o", "out/edge-scratch.onnx", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "feature_map" in completed.stdout and "PASS" in completed.stdout
    out = tmp_path / "out"
    assert {path.name for path in out.iterdir()} == {
        "edge-scratch.onnx", "edge-scratch.parity.json", "edge-scratch.test_data",
    }
    assert json.loads((out / "edge-scratch.parity.json").read_text())["passed"]
    assert "RANDOM weights" in completed.stderr


def test_missing_checkpoint_exits_2_with_how_to_train(tmp_path, capsys):
    assert main(["lenet", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "python -m zoo.train lenet" in capsys.readouterr().err


def test_mismatched_checkpoint_exits_2(tmp_path, capsys, checkpoint_factory):
    path = checkpoint_factory(get_model("edge"), "edge", tmp_path / "edge.pt")
    assert main(["conv2d", "--checkpoint", str(path), "-o", str(tmp_path / "conv2d.onnx")]) == 2
    assert "holds a 'edge' model, not 'conv2d'" in capsys.readouterr().err
    assert not (tmp_path / "conv2d.onnx").exists()


def test_corrupted_checkpoint_exits_2(tmp_path, capsys, checkpoint_factory):
    path = checkpoint_factory(get_model("edge"), "edge", tmp_path / "edge.pt")
    path.write_bytes(path.read_bytes()[:100])
    assert main(["edge", "--checkpoint", str(path)]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "name one model to export, or pass --all"),
        (["lenet", "--all"], "name one model to export, or pass --all"),
        (["lenet", "--atol", "-1"], "--atol must be at least 0"),
        (["lenet", "--min-top1-agreement", "101"], "percentage in 0..100"),
        (["lenet", "--random-weights", "--opset", "12"], "opset 12 is not supported"),
        (["--all", "-o", "x.onnx"], "use --output-dir"),
        (["lenet", "--random-weights", "-o", "lenet.pb"], "must end in .onnx"),
    ],
)
def test_bad_flags_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_all_without_checkpoints_exits_2(tmp_path, capsys):
    assert main(["--all", "--runs-dir", str(tmp_path)]) == 2
    assert "no model has a checkpoint" in capsys.readouterr().err


def test_all_exports_every_model_with_a_checkpoint(tmp_path, capsys, checkpoint_factory):
    runs = tmp_path / "runs"
    for name in ("edge", "conv2d"):
        checkpoint_factory(get_model(name), name, runs / name / "checkpoint.pt")
    assert main(["--all", "--runs-dir", str(runs), "--output-dir", str(tmp_path / "models")]) == 0
    assert sorted(path.name for path in (tmp_path / "models").glob("*.onnx")) == ["conv2d.onnx", "edge.onnx"]


def test_parity_failure_exits_1_and_names_the_output(tmp_path, capsys, monkeypatch):
    real_export = export.pipeline.export_onnx

    def broken_export(source, opset):
        model = real_export(source, opset)
        weight = next(init for init in model.graph.initializer if init.name.endswith("conv.weight"))
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, name=weight.name))
        return model

    monkeypatch.setattr(export.pipeline, "export_onnx", broken_export)
    assert main(["edge", "--random-weights", "-o", str(tmp_path / "edge.onnx")]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert "output 'feature_map' differs from torch by" in captured.err and "random batch of" in captured.err
    assert not (tmp_path / "edge.onnx").exists() and (tmp_path / "edge.onnx.rejected").exists()
