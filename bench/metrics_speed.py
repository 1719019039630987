"""Time mAP@all at the size issue #2 names: 5,000 queries x 20,000 database items x 64 bits.

Random codes and MIRFlickr-like labels (24 classes); prints the wall time. Run:
    .venv/bin/python bench/metrics_speed.py
"""

from __future__ import annotations

import time

import numpy as np

from cmhash.runtime.codes import pack
from cmhash.runtime.metrics import mean_average_precision, pr_curve, precision_at


def main(n_query: int = 5000, n_db: int = 20000, bits: int = 64, repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    qc, dbc = pack(rng.standard_normal((n_query, bits))), pack(rng.standard_normal((n_db, bits)))
    ql = (rng.random((n_query, 24)) < 0.15).astype(np.uint8)
    dbl = (rng.random((n_db, 24)) < 0.15).astype(np.uint8)
    for name, fn in (
        ("mAP@all", lambda: mean_average_precision(qc, dbc, ql, dbl)),
        ("mAP@1000", lambda: mean_average_precision(qc, dbc, ql, dbl, top_k=1000)),
        ("precision@{1,100,1000}", lambda: precision_at(qc, dbc, ql, dbl, ns=(1, 100, 1000))),
        ("PR curve", lambda: pr_curve(qc, dbc, ql, dbl)),
    ):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        print(f"{name:>24}: best {min(times):.2f} s, median {np.median(times):.2f} s "
              f"({n_query} x {n_db} x {bits} bits)")


if __name__ == "__main__":
    main()
