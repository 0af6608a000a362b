"""The comparison engine: ONNX Runtime outputs against the PyTorch reference, output by output.

Pure functions over numpy arrays and an ONNX Runtime session; no CLI, no files. For every output it
keeps the largest absolute and relative difference and the input item where the largest absolute
one occurred, so a failure can say which output, by how much, and on which input.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from contracts.calibration import expected_calibration_error, softmax
from export.errors import CheckFailed
from export.providers import open_session

DEFAULT_ATOL = 1e-4
DEFAULT_MIN_TOP1_AGREEMENT = 100.0  # percent
# Relative differences are taken against max(|torch|, this floor): a logit of 4e-5 that differs
# by 1e-5 is float32 rounding after cancellation, not a 25% error worth a reader's attention.
REL_DIFF_FLOOR = 1e-3
# How many top-1 disagreements a report lists by name.
LISTED_DISAGREEMENTS = 5


@dataclass
class InputCase:
    """A batch of graph inputs with the torch outputs for it, and how to name one of its items."""

    description: str
    inputs: np.ndarray
    reference: dict[str, np.ndarray]
    label_item: Callable[[int], str]
    targets: np.ndarray | None = None  # true classes, for test accuracy


@dataclass
class OutputDiff:
    output: str
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    worst_input: str = ""  # where the largest absolute difference occurred; empty when all are 0
    elements: int = 0


@dataclass
class Top1Agreement:
    agreeing: int = 0
    total: int = 0
    disagreements: list[str] = field(default_factory=list)  # the first few, named

    @property
    def percent(self) -> float:
        return 100.0 * self.agreeing / self.total if self.total else 100.0


@dataclass
class ProviderParity:
    provider: str
    outputs: list[OutputDiff]
    top1: Top1Agreement | None = None
    images: int = 0  # how many labelled images the accuracies are measured on
    torch_accuracy: float | None = None
    onnx_accuracy: float | None = None
    # Expected calibration error (15 bins) on the labelled images, from this provider's outputs: of the
    # plain softmax of the logits (uncalibrated) and of the graph's probabilities (softmax(logits / T)).
    ece_uncalibrated: float | None = None
    ece_calibrated: float | None = None


@dataclass
class ParityReport:
    model_path: str
    atol: float
    min_top1_agreement: float
    inputs: list[str]  # descriptions of what was compared
    dataset_note: str  # which labelled test set was used, or why none was
    providers: list[ProviderParity]
    # False for a report that only measures (INT8 is judged on accuracy, not on atol).
    enforced: bool = True
    # The temperature the probabilities output divides the logits by (None: uncalibrated).
    temperature: float | None = None

    def failures(self) -> list[str]:
        messages: list[str] = []
        if not self.enforced:
            return messages
        for result in self.providers:
            for diff in result.outputs:
                if not diff.max_abs_diff <= self.atol:
                    messages.append(
                        f"output {diff.output!r} differs from torch by {diff.max_abs_diff:.3g} (tolerance "
                        f"{self.atol:g}) on {result.provider}, at {diff.worst_input}"
                    )
            top1 = result.top1
            if top1 is not None and top1.percent < self.min_top1_agreement:
                messages.append(
                    f"top-1 agreement with torch is {top1.percent:.3f}% ({top1.total - top1.agreeing} of "
                    f"{top1.total} differ; required {self.min_top1_agreement:g}%) on {result.provider}: "
                    + "; ".join(top1.disagreements)
                )
        return messages

    @property
    def passed(self) -> bool:
        return not self.failures()

    def raise_on_failure(self, what: str) -> None:
        failures = self.failures()
        if failures:
            raise CheckFailed(f"parity check failed for {what} ({self.model_path}): " + " | ".join(failures))

    def to_dict(self) -> dict:
        result = asdict(self)
        for provider, as_dict in zip(self.providers, result["providers"]):
            if provider.top1 is not None:
                as_dict["top1"]["percent"] = provider.top1.percent
        result["passed"] = self.passed
        result["failures"] = self.failures()
        return result


def run_session(session: ort.InferenceSession, inputs: np.ndarray) -> dict[str, np.ndarray]:
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: np.ascontiguousarray(inputs, dtype=np.float32)})
    return dict(zip(names, values))


def abs_diff(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|got - expected| with NaN where both are NaN counted as equal, and a NaN on one side as infinite."""
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(got) & np.isnan(expected)
    return np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))


