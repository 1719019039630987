"""Retrieval metrics of the shared evaluation protocol (numpy only; zoo and runtime both use these).

Protocol (docs/RECIPES.md, "Shared evaluation protocol"):
- a database item is relevant to a query when they share at least one label;
- items are ranked by Hamming distance, ties broken by database index, ascending;
- AP of a query with relevant items at ranks r_1 < ... < r_R is mean_j(j / r_j);
- mAP divides the sum of AP by the number of *all* queries: a query with no relevant item adds 0.

Work is chunked over queries so that 5,000 x 20,000 x 64-bit takes seconds and bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from cmhash.errors import InvalidInputError
from cmhash.validators import optional_positive_int
from cmhash.runtime.codes import check_codes, hamming_distances

_CHUNK = 256


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall when retrieving every item within Hamming radius r, for r = 0..bits."""

    radius: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def _check_pair(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    query_codes = check_codes(query_codes, what="query codes")
    db_codes = check_codes(db_codes, bits=query_codes.shape[1] * 8, what="database codes")
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    if len(query_codes) == 0 or len(db_codes) == 0:
        raise InvalidInputError(
            f"need at least one query and one database item, got {len(query_codes)} and {len(db_codes)}"
        )
    for name, codes, labels in (("query", query_codes, query_labels), ("database", db_codes, db_labels)):
        if labels.ndim != 2 or len(labels) != len(codes):
            raise InvalidInputError(
                f"{name} labels must be a multi-hot matrix with one row per code: "
                f"{len(codes)} codes but labels of shape {labels.shape}"
            )
    if query_labels.shape[1] != db_labels.shape[1]:
        raise InvalidInputError(
            f"query labels have {query_labels.shape[1]} classes but database labels have {db_labels.shape[1]}"
        )
    return query_codes, db_codes, query_labels.astype(np.float32), db_labels.astype(np.float32)


def _chunks(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (distances, relevance) for blocks of queries."""
    for start in range(0, len(query_codes), _CHUNK):
        stop = start + _CHUNK
        dist = hamming_distances(query_codes[start:stop], db_codes)
        relevant = (query_labels[start:stop] @ db_labels.T) > 0
        yield dist, relevant


def _ranked_relevance(dist: np.ndarray, relevant: np.ndarray, top_k: int | None) -> np.ndarray:
    """Relevance in rank order: by distance, ties by database index (a stable sort keeps index order)."""
    if top_k is not None and top_k < dist.shape[1]:
        # Only the first top_k ranks matter; a stable argsort of small ints is a radix sort in numpy.
        order = np.argsort(dist, axis=1, kind="stable")[:, :top_k]
    else:
        order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(relevant, order, axis=1)


def _check_top_k(top_k: int | None) -> None:
    optional_positive_int(top_k, "top_k", fix="None ranks the whole database")


def mean_average_precision(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    top_k: int | None = None,
) -> float:
    """mAP@all (top_k=None) or mAP@k over packed codes and multi-hot labels."""
    _check_top_k(top_k)
    args = _check_pair(query_codes, db_codes, query_labels, db_labels)
    total = 0.0
    for dist, relevant in _chunks(*args):
        ranked = _ranked_relevance(dist, relevant, top_k)
        hits = np.cumsum(ranked, axis=1, dtype=np.float64)
        ranks = np.arange(1, ranked.shape[1] + 1, dtype=np.float64)
        n_hits = hits[:, -1]
        precision_at_hits = np.where(ranked, hits / ranks, 0.0).sum(axis=1)
        total += float(np.divide(precision_at_hits, n_hits, out=np.zeros_like(n_hits), where=n_hits > 0).sum())
    return total / len(args[0])


def precision_at(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    ns: Sequence[int] = (1, 10, 100),
) -> dict[int, float]:
    """precision@N: the fraction of relevant items among the first N ranked, averaged over queries.

    N larger than the database is clipped to the database size.
    """
    ns = [int(n) for n in ns]
    if not ns or min(ns) <= 0:
        raise InvalidInputError(f"precision@N needs positive N values, got {ns}")
    args = _check_pair(query_codes, db_codes, query_labels, db_labels)
    n_db = len(args[1])
    limit = min(max(ns), n_db)
    sums = dict.fromkeys(ns, 0.0)
    for dist, relevant in _chunks(*args):
        hits = np.cumsum(_ranked_relevance(dist, relevant, limit), axis=1)
        for n in ns:
            m = min(n, n_db)
            sums[n] += float(hits[:, m - 1].sum()) / m
    return {n: s / len(args[0]) for n, s in sums.items()}


def pr_curve(
    query_codes: np.ndarray, db_codes: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray
) -> PRCurve:
    """Precision-recall by Hamming radius r = 0..bits, in the DCMH/DSPH authors' convention.

    For each query with at least one relevant item: precision(r) = relevant retrieved / retrieved
    (0 when nothing is retrieved) and recall(r) = relevant retrieved / relevant. Both are averaged
    over the queries whose precision at r is positive, as the authors' `pr_curve` does.
    """
    args = _check_pair(query_codes, db_codes, query_labels, db_labels)
    bits = args[0].shape[1] * 8
    p_sum = np.zeros(bits + 1)
    r_sum = np.zeros(bits + 1)
    counted = np.zeros(bits + 1)
    for dist, relevant in _chunks(*args):
        n = len(dist)
        offsets = (np.arange(n)[:, None] * (bits + 1) + dist).ravel()
        per_radius = np.bincount(offsets, minlength=n * (bits + 1)).reshape(n, bits + 1)
        per_radius_rel = np.bincount(offsets, weights=relevant.ravel(), minlength=n * (bits + 1))
        retrieved = np.cumsum(per_radius, axis=1)
        hits = np.cumsum(per_radius_rel.reshape(n, bits + 1), axis=1)
        n_rel = relevant.sum(axis=1)
        has_rel = n_rel > 0
        precision = np.divide(hits, retrieved, out=np.zeros_like(hits), where=retrieved > 0)[has_rel]
        recall = hits[has_rel] / n_rel[has_rel, None]
        p_sum += precision.sum(axis=0)
        r_sum += recall.sum(axis=0)
        counted += (precision > 0).sum(axis=0)
    denom = np.maximum(counted, 1)
    return PRCurve(radius=np.arange(bits + 1), precision=p_sum / denom, recall=r_sum / denom)
