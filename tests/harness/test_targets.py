"""The comparator of benchmark targets: figures read off rows by id, thresholds, and rounds summarised."""
from __future__ import annotations

import pytest

from harness.targets import MEDIAN, WORST, Metric, Target, by_id, over_rounds

ROWS = by_id([
    {"id": "fast", "scenario": "a fast scenario", "images_per_s": 300.0, "errors": 0, "latency_ms": {"p99_ms": 12.0}},
    {"id": "slow", "scenario": "a slow scenario", "images_per_s": 100.0, "errors": 2, "latency_ms": {"p99_ms": 0.0}},
])


@pytest.mark.parametrize("operator, threshold, met", [
    (">=", 3, True), (">=", 3.01, False), (">", 3, False), (">", 2.9, True),
    ("<=", 3, True), ("<", 3, False), ("==", 3, True), ("==", 2, False),
])
def test_a_ratio_of_two_rows_meets_its_threshold_by_its_operator(operator, threshold, met):
    target = Target("fast_vs_slow", Metric("images_per_s", "fast", over="slow"), operator, threshold, "fast over slow")
    verdict = target.evaluate(ROWS)
    assert verdict == {"id": "fast_vs_slow", "target": "fast over slow", "operator": operator, "threshold": threshold,
                       "value": 3.0, "met": met}


def test_a_field_is_read_by_its_dotted_path():
    target = Target("fast_p99", Metric("latency_ms.p99_ms", "fast"), "<", 20, "fast p99 < 20 ms")
    assert target.evaluate(ROWS)["value"] == 12.0 and target.evaluate(ROWS)["met"]


def test_a_missing_row_gives_no_verdict_and_a_figure_that_cannot_be_made_misses():
    assert Target("x", Metric("images_per_s", "fast", over="absent"), ">=", 1, "x").evaluate(ROWS) is None
    over_zero = Target("y", Metric("latency_ms.p99_ms", "fast", over="slow"), ">=", 1, "y").evaluate(ROWS)
    assert over_zero["value"] is None and over_zero["met"] is False


def test_a_figure_without_threshold_is_reported_without_verdict():
    verdict = Target("info", Metric("images_per_s", "slow"), None, None, "info").evaluate(ROWS)
    assert verdict["value"] == 100.0 and verdict["met"] is None


def test_a_target_refuses_an_unknown_operator_or_a_threshold_without_one():
    with pytest.raises(ValueError, match="operator"):
        Target("bad", Metric("errors", "fast"), "=>", 1, "bad")
    with pytest.raises(ValueError, match="threshold"):
        Target("bad", Metric("errors", "fast"), None, 1, "bad")


def test_rows_must_have_distinct_ids():
    with pytest.raises(ValueError, match="fast"):
        by_id([{"id": "fast"}, {"id": "fast"}])


def test_rounds_are_summarised_by_the_median_round_or_by_the_worst():
    ratio_target = Target("gain", Metric("images_per_s", "fast", over="slow"), ">=", 2, "gain", summary=MEDIAN)
    errors_target = Target("errors", Metric("errors", "fast"), "==", 0, "zero errors", summary=WORST)
    targets = {target.id: target for target in (ratio_target, errors_target)}
    rounds = [
        by_id([{"id": "fast", "images_per_s": 150.0, "errors": 0}, {"id": "slow", "images_per_s": 100.0}]),
        by_id([{"id": "fast", "images_per_s": 300.0, "errors": 3}, {"id": "slow", "images_per_s": 100.0}]),
        by_id([{"id": "fast", "images_per_s": 250.0, "errors": 0}, {"id": "slow", "images_per_s": 100.0}]),
    ]
    per_round = [[target.evaluate(rows) for target in targets.values()] for rows in rounds]
    gain, errors = over_rounds(targets, per_round)
    assert gain["rounds"] == [1.5, 3.0, 2.5] and gain["value"] == 2.5 and gain["met"], "met in two rounds of three"
    assert errors["rounds"] == [0, 3, 0] and errors["value"] == 3 and errors["met"] is False, "one bad round decides"


def test_rounds_that_judged_different_targets_are_refused():
    first = Target("a", Metric("errors", "fast"), "==", 0, "a")
    second = Target("b", Metric("errors", "slow"), "==", 0, "b")
    with pytest.raises(ValueError, match="different targets"):
        over_rounds({"a": first, "b": second}, [[first.evaluate(ROWS)], [second.evaluate(ROWS)]])
