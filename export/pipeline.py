"""One model's export, start to finish: weights -> ONNX file with card -> proven parity -> variants.

With a repository (--repository REPO) the files become the model's next version there, beside a
Triton config.pbtxt (export.repository).

A file takes its real name only after its checks pass (until then it is staged under a hidden
name), so a server watching the models folder never picks up an unproven graph. A file that fails
is kept as NAME.onnx.rejected (a name no server loads), with its report, for inspection.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from contracts.model_card import LOGITS_OUTPUT, PROBABILITIES_OUTPUT, ModelCard
from export.card import attach_card, build_card
from export.cases import dataset_cases, load_test_split, random_cases
from export.config import ArtifactPaths, ExportConfig
from export.errors import ExportError
from export.graphs import input_name
from export.onnx_export import check_opset, export_onnx
from export.optimize import save_optimized
from export.parity import InputCase, ParityReport, check_parity
from export.providers import CPU, open_session, parity_providers
from export.quantize import compare_speed, quantize_int8
from export.report import int8_table, parity_table
from export.repository import RepositoryVersion
from export.source import ExportSource, load_source, model_spec
from export.test_data import validate_test_data, write_test_data
from zoo.data import DataUnavailableError, DigitSplit, load_split

log = logging.getLogger(__name__)

TEST_DATA_IMAGES = 8
# Training and export evaluate the same images with the same preprocessing; a gap beyond this
# (percentage points) means the graph's baked-in normalisation is suspect.
RECORDED_ACCURACY_WARNING = 0.1


@dataclass
class ExportResult:
    model_name: str
    paths: ArtifactPaths
    tables: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # what NAME.parity.json holds

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityInputs:
    cases: list[InputCase]
    note: str  # which labelled test split was used, or why none was
    split: DigitSplit | None


def export_model(model_name: str, config: ExportConfig) -> ExportResult:
    """Export, check and install one model's files; check failures are in the result, errors raise."""
    spec = model_spec(model_name)
    check_opset(config.opset)
    if config.quantize and not spec.is_classifier:
        if not config.all_models:
            raise ExportError(
                f"--quantize {config.quantize} applies to the digit classifiers; {model_name!r} is a feature-map model"
            )
        log.info("%s is a feature-map model: exported without --quantize %s", model_name, config.quantize)
        config = dataclasses.replace(config, quantize=None)
    if config.repository is not None:
        return _export_version(model_name, config)
    return _export_file(model_name, config, ArtifactPaths(config.output_for(model_name)))


def _export_version(model_name: str, config: ExportConfig) -> ExportResult:
    """Export into the repository as the model's next version (and refresh its config.pbtxt)."""
    if config.optimize or config.quantize:
        raise ExportError(
            "--optimize and --quantize write variant files beside the model; with --repository export the "
            "model alone (a variant is a model of its own in a repository)"
        )
    version = RepositoryVersion.next(config.repository, model_name)
    try:
        result = _export_file(model_name, config, ArtifactPaths(version.staged_model))
        if result.passed:
            final_model = version.publish()
            into = version.final_dir
        else:
            into = version.reject()
            final_model = into / ArtifactPaths.rejected(version.staged_model).name
    except BaseException:
        version.discard()
        raise
    result.summary = version.relocate(result.summary, into)
    result.failures = version.relocate(result.failures, into)
    report = into / ArtifactPaths(version.staged_model).parity_report.name
    if not result.passed:
        report = into / ArtifactPaths(version.staged_model).rejected_report.name
    report.write_text(json.dumps(result.summary, indent=2) + "\n")
    result.paths = ArtifactPaths(final_model)
    return result


def _export_file(model_name: str, config: ExportConfig, paths: ArtifactPaths) -> ExportResult:
    if paths.model.suffix != ".onnx":
        raise ExportError(f"output file {paths.model} must end in .onnx (the other artifacts are named after it)")
    source = load_source(model_name, config.checkpoint_path, config.runs_dir, config.random_weights, config.seed)
    # Data before any work: a missing dataset stops the run before a file is written.
    inputs = _parity_inputs(source, config)
    calibration = _calibration_pixels(source, inputs, config) if config.quantize else None
    run = _ExportRun(source, inputs, config, paths)
    try:
        run.fp32()
        if run.accepted and config.optimize:
            run.optimized()
        if run.accepted and config.quantize:
            run.int8(calibration)
    finally:
        # Whatever stopped the run, no half-checked file stays behind.
        for path in (paths.model, paths.optimized, paths.int8):
            ArtifactPaths.staged(path).unlink(missing_ok=True)
    run.write_summary(paths.parity_report if run.accepted else paths.rejected_report)
    return run.result


