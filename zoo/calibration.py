"""After training: a temperature that makes the probabilities honest, and verdict thresholds measured on held-out images.

Temperature scaling (Guo et al., 2017) divides every logit by one number T fitted on images the
model never trained on, minimising their negative log-likelihood. It changes no prediction (the
ranking of the classes stays), only how sure the probabilities claim to be; a network trained
to near-zero loss is over-confident and gets T > 1.

The verdict thresholds (contracts.verdicts) are then chosen on the calibrated probabilities of
held-out digits and held-out non-digits: as many non-digits refused as possible while at most a
small share of digits are. Everything here is numpy, on logits computed once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.calibration import (
    auroc,
    expected_calibration_error,
    risk_coverage,
    softmax,
)
from contracts.verdicts import VerdictThresholds

# Inverse temperatures searched: T from 1/20 to 100 covers any network worth calibrating.
_INVERSE_TEMPERATURE_RANGE = (0.01, 20.0)
_SEARCH_TOLERANCE = 1e-7
# Share of held-out digits the thresholds may refuse in all, and of those as "no digit".
DIGIT_REFUSAL_BUDGET = 0.005
NO_DIGIT_BUDGET = 0.0025
# Candidate splits of the refusal budget between the confidence and the margin thresholds.
_BUDGET_SPLITS = 21


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean -log softmax(logits / T)[label]."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the NLL of softmax(logits / T) on (held-out) logits and labels.

    The NLL is convex in the inverse temperature 1/T (a log-sum-exp of a linear function minus a
    linear function), so a golden-section search over 1/T finds the global minimum.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need N x C logits and N labels, got {logits.shape} and {labels.shape}")
    low, high = _INVERSE_TEMPERATURE_RANGE
    ratio = (np.sqrt(5.0) - 1) / 2

    def loss(inverse: float) -> float:
        return negative_log_likelihood(logits, labels, 1.0 / inverse)

    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    while b - a > _SEARCH_TOLERANCE * (1 + abs(a)):
        if loss_c < loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - ratio * (b - a)
            loss_c = loss(c)
        else:
            a, c, loss_c = c, d, loss_d
            d = a + ratio * (b - a)
            loss_d = loss(d)
    return float(2.0 / (a + b))


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """ECE (15 bins) and NLL before (T = 1) and after scaling by `temperature`."""
    return {
        "images": len(labels),
        "ece_before": expected_calibration_error(softmax(logits), labels),
        "ece_after": expected_calibration_error(softmax(logits, temperature), labels),
        "nll_before": negative_log_likelihood(logits, labels, 1.0),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
    }


def top_two(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top probability and its margin over the runner-up."""
    ranked = -np.sort(-np.asarray(probabilities, dtype=np.float64), axis=1)
    return ranked[:, 0], ranked[:, 0] - ranked[:, 1]


def _highest_threshold_refusing_at_most(values: np.ndarray, share: float) -> float:
    """The largest t such that at most `share` of `values` lie strictly below t."""
    ordered = np.sort(values)
    allowed = math.floor(share * len(ordered))
    return float(ordered[allowed]) if allowed < len(ordered) else 1.0


@dataclass(frozen=True)
class ThresholdChoice:
    thresholds: VerdictThresholds
    summary: dict[str, Any]


def choose_thresholds(
    digit_probabilities: np.ndarray,
    digit_labels: np.ndarray,
    outlier_probabilities: np.ndarray,
    refusal_budget: float = DIGIT_REFUSAL_BUDGET,
    no_digit_budget: float = NO_DIGIT_BUDGET,
) -> ThresholdChoice:
    """Thresholds refusing at most `refusal_budget` of the digits and as many outliers as that allows.

    `no_digit_below` refuses at most `no_digit_budget` of the digits on the top probability alone.
    The rest of the budget is split between `min_confidence` (top probability) and `min_margin`
    (top minus runner-up) in every proportion of a small grid; the split that refuses the most
    outliers (as no_digit or unsure) wins, ties going to the larger confidence threshold.
    """
    digit_top, digit_margin = top_two(digit_probabilities)
    outlier_top, outlier_margin = top_two(outlier_probabilities)
    no_digit_below = _highest_threshold_refusing_at_most(digit_top, min(no_digit_budget, refusal_budget))
    best: tuple[int, float, float] | None = None
    for share in np.linspace(0.0, refusal_budget, _BUDGET_SPLITS):
        min_confidence = max(_highest_threshold_refusing_at_most(digit_top, float(share)), no_digit_below)
        passed = digit_top >= min_confidence
        # The margin may refuse what is left of the budget among the digits the confidence passed.
        remaining = refusal_budget * len(digit_top) - int((~passed).sum())
        margins = np.sort(digit_margin[passed])
        allowed = math.floor(max(remaining, 0))
        min_margin = float(margins[allowed]) if allowed < len(margins) else 1.0
        refused = int(((outlier_top < min_confidence) | (outlier_margin < min_margin)).sum())
        if best is None or refused > best[0] or (refused == best[0] and min_confidence > best[1]):
            best = (refused, min_confidence, min_margin)
    _, min_confidence, min_margin = best
    thresholds = VerdictThresholds(min_confidence=min_confidence, min_margin=min_margin, no_digit_below=no_digit_below)
    return ThresholdChoice(thresholds, refusal_summary(digit_probabilities, digit_labels, outlier_probabilities, thresholds))


def refusal_summary(
    digit_probabilities: np.ndarray,
    digit_labels: np.ndarray,
    outlier_probabilities: np.ndarray,
    thresholds: VerdictThresholds,
) -> dict[str, Any]:
    """What `thresholds` do to held-out digits and outliers: refusals, coverage and risk, separation."""
    digit_top, digit_margin = top_two(digit_probabilities)
    outlier_top, outlier_margin = top_two(outlier_probabilities)
    digit_refused = (digit_top < thresholds.min_confidence) | (digit_margin < thresholds.min_margin)
    outlier_refused = (outlier_top < thresholds.min_confidence) | (outlier_margin < thresholds.min_margin)
    correct = np.asarray(digit_probabilities).argmax(axis=1) == np.asarray(digit_labels)
    answered = ~digit_refused
    curve = risk_coverage(digit_top, correct)
    return {
        "digits": len(digit_top),
        "outliers": len(outlier_top),
        "digits_refused": float(digit_refused.mean()),
        "digits_no_digit": float((digit_top < thresholds.no_digit_below).mean()),
        "outliers_refused": float(outlier_refused.mean()),
        "outliers_no_digit": float((outlier_top < thresholds.no_digit_below).mean()),
        "auroc_top_probability": auroc(digit_top, outlier_top),
        "coverage": float(answered.mean()),
        "risk": float((~correct[answered]).mean()) if answered.any() else 0.0,
        "risk_at_full_coverage": float(curve.risk[-1]),
    }
