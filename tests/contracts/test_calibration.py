import numpy as np
import pytest

from contracts.calibration import (
    auroc,
    expected_calibration_error,
    risk_coverage,
    softmax,
)


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    sharp, flat = softmax(logits), softmax(logits, temperature=4.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0)
    assert flat[0, 0] < sharp[0, 0]
    np.testing.assert_allclose(sharp[1], 1 / 3)


def test_ece_of_a_calibrated_set_is_zero_and_of_an_overconfident_one_the_gap():
    # Four images at confidence 0.75, three right: calibrated.
    probabilities = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probabilities, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    # Confidence 0.95, half right: a gap of 0.45.
    probabilities = np.array([[0.95, 0.05]] * 4)
    assert expected_calibration_error(probabilities, np.array([0, 1, 0, 1])) == pytest.approx(0.45)


def test_ece_weighs_bins_by_their_share():
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    labels = np.array([0, 0, 0, 0])  # bin 0.95: gap 0.05; bin 0.55: gap 0.45
    assert expected_calibration_error(probabilities, labels) == pytest.approx((0.05 + 0.45) / 2)


def test_auroc_perfect_inverted_and_tied():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    assert auroc([0.9, 0.3], [0.5]) == 0.5


def test_risk_coverage_answers_the_highest_scores_first():
    curve = risk_coverage(np.array([0.9, 0.8, 0.8, 0.2]), np.array([True, True, False, False]))
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.2])
    np.testing.assert_allclose(curve.coverage, [0.25, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 1 / 3, 0.5])