def _parity_inputs(source: ExportSource, config: ExportConfig) -> ParityInputs:
    cases = random_cases(source, config.seed)
    if not source.spec.is_classifier:
        return ParityInputs(cases, "random images of several sizes (feature-map model)", None)
    split, note = load_test_split(source, config.data_dir)
    if split is not None:
        cases = dataset_cases(source, split) + cases
    return ParityInputs(cases, note, split)


def _calibration_pixels(source: ExportSource, inputs: ParityInputs, config: ExportConfig) -> np.ndarray:
    if inputs.split is None:
        raise ExportError(
            f"--quantize {config.quantize} calibrates on training images and measures test accuracy, but "
            f"there is no labelled data: {inputs.note}"
        )
    if config.calibration_images < 1:
        raise ExportError(f"--calibration-images must be at least 1, got {config.calibration_images}")
    try:
        train = load_split(inputs.split.dataset, train=True, data_dir=config.data_dir, download=False)
    except DataUnavailableError as exc:
        raise ExportError(f"--quantize needs {inputs.split.dataset} training images for calibration: {exc}") from None
    count = min(config.calibration_images, len(train))
    chosen = np.sort(np.random.default_rng(config.seed).choice(len(train), size=count, replace=False))
    return source.preprocessing.pixels(train.images[torch.as_tensor(chosen)]).numpy()


