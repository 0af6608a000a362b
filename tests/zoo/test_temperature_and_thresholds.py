"""Temperature scaling and the verdict thresholds chosen after training."""
from __future__ import annotations

import numpy as np
import pytest

from contracts.calibration import expected_calibration_error, softmax
from zoo.calibration import (
    choose_thresholds,
    fit_temperature,
    negative_log_likelihood,
    top_two,
)


def _labels_drawn_from(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cumulative = probabilities.cumsum(axis=1)
    return (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1).clip(0, probabilities.shape[1] - 1)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (20_000, 10))
    labels = _labels_drawn_from(softmax(logits, true_temperature), rng)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    # The fitted T is the NLL's minimum: a step either way does worse.
    nll = negative_log_likelihood(logits, labels, fitted)
    assert nll <= negative_log_likelihood(logits, labels, fitted * 1.05)
    assert nll <= negative_log_likelihood(logits, labels, fitted / 1.05)
    assert expected_calibration_error(softmax(logits, fitted), labels) < 0.02


def test_fit_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 10)), np.zeros(4, dtype=int))


def _digits_and_outliers(rng):
    digit_logits = rng.normal(0.0, 1.0, (4000, 10))
    labels = rng.integers(0, 10, 4000)
    digit_logits[np.arange(4000), labels] += rng.uniform(5.0, 12.0, 4000)
    outlier_logits = rng.normal(0.0, 1.0, (1000, 10))
    outlier_logits[:200, 0] += 8.0  # a fifth of the outliers look like confident zeros
    return softmax(digit_logits), labels, softmax(outlier_logits)


def test_thresholds_refuse_at_most_the_budget_of_digits_and_most_outliers():
    digits, labels, outlier_probabilities = _digits_and_outliers(np.random.default_rng(1))
    choice = choose_thresholds(digits, labels, outlier_probabilities, refusal_budget=0.01, no_digit_budget=0.005)
    thresholds = choice.thresholds
    top, margin = top_two(digits)
    refused = (top < thresholds.min_confidence) | (margin < thresholds.min_margin)
    assert refused.mean() <= 0.01 and (top < thresholds.no_digit_below).mean() <= 0.005
    assert thresholds.no_digit_below <= thresholds.min_confidence
    assert choice.summary["digits_refused"] == pytest.approx(refused.mean())
    # The flat outliers (four fifths) are refused; the confident ones cannot be without refusing digits.
    assert 0.75 <= choice.summary["outliers_refused"] <= 0.85
    assert choice.summary["auroc_top_probability"] > 0.7
    assert 0.99 <= choice.summary["coverage"] <= 1.0


def test_a_larger_budget_refuses_at_least_as_many_outliers():
    digits, labels, outlier_probabilities = _digits_and_outliers(np.random.default_rng(2))
    small = choose_thresholds(digits, labels, outlier_probabilities, refusal_budget=0.002, no_digit_budget=0.001)
    large = choose_thresholds(digits, labels, outlier_probabilities, refusal_budget=0.05, no_digit_budget=0.02)
    assert large.summary["outliers_refused"] >= small.summary["outliers_refused"]
    assert large.thresholds.min_confidence >= small.thresholds.min_confidence
