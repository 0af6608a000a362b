"""Whole exports: a trained LeNet proven on all of MNIST, its variants, and the failure paths."""
from __future__ import annotations

import dataclasses
import json

import onnx
import pytest
from onnx import numpy_helper

import export.pipeline
from export.card import read_card
from export.config import ArtifactPaths, ExportConfig
from export.errors import ExportError
from export.pipeline import export_model
from export.providers import CPU
from zoo.checkpoint import file_sha256


def _config(tmp_path, mnist_root, **overrides) -> ExportConfig:
    settings = dict(output_dir=tmp_path / "models", data_dir=mnist_root, runs_dir=tmp_path / "runs")
    return ExportConfig(**{**settings, **overrides})


def test_trained_lenet_export_is_proven_on_all_of_mnist(trained_lenet_checkpoint, mnist_root, tmp_path):
    config = _config(tmp_path, mnist_root, checkpoint_path=trained_lenet_checkpoint, optimize=True)
    result = export_model("lenet", config)
    assert result.passed, result.failures
    paths = result.paths
    assert paths.model == tmp_path / "models" / "lenet.onnx"
    for path in (paths.model, paths.optimized, paths.parity_report, paths.test_data_dir / "test_data_set_0" / "input_0.pb"):
        assert path.exists(), path
    assert not list(paths.model.parent.glob(".*staged")) and not list(paths.model.parent.glob("*rejected*"))

    report = json.loads(paths.parity_report.read_text())
    assert report["passed"] and report["failures"] == []
    cpu = report["parity"]["providers"][0]
    assert cpu["provider"] == CPU
    assert cpu["images"] == 10_000 and cpu["top1"]["percent"] == 100.0
    assert cpu["torch_accuracy"] == cpu["onnx_accuracy"]
    # The graph's own normalisation reproduces the accuracy measured at training time.
    assert cpu["torch_accuracy"] == pytest.approx(report["checkpoint_test_accuracy"], abs=2e-4)
    logits = next(diff for diff in cpu["outputs"] if diff["output"] == "logits")
    assert logits["max_abs_diff"] <= 1e-4 and logits["worst_input"]
    assert report["optimized"]["parity"]["passed"]
    assert report["test_data"]["source"] == "mnist test images 0-999"

    card = read_card(onnx.load(paths.model))
    assert card.checkpoint_sha256 == file_sha256(trained_lenet_checkpoint)
    assert card.test_accuracy == report["checkpoint_test_accuracy"]
    assert read_card(onnx.load(paths.optimized)) == dataclasses.replace(card, model_name="lenet.opt", variant_of="lenet")
    table = "\n".join(result.tables)
    assert "top-1 agreement 100.000% (10072/10072)" in table and "PASS" in table


def _break_the_export(monkeypatch):
    """Make the exporter produce a graph with one perturbed weight, as a buggy exporter would."""
    real_export = export.pipeline.export_onnx

    def broken_export(source, opset):
        model = real_export(source, opset)
        weight = next(init for init in model.graph.initializer if init.name.endswith("net.0.weight"))
        values = numpy_helper.to_array(weight).copy()
        values.flat[:5] += 0.2
        weight.CopyFrom(numpy_helper.from_array(values, name=weight.name))
        return model

    monkeypatch.setattr(export.pipeline, "export_onnx", broken_export)


def test_a_broken_export_is_rejected_not_installed(trained_lenet_checkpoint, mnist_root, tmp_path, monkeypatch):
    _break_the_export(monkeypatch)
    result = export_model("lenet", _config(tmp_path, mnist_root, checkpoint_path=trained_lenet_checkpoint))
    assert not result.passed
    assert "output 'logits' differs from torch by" in result.failures[0]
    assert "mnist test image #" in result.failures[0]
    rejected = ArtifactPaths.rejected(result.paths.model)
    assert not result.paths.model.exists() and rejected.exists()
    assert rejected.name == "lenet.onnx.rejected"
    rejected_report = json.loads(result.paths.rejected_report.read_text())
    assert not rejected_report["passed"] and rejected_report["parity"]["model_path"] == str(rejected)