class _ExportRun:
    """The state one export shares between its steps: what is exported, checked on, and written."""

    def __init__(self, source: ExportSource, inputs: ParityInputs, config: ExportConfig, paths: ArtifactPaths):
        self.source = source
        self.inputs = inputs
        self.config = config
        self.paths = paths
        self.card: ModelCard = build_card(source, config.opset)
        self.logits_output = LOGITS_OUTPUT if source.spec.is_classifier else None
        self.providers: list[str] = []
        self.fp32_report: ParityReport | None = None
        self.accepted = False
        self.result = ExportResult(source.name, paths)
        self.result.summary = {
            "model_name": source.name,
            "onnx_file": str(paths.model),
            "checkpoint": str(source.checkpoint_path) if source.checkpoint_path else "random weights",
            "card": dataclasses.asdict(self.card),
        }

    def _variant_card(self, variant: str, **changes: Any) -> ModelCard:
        """A variant is served beside its model, so it needs a name of its own: lenet.int8, lenet.opt."""
        return dataclasses.replace(
            self.card, model_name=f"{self.card.model_name}.{variant}", variant_of=self.card.model_name, **changes
        )

    def _check(self, path: Path, providers: list[str], enforced: bool = True) -> ParityReport:
        return check_parity(
            path,
            self.inputs.cases,
            providers,
            self.inputs.note,
            self.config.atol,
            self.config.min_top1_agreement,
            self.logits_output,
            enforced,
            PROBABILITIES_OUTPUT if self.logits_output else None,
            self.source.temperature if self.source.spec.is_classifier else None,
        )

    def _install(self, staged: Path, final: Path, report: ParityReport, what: str) -> bool:
        """Give a checked file its real name, or set it aside as rejected; True when installed."""
        if report.passed:
            os.replace(staged, final)
            ArtifactPaths.rejected(final).unlink(missing_ok=True)  # an older failure, now superseded
            report.model_path = str(final)
            return True
        rejected = ArtifactPaths.rejected(final)
        os.replace(staged, rejected)
        report.model_path = str(rejected)
        self.result.failures += [f"{what}: {failure}" for failure in report.failures()]
        self.result.failures.append(f"{what} was not installed as {final}; kept for inspection as {rejected}")
        return False

    def fp32(self) -> None:
        model = export_onnx(self.source, self.config.opset)
        attach_card(model, self.card, self.source.spec.description)
        self.paths.model.parent.mkdir(parents=True, exist_ok=True)
        staged = ArtifactPaths.staged(self.paths.model)
        onnx.save_model(model, staged)
        self.providers = parity_providers(staged, self.config.cpu_only)
        self.result.summary["providers"] = self.providers
        report = self.fp32_report = self._check(staged, self.providers)
        title = f"{self.source.name}: ONNX (opset {self.config.opset}) vs torch {torch.__version__}"
        self.result.tables.append(parity_table(title, report))
        self._compare_recorded_accuracy(report)
        self.accepted = self._install(staged, self.paths.model, report, "the ONNX export")
        self.result.summary["parity"] = report.to_dict()
        if self.accepted:
            self._write_test_data()

    def _compare_recorded_accuracy(self, report: ParityReport) -> None:
        recorded, split = self.source.measured_accuracy, self.inputs.split
        measured = report.providers[0].torch_accuracy
        if recorded is None or split is None or measured is None:
            return
        self.result.summary["checkpoint_test_accuracy"] = recorded
        recorded_images = (self.source.meta.get("metrics") or {}).get("test_images")
        same_split = self.source.measured_dataset == split.dataset and recorded_images in (None, len(split))
        if same_split and 100 * abs(measured - recorded) > RECORDED_ACCURACY_WARNING:
            log.warning(
                "%s: torch accuracy on %s here is %.2f%% but the checkpoint recorded %.2f%%: the "
                "preprocessing used for export may differ from training's",
                self.source.name, split.dataset, 100 * measured, 100 * recorded,
            )

    def _write_test_data(self) -> None:
        # Real digits when there are any (a backend's author can look at them), else a random batch.
        case = self.inputs.cases[0]
        batch = slice(0, TEST_DATA_IMAGES)
        set_dir = write_test_data(
            self.paths.test_data_dir,
            input_name(self.source),
            case.inputs[batch],
            {name: value[batch] for name, value in case.reference.items()},
        )
        differences = validate_test_data(self.paths.model, set_dir, self.config.atol)
        self.result.summary["test_data"] = {"dir": str(set_dir), "source": case.description, "max_abs_diff": differences}
        log.info("wrote ONNX test data to %s (validated: max abs diff %s)", set_dir, differences)

    def optimized(self) -> None:
        level = self.config.optimize_level
        staged = ArtifactPaths.staged(self.paths.optimized)
        model = save_optimized(self.paths.model, staged, level)
        attach_card(model, self._variant_card("opt"), self.source.spec.description)
        model.doc_string += f" Graph optimised offline by ONNX Runtime ({level} level)."
        if level != "basic":
            model.doc_string += " Runs on ONNX Runtime only (fused contrib operators)."
        onnx.save_model(model, staged)
        report = self._check(staged, self.providers)
        self.result.tables.append(parity_table(f"{self.paths.optimized.name}: ONNX Runtime-optimised ({level}) vs torch", report))
        self._install(staged, self.paths.optimized, report, "the optimised graph")
        self.result.summary["optimized"] = {
            "file": report.model_path,
            "level": level,
            "nodes": len(model.graph.node),
            "parity": report.to_dict(),
        }

    def int8(self, calibration: np.ndarray) -> None:
        staged = ArtifactPaths.staged(self.paths.int8)
        quantize_int8(self.paths.model, staged, input_name(self.source), calibration)
        # INT8 is judged on accuracy, not on atol: its differences from torch are measured, not enforced.
        report = self._check(staged, [CPU], enforced=False)
        fp32_accuracy = self.fp32_report.providers[0].onnx_accuracy
        int8_accuracy = report.providers[0].onnx_accuracy
        images = report.providers[0].images
        drop_points = 100 * (fp32_accuracy - int8_accuracy)
        # Timed on test digits (the first dataset case): the inputs a server sees.
        speeds = compare_speed(open_session(self.paths.model, CPU), open_session(staged, CPU), self.inputs.cases[0].inputs)
        limit = self.config.max_accuracy_drop
        self.result.tables.append(
            int8_table(
                f"{self.paths.int8.name}: static INT8 (QDQ) vs FP32, both in ONNX Runtime",
                fp32_accuracy, int8_accuracy, images, limit, speeds,
            )
        )
        dataset = self.inputs.split.dataset
        model = onnx.load(staged)
        int8_card = self._variant_card("int8", test_accuracy=int8_accuracy, dataset=dataset)
        attach_card(model, int8_card, self.source.spec.description)
        model.doc_string += (
            f" Static INT8 quantization (QDQ, per-channel int8 weights, uint8 activations) calibrated on "
            f"{len(calibration)} {dataset} training images; test accuracy {100 * int8_accuracy:.2f}% "
            f"(FP32 {100 * fp32_accuracy:.2f}%)."
        )
        onnx.save_model(model, staged)
        passed = drop_points <= limit
        report.model_path = str(self.paths.int8 if passed else ArtifactPaths.rejected(self.paths.int8))
        os.replace(staged, report.model_path)
        if not passed:
            self.result.failures.append(
                f"INT8 test accuracy {100 * int8_accuracy:.2f}% is {drop_points:.2f} points below FP32 "
                f"({100 * fp32_accuracy:.2f}%), more than the allowed {limit:g}; kept for inspection as "
                f"{report.model_path}"
            )
        self.result.summary["int8"] = {
            "file": report.model_path,
            "calibration_images": len(calibration),
            "fp32_accuracy": fp32_accuracy,
            "int8_accuracy": int8_accuracy,
            "test_images": images,
            "accuracy_drop_points": drop_points,
            "max_accuracy_drop_points": limit,
            "passed": passed,
            "speed": [dataclasses.asdict(speed) | {"speedup": speed.speedup} for speed in speeds],
            "difference_from_torch": report.to_dict(),
        }

    def write_summary(self, path: Path) -> None:
        self.result.summary["passed"] = self.result.passed
        self.result.summary["failures"] = self.result.failures
        path.write_text(json.dumps(self.result.summary, indent=2) + "\n")
        log.info("wrote the parity report to %s", path)
