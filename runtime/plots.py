"""PNG plots of retrieval metrics. matplotlib is optional: install cmhash[plot]."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from cmhash.errors import require
from cmhash.runtime.io import atomic_write
from cmhash.runtime.metrics import PRCurve


def pr_points(curve: PRCurve) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of the radii where some query retrieved a relevant item. The others are
    (0, 0) in `pr_curve`'s averages, which is no point of the curve: drawn, it made every curve start
    at the origin."""
    keep = (curve.precision > 0) | (curve.recall > 0)
    return curve.recall[keep], curve.precision[keep]


def save_pr_curves(curves: Mapping[str, PRCurve], path: str | os.PathLike, title: str = "") -> None:
    """Write one precision-recall plot with a line per named curve (e.g. "I→T", "T→I")."""
    matplotlib = require("matplotlib", "plot", "Writing PR-curve plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, curve in curves.items():
        ax.plot(*pr_points(curve), marker=".", label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
