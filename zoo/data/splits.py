"""Seeded query / database / train / validation splits of the published protocols.

Every split comes from one `np.random.RandomState(seed).permutation(n)`, the legacy generator the
authors' code seeds, so a seed reproduces their exact partition. Index arrays keep permutation order
rather than being sorted: evaluation breaks distance ties by database position, so sorting would
change reported numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cmhash.errors import InvalidInputError
from cmhash.validators import positive_int

SEED_DHAPH = 1814
"""Seed of DHaPH's CLIP-pipeline split (the authors' run settings)."""

SEED_DMSH_LN = 3407
"""Seed of DMsH-LN's CLIP-pipeline split (the authors' run settings)."""


def _index_array(values: np.ndarray | list[int], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise InvalidInputError(
            f"split part {name!r} must be a 1-D integer array, got {arr.dtype} {arr.shape}"
        )
    if arr.min() < 0:
        raise InvalidInputError(f"split part {name!r} holds a negative index ({int(arr.min())})")
    if np.unique(arr).size != arr.size:
        raise InvalidInputError(f"split part {name!r} holds duplicate indices")
    return arr.astype(np.int64, copy=False)


@dataclass(frozen=True)
class Split:
    """Row indices (int64) of each part of a retrieval split.

    Attributes:
        query: Query pairs (the test set).
        database: Retrieval database; the generated protocols keep it disjoint from `query`.
        train: Training pairs, including the validation slice; inside `database` for the generated
            protocols.
        val: Validation pairs, a subset of `train` (may be empty).
    """

    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        for name in ("query", "database", "train", "val"):
            object.__setattr__(self, name, _index_array(getattr(self, name), name))
        if not np.isin(self.val, self.train).all():
            raise InvalidInputError("split part 'val' must be a subset of 'train'")

    @property
    def fit(self) -> np.ndarray:
        """Training pairs the optimizer sees: `train` without the validation slice, in order."""
        return self.train[~np.isin(self.train, self.val)]

    def sizes(self) -> dict[str, int]:
        """Number of pairs per part, for logs and model cards."""
        return {
            "query": int(self.query.size),
            "database": int(self.database.size),
            "train": int(self.train.size),
            "val": int(self.val.size),
            "fit": int(self.fit.size),
        }

    def check(self, n: int, *, train_in_database: bool = True, disjoint_query: bool = True) -> None:
        """Check the protocol invariants against a dataset of `n` pairs.

        Raises:
            InvalidInputError: naming the invariant that fails.
        """
        for name in ("query", "database", "train", "val"):
            part = getattr(self, name)
            if part.size and part.max() >= n:
                raise InvalidInputError(f"split part {name!r} holds index {int(part.max())} >= n = {n}")
        if train_in_database and not np.isin(self.train, self.database).all():
            raise InvalidInputError("split part 'train' is not inside 'database'")
        if disjoint_query and np.isin(self.query, self.database).any():
            raise InvalidInputError("split parts 'query' and 'database' overlap")


def _permutation_split(n: int, seed: int, n_query: int, n_train: int, n_val: int = 0) -> Split:
    n = positive_int(n, "n")
    n_query = positive_int(n_query, "n_query")
    n_train = positive_int(n_train, "n_train")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise InvalidInputError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if n_query + n_train > n:
        raise InvalidInputError(
            f"n_query + n_train = {n_query} + {n_train} = {n_query + n_train} exceeds the {n} pairs; "
            "lower n_query or n_train (training pairs are drawn from the database, which excludes queries)"
        )
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    train = perm[n_query : n_query + n_train]
    return Split(query=perm[:n_query], database=perm[n_query:], train=train, val=train[:n_val])


def clip_split(n: int, seed: int, n_query: int = 5000, n_train: int = 10000, val_frac: float = 0.1) -> Split:
    """CLIP-pipeline split (DSPH, DHaPH, DMsH-LN): one permutation.

    Query = the first `n_query` of the permutation, train = the next `n_train`, database = everything
    except the queries, so the training pairs lie inside the database. Use `SEED_DHAPH` or
    `SEED_DMSH_LN` to reproduce the authors' partitions. Validation = the first round(val_frac·n_train)
    training pairs: the epoch is selected on them, not on the test queries (docs/RECIPES.md,
    "Shared evaluation protocol"); `val_frac=0` leaves none.
    """
    return _permutation_split(n, seed, n_query, n_train, _n_val(val_frac, n_train))


def classic_split(n: int, seed: int, n_query: int = 2000, n_train: int = 10000, val_frac: float = 0.1) -> Split:
    """Classic MIRFlickr-25K protocol (DCMH and most baselines): 2,000 queries, the rest is the
    database, and `n_train` (5,000 or 10,000) training pairs drawn from the database; validation as in
    `clip_split`."""
    return _permutation_split(n, seed, n_query, n_train, _n_val(val_frac, n_train))


def _n_val(val_frac: float, n_train: int) -> int:
    if isinstance(val_frac, bool) or not isinstance(val_frac, (int, float)) or not 0 <= val_frac < 1:
        raise InvalidInputError(f"val_frac must be a number in [0, 1), got {val_frac!r}")
    return _round(val_frac * n_train)


def _round(x: float) -> int:
    """Round half up; Python's round() rounds half to even, which surprises for sizes like 12.5."""
    return int(math.floor(x + 0.5))


def proportional_split(
    n: int, seed: int, query_frac: float = 0.2, train_frac: float = 0.63, val_frac: float = 0.2
) -> Split:
    """Proportional split for small sets such as coco-mini, with a validation slice.

    Query = round(query_frac * n) pairs; the database is the rest; train = round(train_frac *
    |database|) pairs drawn from the database; val = round(val_frac * |train|) of those training pairs
    (the first ones), used for epoch selection instead of the test queries. `fit` is train minus val.
    With the defaults and n = 159: 32 queries, 127 database, 80 train, 16 val, 64 fit.

    Raises:
        InvalidInputError: if a fraction is outside its range (query_frac in (0, 1), train_frac in
            (0, 1], val_frac in [0, 1)) or a part would be empty.
    """
    n = positive_int(n, "n")
    for name, value, low_ok, high_ok in (
        ("query_frac", query_frac, False, False),
        ("train_frac", train_frac, False, True),
        ("val_frac", val_frac, True, False),
    ):
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value >= 0 if low_ok else value > 0) and (value <= 1 if high_ok else value < 1)
        if not ok:
            raise InvalidInputError(
                f"{name} = {value!r} is outside its allowed range (see proportional_split)"
            )
    n_query = _round(query_frac * n)
    n_train = _round(train_frac * (n - n_query))
    n_val = _round(val_frac * n_train)
    if n_query < 1 or n_query >= n or n_train < 1 or n_train - n_val < 1:
        raise InvalidInputError(
            f"n = {n} with query_frac = {query_frac}, train_frac = {train_frac}, val_frac = {val_frac} gives "
            f"{n_query} queries, {n_train} training pairs and {n_val} validation pairs; every part but val "
            "needs at least one pair: use a larger dataset or other fractions"
        )
    return _permutation_split(n, seed, n_query, n_train, n_val)
