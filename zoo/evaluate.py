"""Cross-modal retrieval evaluation: I→T and T→I mAP@all and precision@N from hash values.

The metric definitions live in cmhash.runtime.metrics; this module only pairs the directions of the
shared protocol (image queries against database text codes, and the reverse).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cmhash.runtime.codes import pack
from cmhash.runtime.metrics import PRCurve, mean_average_precision, pr_curve, precision_at

DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class CrossModalScores:
    """mAP@all and precision@N per direction (PR curves are returned beside it)."""

    map_i2t: float
    map_t2i: float
    precision_i2t: dict[int, float]
    precision_t2i: dict[int, float]

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_cross_modal(
    query_image: np.ndarray,
    query_text: np.ndarray,
    query_labels: np.ndarray,
    db_image: np.ndarray,
    db_text: np.ndarray,
    db_labels: np.ndarray,
    precision_ns: tuple[int, ...] = (1, 10, 100),
) -> tuple[CrossModalScores, dict[str, PRCurve]]:
    """Score continuous hash values (n, bits) of query and database pairs in both directions."""
    qi, qt, di, dt = (pack(x) for x in (query_image, query_text, db_image, db_text))
    scores = CrossModalScores(
        map_i2t=mean_average_precision(qi, dt, query_labels, db_labels),
        map_t2i=mean_average_precision(qt, di, query_labels, db_labels),
        precision_i2t=precision_at(qi, dt, query_labels, db_labels, precision_ns),
        precision_t2i=precision_at(qt, di, query_labels, db_labels, precision_ns),
    )
    curves = {"I→T": pr_curve(qi, dt, query_labels, db_labels), "T→I": pr_curve(qt, di, query_labels, db_labels)}
    return scores, curves
