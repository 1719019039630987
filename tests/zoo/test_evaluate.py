import numpy as np
import pytest

from cmhash.errors import InvalidInputError
from cmhash.runtime.codes import pack
from cmhash.runtime.metrics import mean_average_precision
from cmhash.zoo.baselines import LSH
from cmhash.zoo.evaluate import evaluate_cross_modal


def test_directions_are_not_swapped():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 4)) < 0.4).astype(np.uint8)
    image = rng.standard_normal((60, 32))
    text = rng.standard_normal((60, 32))
    scores, curves = evaluate_cross_modal(image[:20], text[:20], labels[:20], image[20:], text[20:], labels[20:])
    i2t = mean_average_precision(pack(image[:20]), pack(text[20:]), labels[:20], labels[20:])
    t2i = mean_average_precision(pack(text[:20]), pack(image[20:]), labels[:20], labels[20:])
    assert (scores.map_i2t, scores.map_t2i) == (i2t, t2i)
    assert i2t != t2i
    assert set(curves) == {"I→T", "T→I"}


def test_perfect_codes_score_one():
    labels = np.repeat(np.eye(4, dtype=np.uint8), 5, axis=0)
    codes = np.repeat(np.where(np.eye(4, 16) > 0, 1.0, -1.0), 5, axis=0)
    scores, _ = evaluate_cross_modal(codes, codes, labels, codes, codes, labels)
    assert scores.map_i2t == pytest.approx(1.0) and scores.map_t2i == pytest.approx(1.0)


def test_lsh_is_seeded_and_checks_shapes():
    x = np.random.default_rng(1).standard_normal((5, 12))
    np.testing.assert_array_equal(LSH(12, 16, seed=3)(x), LSH(12, 16, seed=3)(x))
    assert not np.array_equal(LSH(12, 16, seed=3)(x), LSH(12, 16, seed=4)(x))
    with pytest.raises(InvalidInputError, match="12-d"):
        LSH(12, 16, seed=0)(np.ones((2, 10)))
