"""Calibration through export: the graph's probabilities use the checkpoint's temperature, the card carries
it and the verdict thresholds, the parity report measures the calibration error, and old checkpoints warn."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from contracts.calibration import softmax
from contracts.model_card import LOGITS_OUTPUT, PROBABILITIES_OUTPUT
from contracts.verdicts import VerdictThresholds
from export.card import attach_card, build_card, read_card
from export.config import ExportConfig
from export.onnx_export import DEFAULT_OPSET, export_onnx
from export.pipeline import export_model
from export.source import load_source
from tests.export.conftest import CALIBRATED_TEMPERATURE, CALIBRATED_THRESHOLDS


def _outputs(path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run([LOGITS_OUTPUT, PROBABILITIES_OUTPUT], {"pixels": pixels})
    return {LOGITS_OUTPUT: logits, PROBABILITIES_OUTPUT: probabilities}


def _exported(checkpoint, tmp_path):
    source = load_source("lenet", checkpoint)
    model = export_onnx(source, DEFAULT_OPSET)
    attach_card(model, build_card(source, DEFAULT_OPSET), source.spec.description)
    path = tmp_path / "lenet.onnx"
    onnx.save_model(model, path)
    return path


def test_probabilities_output_is_softmax_of_logits_over_the_temperature(calibrated_lenet_checkpoint, mnist_test, tmp_path):
    path = _exported(calibrated_lenet_checkpoint, tmp_path)
    pixels = mnist_test.images[:200].numpy().astype(np.float32)[:, None] / 255
    outputs = _outputs(path, pixels)
    np.testing.assert_allclose(
        outputs[PROBABILITIES_OUTPUT], softmax(outputs[LOGITS_OUTPUT], CALIBRATED_TEMPERATURE), atol=1e-6
    )
    # A temperature above 1 flattens: the calibrated top probabilities are below the plain softmax's.
    assert (outputs[PROBABILITIES_OUTPUT].max(1) <= softmax(outputs[LOGITS_OUTPUT]).max(1) + 1e-6).all()

    card = read_card(onnx.load(path))
    assert card.temperature == pytest.approx(CALIBRATED_TEMPERATURE)
    assert VerdictThresholds.from_card(card) == VerdictThresholds.from_meta(CALIBRATED_THRESHOLDS)
    assert card.calibration["temperature"] == pytest.approx(CALIBRATED_TEMPERATURE)


def test_uncalibrated_checkpoint_exports_plain_softmax_and_says_to_retrain(trained_lenet_checkpoint, mnist_test, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    path = _exported(trained_lenet_checkpoint, tmp_path)
    assert any("no calibration" in record.getMessage() and "python -m zoo.train lenet" in record.getMessage()
               for record in caplog.records)
    pixels = mnist_test.images[:50].numpy().astype(np.float32)[:, None] / 255
    outputs = _outputs(path, pixels)
    np.testing.assert_allclose(outputs[PROBABILITIES_OUTPUT], softmax(outputs[LOGITS_OUTPUT]), atol=1e-6)
    card = read_card(onnx.load(path))
    assert card.temperature is None and card.verdict_thresholds == {} and card.calibration == {}


def test_parity_report_measures_calibration_and_variants_keep_it(calibrated_lenet_checkpoint, mnist_root, tmp_path):
    config = ExportConfig(output_dir=tmp_path / "models", data_dir=mnist_root, runs_dir=tmp_path / "runs",
                          checkpoint_path=calibrated_lenet_checkpoint, optimize=True, cpu_only=True)
    result = export_model("lenet", config)
    assert result.passed, result.failures
    report = json.loads(result.paths.parity_report.read_text())
    cpu = report["parity"]["providers"][0]
    assert 0 <= cpu["ece_uncalibrated"] <= 1 and 0 <= cpu["ece_calibrated"] <= 1
    assert cpu["ece_uncalibrated"] != cpu["ece_calibrated"]
    assert report["parity"]["temperature"] == pytest.approx(CALIBRATED_TEMPERATURE)
    table = "\n".join(result.tables)
    assert "ECE (15 bins) on 10000 images" in table and f"temperature {CALIBRATED_TEMPERATURE:.4g}" in table
    card = read_card(onnx.load(result.paths.model))
    optimised = read_card(onnx.load(result.paths.optimized))
    assert optimised == dataclasses.replace(card, model_name="lenet.opt", variant_of="lenet")
    assert optimised.temperature == pytest.approx(CALIBRATED_TEMPERATURE)
