"""The comparison engine: it measures the right thing, and a broken export cannot get past it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.cases import dataset_cases, random_cases
from export.errors import CheckFailed
from export.parity import InputCase, abs_diff, check_parity, compare
from export.providers import CPU, open_session, parity_providers


def _perturbed_copy(path, tmp_path, initializer_prefix="model.net.0.weight", delta=0.05):
    """The file with one weight of one initializer changed: an export bug the parity check must catch."""
    model = onnx.load(path)
    target = next(init for init in model.graph.initializer if init.name.startswith(initializer_prefix))
    values = numpy_helper.to_array(target).copy()
    values.flat[0] += delta
    target.CopyFrom(numpy_helper.from_array(values, name=target.name))
    broken = tmp_path / "broken.onnx"
    onnx.save_model(model, broken)
    return broken


def test_abs_diff_treats_nan_honestly():
    got = np.array([1.0, np.nan, np.nan, 2.0], dtype=np.float32)
    expected = np.array([1.5, np.nan, 0.0, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(abs_diff(got, expected), [0.5, 0.0, np.inf, np.inf])


def test_perturbed_weight_is_caught_on_random_inputs(random_export, tmp_path):
    source, path = random_export("lenet-modern")
    broken = _perturbed_copy(path, tmp_path)
    report = check_parity(broken, random_cases(source), [CPU], "random inputs", logits_output="logits")
    assert not report.passed
    failures = " ".join(report.failures())
    assert "output 'logits' differs from torch by" in failures
    assert "on CPUExecutionProvider, at item" in failures and "of the random batch of" in failures
    with pytest.raises(CheckFailed, match="parity check failed.*'logits'"):
        report.raise_on_failure("the test export")


def test_perturbed_weight_is_caught_on_mnist_with_the_image_named(random_export, tmp_path, mnist_test):
    source, path = random_export("lenet")
    broken = _perturbed_copy(path, tmp_path, delta=0.5)
    cases = dataset_cases(source, mnist_test.head(300), chunk=100)
    report = check_parity(broken, cases, [CPU], "mnist", logits_output="logits")
    logits = next(diff for diff in report.providers[0].outputs if diff.output == "logits")
    assert logits.max_abs_diff > 1e-3
    assert logits.worst_input.startswith("mnist test image #")
    assert 0 <= int(logits.worst_input.split("#")[1]) < 300


def test_clean_export_passes_on_mnist_with_accuracy_in_both(random_export, mnist_test):
    source, path = random_export("lenet")
    cases = dataset_cases(source, mnist_test.head(250), chunk=100)
    assert [case.description for case in cases] == ["mnist test images 0-99", "mnist test images 100-199", "mnist test images 200-249"]
    report = check_parity(path, cases, [CPU], "mnist", logits_output="logits")
    assert report.passed, report.failures()
    cpu = report.providers[0]
    assert cpu.images == 250 and cpu.top1.total == 250
    assert cpu.torch_accuracy == cpu.onnx_accuracy


def test_top1_disagreement_fails_and_names_the_image(random_export):
    source, path = random_export("lenet")
    case = random_cases(source, seed=0)[1]
    # A reference that prefers another class on item 2; the loose atol leaves top-1 as the only failure.
    reference = {name: value.copy() for name, value in case.reference.items()}
    order = np.argsort(reference["logits"][2])
    reference["logits"][2, order[-2]] = reference["logits"][2, order[-1]] + 1e-5
    tampered = InputCase(case.description, case.inputs, reference, case.label_item)
    report = check_parity(path, [tampered], [CPU], "random", atol=1.0, logits_output="logits")
    assert report.providers[0].top1.agreeing == 6
    [failure] = report.failures()
    assert "top-1 agreement with torch is 85.714%" in failure and "item 2 of the random batch of 7" in failure


def test_shape_mismatch_is_a_clear_failure(random_export):
    source, path = random_export("lenet")
    case = random_cases(source)[1]
    wrong = InputCase("a batch", case.inputs, {"logits": case.reference["logits"][:, :9]}, case.label_item)
    with pytest.raises(CheckFailed, match=r"'logits' has shape \(7, 10\) in ONNX Runtime but \(7, 9\) in torch"):
        compare(open_session(path), [wrong], CPU)


def test_providers_that_do_not_start_are_not_claimed(random_export):
    """Only providers a session really runs on count (here: CUDA only if it truly works)."""
    _, path = random_export("edge")
    providers = parity_providers(path)
    assert providers[0] == CPU
    for provider in providers:
        assert open_session(path, provider).get_providers()[0] == provider
    assert parity_providers(path, cpu_only=True) == [CPU]
