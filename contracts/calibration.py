"""How far a classifier's probabilities can be trusted: calibration error, separation and risk-coverage.

Torch-free numpy, shared by training (which fits the temperature and chooses the verdict
thresholds), export (which reports calibration in its parity report) and the benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64 for stable sums."""
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    np.exp(scaled, out=scaled)
    return scaled / scaled.sum(axis=1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean over equal-width confidence bins of |accuracy - confidence|, weighted by the bin's share.

    The confidence of an image is its top probability; the bins split [0, 1] into `bins` equal parts
    (the usual 15), and empty bins count nothing.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or len(labels) == 0:
        raise ValueError(f"need N x C probabilities and N labels, got {probabilities.shape} and {labels.shape}")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins the first bin.
    bin_index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap_sums = np.bincount(bin_index, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap_sums).sum() / len(labels))


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties half)."""
    positive = np.asarray(positive_scores, dtype=np.float64).ravel()
    negative = np.asarray(negative_scores, dtype=np.float64).ravel()
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    scores = np.concatenate([positive, negative])
    # Mann-Whitney U from average ranks, so tied scores count one half.
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    sorted_scores = scores[order]
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        if end - start > 1:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
    rank_sum = ranks[: len(positive)].sum()
    u_statistic = rank_sum - len(positive) * (len(positive) + 1) / 2.0
    return float(u_statistic / (len(positive) * len(negative)))


@dataclass(frozen=True)
class RiskCoverage:
    """At each threshold on the score: the share of images answered (coverage) and the error among them (risk)."""

    thresholds: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray


def risk_coverage(scores: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Answering only images whose score is >= t, for every distinct score t (highest first)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    errors = np.cumsum(~correct[order])
    answered = np.arange(1, len(scores) + 1)
    # Keep the last position of each run of equal scores: a threshold answers all of them or none.
    last = np.concatenate([np.flatnonzero(np.diff(sorted_scores)), [len(scores) - 1]])
    return RiskCoverage(
        thresholds=sorted_scores[last],
        coverage=answered[last] / len(scores),
        risk=errors[last] / answered[last],
    )
