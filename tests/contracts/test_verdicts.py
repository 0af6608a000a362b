import numpy as np
import pytest

from contracts.errors import InvalidInput
from contracts.model_card import CLASSIFICATION, ModelCard
from contracts.verdicts import (
    DEFAULT_THRESHOLDS,
    Verdict,
    VerdictThresholds,
    blank_inputs,
    judge,
    judge_table,
)

LABELS = [str(d) for d in range(10)]
THRESHOLDS = VerdictThresholds(min_confidence=0.7, min_margin=0.2, no_digit_below=0.3)


def probabilities_with(top: dict[int, float]) -> np.ndarray:
    row = np.full(10, (1.0 - sum(top.values())) / (10 - len(top)))
    for digit, value in top.items():
        row[digit] = value
    return row


def verdict_of(top: dict[int, float], blank: bool = False, **kwargs):
    return judge(probabilities_with(top)[None], np.array([blank]), THRESHOLDS, LABELS, **kwargs)[0]


def test_a_confident_answer_is_a_digit():
    answer = verdict_of({4: 0.95})
    assert (answer.verdict, answer.candidates) == (Verdict.DIGIT, (4,))
    assert "4" in answer.reason


def test_a_blank_input_has_no_digit_whatever_the_model_says():
    answer = verdict_of({1: 0.99}, blank=True)
    assert answer.verdict is Verdict.NO_DIGIT and "no ink" in answer.reason


def test_a_flat_distribution_has_no_digit():
    assert verdict_of({}).verdict is Verdict.NO_DIGIT


def test_low_confidence_is_unsure_between_the_best_two():
    answer = verdict_of({4: 0.5, 9: 0.4})
    assert (answer.verdict, answer.candidates) == (Verdict.UNSURE, (4, 9))
    assert "4" in answer.reason and "9" in answer.reason


def test_two_close_classes_are_unsure_even_when_confident_enough():
    answer = verdict_of({7: 0.55, 1: 0.44}, min_confidence=0.5)
    assert (answer.verdict, answer.candidates) == (Verdict.UNSURE, (7, 1))


def test_a_callers_min_confidence_overrides_the_cards():
    assert verdict_of({4: 0.6}).verdict is Verdict.UNSURE
    assert verdict_of({4: 0.6}, min_confidence=0.5).verdict is Verdict.DIGIT
    assert verdict_of({4: 0.95}, min_confidence=0.99).verdict is Verdict.UNSURE
    # Zero accepts every inked image, even one the thresholds call no digit.
    assert verdict_of({4: 0.2}, min_confidence=0.0).verdict is Verdict.DIGIT


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_min_confidence_outside_zero_one_is_invalid_input(bad):
    with pytest.raises(InvalidInput, match="min_confidence"):
        verdict_of({4: 0.9}, min_confidence=bad)


def test_blank_inputs_finds_images_without_ink():
    pixels = np.zeros((3, 1, 28, 28), dtype=np.float32)
    pixels[1, 0, 5, 5] = 0.5
    np.testing.assert_array_equal(blank_inputs(pixels), [True, False, True])


def test_thresholds_come_from_the_card_or_the_defaults():
    card = ModelCard("m", CLASSIFICATION, "pixels", ["probabilities"], [28, 28], verdict_thresholds=THRESHOLDS.to_meta())
    assert VerdictThresholds.from_card(card) == THRESHOLDS
    restored = ModelCard.from_metadata_props(card.to_metadata_props())
    assert VerdictThresholds.from_card(restored) == THRESHOLDS
    assert VerdictThresholds.from_card(None) == DEFAULT_THRESHOLDS
    plain = ModelCard("m", CLASSIFICATION, "pixels", ["probabilities"], [28, 28])
    assert VerdictThresholds.from_card(plain) == DEFAULT_THRESHOLDS


def test_thresholds_outside_zero_one_are_rejected():
    with pytest.raises(ValueError, match="min_margin"):
        VerdictThresholds(min_confidence=0.5, min_margin=2.0, no_digit_below=0.1)


@pytest.mark.parametrize("images", [3, 200])  # both paths: row by row below 16 images, numpy above
@pytest.mark.parametrize("min_confidence", [None, 0.0, 0.9])
def test_the_table_judges_every_image_as_judge_does(images, min_confidence):
    rng = np.random.default_rng(images)
    logits = rng.normal(0.0, 2.0, size=(images, 10))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities[::7] = 0.1  # flat rows: ties everywhere
    probabilities[1, :2] = [0.45, 0.45]  # a tie at the top
    # Top probabilities at half cents, where rounding the product and formatting the value disagree
    # (0.075 * 100 rounds to 8, 0.075 formats as 0.07), and a hair either side of them.
    for row, top in zip(range(2, images, 5), [0.075, 0.815, 0.985, 0.995, 0.815 + 1e-12, 0.815 - 1e-12, 1.0]):
        probabilities[row] = top / 4
        probabilities[row, row % 10] = top
    blank = rng.random(images) < 0.2
    labels = [f"digit {d}" for d in range(10)]
    table = judge_table(probabilities, blank, THRESHOLDS, labels, min_confidence)
    expected = judge(probabilities, blank, THRESHOLDS, labels, min_confidence)
    assert [table[i] for i in range(len(table))] == expected
    if images > 16 and min_confidence is None:  # the comparison covered every verdict
        assert {v.verdict for v in expected} == set(Verdict)


def test_the_table_refuses_a_bad_min_confidence_too():
    with pytest.raises(InvalidInput, match="min_confidence"):
        judge_table(np.full((20, 10), 0.1), np.zeros(20, bool), THRESHOLDS, LABELS, min_confidence=2.0)
