"""Metrics against hand-computed cases and a direct loop transcription of the protocol."""

import numpy as np
import pytest

from cmhash.errors import InvalidInputError
from cmhash.runtime.codes import pack
from cmhash.runtime.metrics import mean_average_precision, pr_curve, precision_at


def codes_at_distances(distances, bits=8):
    """A query code of all +1 and database codes whose first d bits are -1."""
    db = np.ones((len(distances), bits))
    for i, d in enumerate(distances):
        db[i, :d] = -1
    return pack(np.ones((1, bits))), pack(db)


def test_map_hand_computed_with_ties():
    q, db = codes_at_distances([2, 0, 1, 1])
    # Ranking by (distance, index): 1, 2, 3, 0. Relevant items 0 and 2 sit at ranks 4 and 2.
    ql, dbl = np.array([[1, 0]]), np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    assert mean_average_precision(q, db, ql, dbl) == pytest.approx((1 / 2 + 2 / 4) / 2)
    # mAP@2: only rank 2 is relevant among the first two.
    assert mean_average_precision(q, db, ql, dbl, top_k=2) == pytest.approx(1 / 2)
    assert precision_at(q, db, ql, dbl, ns=(1, 2, 4, 10)) == pytest.approx({1: 0, 2: 0.5, 4: 0.5, 10: 0.5})


def test_ties_are_broken_by_database_index():
    q, db = codes_at_distances([3, 3, 3])
    ql = np.array([[1]])
    first = mean_average_precision(q, db, ql, np.array([[1], [0], [0]]))
    last = mean_average_precision(q, db, ql, np.array([[0], [0], [1]]))
    assert first == pytest.approx(1.0)
    assert last == pytest.approx(1 / 3)


def test_query_without_relevant_items_counts_in_the_denominator():
    q, db = codes_at_distances([0, 1])
    q2 = np.concatenate([q, q])
    ql = np.array([[1, 0], [0, 0]])  # the second query has no label shared with anything
    dbl = np.array([[1, 0], [1, 0]])
    assert mean_average_precision(q2, db, ql, dbl) == pytest.approx(0.5)


def reference(qc, dbc, ql, dbl, top_k=None):
    """Loop transcription of the protocol (docs/RECIPES.md, "Shared evaluation protocol"), sorting (distance, index) tuples."""
    qb = np.unpackbits(qc, axis=1, bitorder="little").astype(int)
    db = np.unpackbits(dbc, axis=1, bitorder="little").astype(int)
    aps, precisions = [], {1: [], 10: [], 50: []}
    for i in range(len(qb)):
        dist = [int(np.sum(qb[i] != db[j])) for j in range(len(db))]
        order = sorted(range(len(db)), key=lambda j: (dist[j], j))
        rel = [bool(np.any(ql[i] & dbl[j])) for j in order]
        for n in precisions:
            precisions[n].append(sum(rel[:n]) / min(n, len(db)))
        ranked = rel if top_k is None else rel[:top_k]
        hit_ranks = [r + 1 for r, ok in enumerate(ranked) if ok]
        aps.append(np.mean([(j + 1) / r for j, r in enumerate(hit_ranks)]) if hit_ranks else 0.0)
    return sum(aps) / len(qb), {n: float(np.mean(v)) for n, v in precisions.items()}


@pytest.mark.parametrize("bits,seed", [(8, 0), (16, 1), (64, 2)])
def test_against_brute_force_reference(bits, seed):
    rng = np.random.default_rng(seed)
    qc = pack(rng.standard_normal((300, bits)))  # > one 256-query chunk
    dbc = pack(rng.standard_normal((120, bits)))
    ql = (rng.random((300, 5)) < 0.2).astype(np.uint8)
    dbl = (rng.random((120, 5)) < 0.2).astype(np.uint8)
    ref_map, ref_prec = reference(qc, dbc, ql, dbl)
    assert mean_average_precision(qc, dbc, ql, dbl) == pytest.approx(ref_map, rel=1e-12)
    assert precision_at(qc, dbc, ql, dbl, ns=(1, 10, 50)) == pytest.approx(ref_prec, rel=1e-12)
    ref_map_k, _ = reference(qc, dbc, ql, dbl, top_k=17)
    assert mean_average_precision(qc, dbc, ql, dbl, top_k=17) == pytest.approx(ref_map_k, rel=1e-12)


def test_pr_curve_against_loop_reference():
    rng = np.random.default_rng(3)
    bits = 16
    qc, dbc = pack(rng.standard_normal((40, bits))), pack(rng.standard_normal((70, bits)))
    ql = (rng.random((40, 4)) < 0.3).astype(np.uint8)
    dbl = (rng.random((70, 4)) < 0.3).astype(np.uint8)
    qb = np.unpackbits(qc, axis=1, bitorder="little")
    db = np.unpackbits(dbc, axis=1, bitorder="little")
    P = np.zeros((40, bits + 1))
    R = np.zeros((40, bits + 1))
    for i in range(40):
        rel = (ql[i] @ dbl.T) > 0
        if rel.sum() == 0:
            continue
        dist = (qb[i] != db).sum(axis=1)
        for r in range(bits + 1):
            got = dist <= r
            P[i, r] = (got & rel).sum() / got.sum() if got.sum() else 0.0
            R[i, r] = (got & rel).sum() / rel.sum()
    mask = np.maximum((P > 0).sum(axis=0), 1)
    curve = pr_curve(qc, dbc, ql, dbl)
    np.testing.assert_allclose(curve.precision, P.sum(axis=0) / mask, rtol=1e-12)
    np.testing.assert_allclose(curve.recall, R.sum(axis=0) / mask, rtol=1e-12)
    assert curve.recall[-1] == pytest.approx(1.0)  # everything is within radius = bits


def test_bad_inputs_are_typed_errors():
    q, db = codes_at_distances([0, 1])
    with pytest.raises(InvalidInputError, match="top_k"):
        mean_average_precision(q, db, np.ones((1, 2)), np.ones((2, 2)), top_k=0)
    with pytest.raises(InvalidInputError, match="one row per code"):
        mean_average_precision(q, db, np.ones((1, 2)), np.ones((3, 2)))
    with pytest.raises(InvalidInputError, match="classes"):
        mean_average_precision(q, db, np.ones((1, 3)), np.ones((2, 2)))
    with pytest.raises(InvalidInputError, match="at least one query"):
        mean_average_precision(q[:0], db, np.ones((0, 2)), np.ones((2, 2)))


def test_pr_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from cmhash.runtime.plots import save_pr_curves

    rng = np.random.default_rng(4)
    qc, dbc = pack(rng.standard_normal((20, 16))), pack(rng.standard_normal((30, 16)))
    labels = (rng.random((50, 3)) < 0.5).astype(np.uint8)
    curve = pr_curve(qc, dbc, labels[:20], labels[20:])
    out = tmp_path / "pr.png"
    save_pr_curves({"I→T": curve}, out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pr_points_leave_out_the_radii_where_nothing_relevant_was_retrieved():
    """Before: every PR plot started at (0, 0), the radii at which no query had retrieved anything."""
    from cmhash.runtime.metrics import PRCurve
    from cmhash.runtime.plots import pr_points

    curve = PRCurve(radius=np.arange(5), precision=np.array([0.0, 0.0, 0.9, 0.7, 0.5]),
                    recall=np.array([0.0, 0.0, 0.2, 0.6, 1.0]))
    recall, precision = pr_points(curve)
    assert recall.tolist() == [0.2, 0.6, 1.0] and precision.tolist() == [0.9, 0.7, 0.5]