def test_feature_map_export_with_random_weights(mnist_root, tmp_path):
    result = export_model("conv2d", _config(tmp_path, mnist_root, random_weights=True, optimize=True, optimize_level="basic"))
    assert result.passed, result.failures
    report = json.loads(result.paths.parity_report.read_text())
    assert report["checkpoint"] == "random weights"
    assert "random images of several sizes" in report["parity"]["dataset_note"]
    assert any("(1x2)" in case for case in report["parity"]["inputs"])
    optimized = onnx.load(result.paths.optimized)
    assert {node.domain for node in optimized.graph.node} == {""}  # basic level: standard operators only
    assert [opset.domain for opset in optimized.opset_import] == [""]


def test_without_mnist_parity_falls_back_to_random_inputs_and_says_so(trained_lenet_checkpoint, tmp_path, caplog):
    config = _config(tmp_path, tmp_path / "no-data", checkpoint_path=trained_lenet_checkpoint)
    result = export_model("lenet", config)
    assert result.passed, result.failures
    note = json.loads(result.paths.parity_report.read_text())["parity"]["dataset_note"]
    assert note.startswith("random inputs only: mnist test images are not available")
    assert "RANDOM inputs only" in caplog.text


def test_quantization_needs_data(trained_lenet_checkpoint, tmp_path):
    config = _config(tmp_path, tmp_path / "no-data", checkpoint_path=trained_lenet_checkpoint, quantize="int8")
    with pytest.raises(ExportError, match="calibrates on training images"):
        export_model("lenet", config)
    assert not (tmp_path / "models").exists()  # refused before writing anything


def test_quantization_is_for_classifiers(mnist_root, tmp_path):
    with pytest.raises(ExportError, match="feature-map model"):
        export_model("edge", _config(tmp_path, mnist_root, random_weights=True, quantize="int8"))


def test_int8_keeps_accuracy_within_0_3_points(trained_lenet_checkpoint, mnist_root, tmp_path):
    config = _config(tmp_path, mnist_root, checkpoint_path=trained_lenet_checkpoint, quantize="int8", calibration_images=500)
    result = export_model("lenet", config)
    assert result.passed, result.failures
    int8 = json.loads(result.paths.parity_report.read_text())["int8"]
    assert int8["calibration_images"] == 500 and int8["test_images"] == 10_000
    assert int8["accuracy_drop_points"] <= 0.3
    assert [speed["batch_size"] for speed in int8["speed"]] == [1, 64]
    assert all(speed["fp32_ms"] > 0 and speed["int8_ms"] > 0 for speed in int8["speed"])
    model = onnx.load(result.paths.int8)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    card = read_card(model)
    assert card.model_name == "lenet.int8" and card.variant_of == "lenet"
    assert card.test_accuracy == pytest.approx(int8["int8_accuracy"]) and card.dataset == "mnist"
    assert "INT8" in model.doc_string


def test_int8_accuracy_drop_beyond_the_limit_fails(trained_lenet_checkpoint, mnist_root, tmp_path):
    # A negative allowance cannot be met by any model that does not beat FP32 by a point.
    config = _config(
        tmp_path, mnist_root, checkpoint_path=trained_lenet_checkpoint, quantize="int8",
        calibration_images=200, max_accuracy_drop=-1.0,
    )
    result = export_model("lenet", config)
    assert any("points below FP32" in failure for failure in result.failures)
    assert result.paths.model.exists()  # the FP32 file passed its own checks
    assert not result.paths.int8.exists() and ArtifactPaths.rejected(result.paths.int8).exists()


def test_without_mnist_parity_uses_the_checkpoints_own_test_split(tmp_path, checkpoint_factory):
    """A checkpoint measured on the UCI digits (bundled with scikit-learn) is checked on them."""
    from torch import manual_seed

    from export.cases import load_test_split
    from export.source import load_source
    from zoo.models import get_model

    manual_seed(0)
    path = checkpoint_factory(get_model("lenet"), "lenet", tmp_path / "lenet.pt", test_accuracy=0.9)
    source = load_source("lenet", checkpoint_path=path)
    source.meta["metrics"]["dataset"] = "uci-digits"
    split, note = load_test_split(source, tmp_path / "no-data")
    assert split.dataset == "uci-digits" and len(split) == 360
    assert note.startswith("uci-digits test split, 360 images (mnist test images are not available")
