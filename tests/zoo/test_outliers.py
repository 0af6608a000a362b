"""The generated non-digits: reproducible, free of digit lookalikes, in MNIST's format."""
from __future__ import annotations

import numpy as np
import pytest

from contracts.digit_format import DIGIT_BOX, DIGIT_CENTRE, centre_of_mass
from zoo import outliers
from zoo.outliers import DIGIT_LOOKALIKES, GLYPHS, make_outliers

# Glyphs that must never be drawn: they read as 0, 1, 2, 5, 6, 8 or 9.
MUST_EXCLUDE = set("OoQIl|iSsZzBgq0123456789")


@pytest.fixture(scope="module")
def pool():
    return make_outliers(300, seed=5)


def test_same_seed_same_images_other_seed_other_images(pool):
    again = make_outliers(300, seed=5)
    assert np.array_equal(pool.images, again.images) and pool.kinds == again.kinds
    assert not np.array_equal(pool.images, make_outliers(300, seed=6).images)


def test_no_digit_lookalike_is_drawn():
    assert MUST_EXCLUDE <= DIGIT_LOOKALIKES
    assert not set(GLYPHS) & DIGIT_LOOKALIKES
    assert len(GLYPHS) >= 40


def test_images_are_in_mnist_format(pool):
    assert pool.images.dtype == np.uint8 and pool.images.shape == (300, 28, 28)
    for image in pool.images:
        ink = image.astype(np.float32) / 255
        rows, cols = np.nonzero(ink)
        assert len(rows), "a blank outlier"
        # The pipeline fits the longer side into the 20-pixel box (its filters may spill by a pixel).
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= DIGIT_BOX + 2
        row, col = centre_of_mass(ink)
        assert abs(row - DIGIT_CENTRE) <= 1.0 and abs(col - DIGIT_CENTRE) <= 1.0
        assert image.max() >= 200


def test_pool_mixes_glyphs_and_shapes(pool):
    kinds = set(pool.kinds)
    assert {"glyph", "pair"} & kinds and len(kinds) >= 6


def test_without_the_dejavu_fonts_pillows_font_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(outliers, "DEJAVU_DIR", tmp_path)
    outliers.available_faces.cache_clear()
    try:
        assert outliers.available_faces() == (None,)
        fallback = make_outliers(20, seed=1)
        assert fallback.images.shape == (20, 28, 28) and all(image.max() > 0 for image in fallback.images)
    finally:
        outliers.available_faces.cache_clear()