def _update_output(diff_record: OutputDiff, got: np.ndarray, expected: np.ndarray, case: InputCase) -> None:
    if got.shape != expected.shape:
        raise CheckFailed(
            f"output {diff_record.output!r} has shape {got.shape} in ONNX Runtime but {expected.shape} "
            f"in torch, for {case.description}"
        )
    diff = abs_diff(got, expected)
    if diff.size == 0:
        return
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    if diff[worst] > diff_record.max_abs_diff:
        diff_record.max_abs_diff = float(diff[worst])
        diff_record.worst_input = case.label_item(int(worst[0]))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), REL_DIFF_FLOOR)
    diff_record.max_rel_diff = max(diff_record.max_rel_diff, float(np.max(rel)))
    diff_record.elements += int(diff.size)


def compare(
    session: ort.InferenceSession,
    cases: Iterable[InputCase],
    provider: str,
    logits_output: str | None = None,
    probabilities_output: str | None = None,
) -> ProviderParity:
    """Run every case through `session` and compare with its torch outputs.

    `logits_output` names the output whose argmax is the predicted class (classifiers only): it
    drives the top-1 agreement and the test accuracy on labelled cases. With `probabilities_output`
    too, the labelled cases also measure the calibration error before and after the graph's temperature.
    """
    result = ProviderParity(provider, [])
    records: dict[str, OutputDiff] = {}
    top1 = Top1Agreement() if logits_output else None
    torch_correct = onnx_correct = 0
    labelled_logits, labelled_probabilities, labelled_targets = [], [], []
    for case in tqdm(cases, desc=f"parity on {provider}", unit="batch", leave=False, disable=None):
        got = run_session(session, case.inputs)
        missing = set(case.reference) - set(got)
        if missing:
            raise CheckFailed(f"the ONNX model has no output(s) {sorted(missing)}; it has {sorted(got)}")
        for name, expected in case.reference.items():
            record = records.setdefault(name, OutputDiff(name))
            _update_output(record, got[name], expected, case)
        if top1 is None:
            continue
        torch_top1 = case.reference[logits_output].argmax(axis=1)
        onnx_top1 = got[logits_output].argmax(axis=1)
        agree = torch_top1 == onnx_top1
        top1.agreeing += int(agree.sum())
        top1.total += int(agree.size)
        for index in np.flatnonzero(~agree)[: max(0, LISTED_DISAGREEMENTS - len(top1.disagreements))]:
            top1.disagreements.append(
                f"{case.label_item(int(index))} (torch says {torch_top1[index]}, onnx says {onnx_top1[index]})"
            )
        if case.targets is not None:
            torch_correct += int((torch_top1 == case.targets).sum())
            onnx_correct += int((onnx_top1 == case.targets).sum())
            result.images += int(case.targets.size)
            if probabilities_output is not None:
                labelled_logits.append(got[logits_output])
                labelled_probabilities.append(got[probabilities_output])
                labelled_targets.append(case.targets)
    result.outputs = list(records.values())
    result.top1 = top1
    if result.images:
        result.torch_accuracy = torch_correct / result.images
        result.onnx_accuracy = onnx_correct / result.images
    if labelled_targets:
        targets = np.concatenate(labelled_targets)
        result.ece_uncalibrated = expected_calibration_error(softmax(np.concatenate(labelled_logits)), targets)
        result.ece_calibrated = expected_calibration_error(np.concatenate(labelled_probabilities), targets)
    return result


def check_parity(
    model_path: str | Path,
    cases: list[InputCase],
    providers: list[str],
    dataset_note: str,
    atol: float = DEFAULT_ATOL,
    min_top1_agreement: float = DEFAULT_MIN_TOP1_AGREEMENT,
    logits_output: str | None = None,
    enforced: bool = True,
    probabilities_output: str | None = None,
    temperature: float | None = None,
) -> ParityReport:
    """Compare the model file with torch on every case, once per execution provider."""
    results = [
        compare(open_session(model_path, provider), cases, provider, logits_output, probabilities_output)
        for provider in providers
    ]
    return ParityReport(
        model_path=str(model_path),
        atol=atol,
        min_top1_agreement=min_top1_agreement,
        inputs=[case.description for case in cases],
        dataset_note=dataset_note,
        providers=results,
        enforced=enforced,
        temperature=temperature,
    )
