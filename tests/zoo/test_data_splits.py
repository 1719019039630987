"""Split protocols: sizes, invariants, determinism and typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmhash.errors import InvalidInputError
from cmhash.zoo.data.splits import (
    SEED_DHAPH,
    SEED_DMSH_LN,
    Split,
    classic_split,
    clip_split,
    proportional_split,
)

N_MIRFLICKR = 20015  # README: the cleaned MIRFlickr-25K set


def _assert_protocol(split: Split, n: int) -> None:
    split.check(n)  # indices < n, train inside database, query and database disjoint
    assert np.isin(split.val, split.train).all()
    assert np.union1d(split.query, split.database).size == n  # every pair is query or database
    for part in (split.query, split.database, split.train, split.val):
        assert part.dtype == np.int64


def test_seed_constants_match_the_recipes():
    assert (SEED_DHAPH, SEED_DMSH_LN) == (1814, 3407)


@pytest.mark.parametrize("seed", [SEED_DHAPH, SEED_DMSH_LN])
def test_clip_split_is_the_authors_permutation(seed):
    split = clip_split(N_MIRFLICKR, seed)
    perm = np.random.RandomState(seed).permutation(N_MIRFLICKR)
    np.testing.assert_array_equal(split.query, perm[:5000])
    np.testing.assert_array_equal(split.train, perm[5000:15000])
    np.testing.assert_array_equal(split.database, perm[5000:])
    assert split.sizes() == {"query": 5000, "database": 15015, "train": 10000, "val": 1000, "fit": 9000}
    np.testing.assert_array_equal(split.val, perm[5000:6000])  # carved from the training pairs
    _assert_protocol(split, N_MIRFLICKR)
    assert clip_split(N_MIRFLICKR, seed, val_frac=0).sizes()["val"] == 0


@pytest.mark.parametrize("n_train", [5000, 10000])
def test_classic_split_sizes(n_train):
    split = classic_split(N_MIRFLICKR, 0, n_train=n_train)
    assert (split.query.size, split.database.size, split.train.size, split.val.size) == (2000, 18015, n_train,
                                                                                          n_train // 10)
    _assert_protocol(split, N_MIRFLICKR)


def test_proportional_split_on_coco_mini_sizes():
    split = proportional_split(159, 0)
    assert split.sizes() == {"query": 32, "database": 127, "train": 80, "val": 16, "fit": 64}
    _assert_protocol(split, 159)
    assert not np.isin(split.fit, split.val).any()
    np.testing.assert_array_equal(np.sort(np.concatenate([split.fit, split.val])), np.sort(split.train))


@pytest.mark.parametrize(
    "make",
    [lambda s: clip_split(20000, s), lambda s: classic_split(20000, s), lambda s: proportional_split(159, s)],
)
def test_same_seed_same_split_other_seed_other_split(make):
    a, b, c = make(7), make(7), make(8)
    for part in ("query", "database", "train", "val"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.query, c.query)


@pytest.mark.parametrize(
    ("call", "numbers"),
    [
        (lambda: clip_split(12000, 0), ["5000", "10000", "12000"]),
        (lambda: classic_split(2500, 1, n_train=1000), ["2000", "1000", "2500"]),
        (lambda: clip_split(100, 0, n_query=0, n_train=10), ["0"]),
        (lambda: proportional_split(159, 0, query_frac=1.5), ["1.5"]),
        (lambda: proportional_split(159, 0, train_frac=0.0), ["0.0"]),
        (lambda: proportional_split(159, 0, val_frac=1.0), ["1.0"]),
        (lambda: proportional_split(2, 0), ["2"]),
        (lambda: clip_split(100, -1, n_query=10, n_train=10), ["-1"]),
    ],
)
def test_bad_sizes_are_typed_errors_naming_the_numbers(call, numbers):
    with pytest.raises(InvalidInputError) as info:
        call()
    for number in numbers:
        assert number in str(info.value)


def test_split_rejects_val_outside_train_and_duplicates():
    with pytest.raises(InvalidInputError, match="val"):
        Split(query=[0], database=[1, 2], train=[1], val=[2])
    with pytest.raises(InvalidInputError, match="duplicate"):
        Split(query=[0, 0], database=[1], train=[1])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(20, 3000),
    seed=st.integers(0, 2**32 - 1),
    query_frac=st.floats(0.05, 0.5),
    train_frac=st.floats(0.2, 1.0),
    val_frac=st.floats(0.0, 0.5),
)
def test_proportional_split_invariants(n, seed, query_frac, train_frac, val_frac):
    split = proportional_split(n, seed, query_frac, train_frac, val_frac)
    _assert_protocol(split, n)
    assert abs(split.query.size - query_frac * n) <= 0.5
    assert abs(split.val.size - val_frac * split.train.size) <= 0.5
