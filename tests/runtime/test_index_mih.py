"""Multi-index hashing gives exactly the scan's answers (ids, distances, order, ties by position).

Every check compares against the brute-force reference of test_index.py (distances of all pairs,
then a lexsort by (distance, position)) and against the scan method on the same index content.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cmhash.errors import InvalidInputError, MissingDependencyError
from cmhash.runtime import index as index_module
from cmhash.runtime import mih, search_cpu
from cmhash.runtime.index import HammingIndex
from test_index import assert_same, check_searches_while_adding, reference_range, reference_topk, tied_codes

HAS_NUMBA = search_cpu.numba_available()
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (MIH needs it)")
BITS = [8, 16, 24, 32, 40, 48, 56, 64, 72, 96, 128, 256]


def lsh_codes(rng, n, bits, clusters=40, spread=0.25, dim=16):
    """Signs of random projections of a Gaussian mixture: structured codes, many near-duplicates."""
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim))
    return np.packbits(x @ rng.standard_normal((dim, bits)) > 0, axis=1, bitorder="little")


def unbalanced_codes(rng, n, nbytes):
    """Every substring but the last byte's takes one of two values: all rows in a few buckets."""
    codes = np.zeros((n, nbytes), np.uint8)
    codes[rng.random(n) < 0.5, : max(1, nbytes - 1)] = 0xFF
    codes[:, -1] = rng.integers(0, 4, n)
    return codes


def both(db, bits, ids=None, **kw):
    scan, fast = HammingIndex(bits, method="scan"), HammingIndex(bits, method="mih", **kw)
    scan.add(db, ids)
    fast.add(db, ids)
    return scan, fast


def check_same(scan, fast, queries, ks, radii=(0, 3)):
    for k in ks:
        assert_same(fast.search(queries, k), scan.search(queries, k))
    for r in radii:
        for (d1, i1), (d2, i2) in zip(fast.range_search(queries, r), scan.range_search(queries, r)):
            np.testing.assert_array_equal(d1, d2)
            np.testing.assert_array_equal(i1, i2)


@needs_numba
@pytest.mark.parametrize("bits", BITS)
def test_mih_equals_brute_force_at_every_code_length(bits):
    rng = np.random.default_rng(bits)
    nb = bits // 8
    for db in (rng.integers(0, 256, (1500, nb), dtype=np.uint8), tied_codes(rng, 1500, nb),
               tied_codes(rng, 1500, nb, distinct=9), lsh_codes(rng, 1500, bits), unbalanced_codes(rng, 1500, nb)):
        queries = np.concatenate([db[:5], db[5:10] ^ np.uint8(3), rng.integers(0, 256, (3, nb), dtype=np.uint8)])
        index = HammingIndex(bits, method="mih")
        index.add(db)
        for k in (1, 10, 257):
            assert_same(index.search(queries, k), reference_topk(queries, db, k))
        for r in (0, 2, bits // 8):
            for (d, i), (rd, ri) in zip(index.range_search(queries, r), reference_range(queries, db, r)):
                np.testing.assert_array_equal(d, rd)
                np.testing.assert_array_equal(i, ri)


@needs_numba
@pytest.mark.parametrize("bits, m, used", [(64, 3, 4), (64, 5, 5), (64, 8, 8), (32, 2, 2), (16, 1, 1), (24, 1, 2)])
def test_every_substring_count_gives_the_same_answer(bits, m, used):
    rng = np.random.default_rng(m)
    db = lsh_codes(rng, 6000, bits)
    scan, fast = both(db, bits, mih_m=m)
    check_same(scan, fast, np.concatenate([db[:20], db[:5] ^ np.uint8(0x81)]), (1, 5, 100, 1000))
    assert fast._tables.m == used  # noqa: SLF001 - tables of more than 4 offsets per row take a larger m


@needs_numba
def test_large_k_many_ties_and_user_ids():
    rng = np.random.default_rng(7)
    db = tied_codes(rng, 20000, 16, distinct=30)  # about 670 copies of each code
    ids = rng.permutation(10**6)[:20000]
    scan, fast = both(db, 128, ids=ids)
    queries = np.concatenate([db[:8], rng.integers(0, 256, (4, 16), dtype=np.uint8)])
    check_same(scan, fast, queries, (1, 999, 1000, 1500, 20000, 25000))
    assert_same(fast.search(queries, 1200), reference_topk(queries, db, 1200, ids=ids))


@needs_numba
def test_unbalanced_substrings():
    rng = np.random.default_rng(8)
    db = unbalanced_codes(rng, 30000, 8)
    scan, fast = both(db, 64)
    check_same(scan, fast, np.concatenate([db[:6], rng.integers(0, 256, (6, 8), dtype=np.uint8)]), (1, 10, 1000))


@needs_numba
def test_removals_and_adds_after_the_tables_are_built(monkeypatch):
    monkeypatch.setattr(index_module, "_MIH_TAIL_MIN", 500)
    rng = np.random.default_rng(9)
    db = lsh_codes(rng, 12000, 64)
    queries = np.concatenate([db[:10], db[:10] ^ np.uint8(1)])
    scan, fast = both(db[:6000], 64)
    check_same(scan, fast, queries, (1, 100, 1000))
    built = fast._tables  # noqa: SLF001
    assert built is not None and built.n == 6000
    gone = rng.permutation(6000)[:1500]
    for index in (scan, fast):
        index.remove(gone)
        index.add(db[6000:6003])  # a tail: scanned and merged
    check_same(scan, fast, queries, (1, 100, 1000))
    assert fast._tables is built  # noqa: SLF001
    for index in (scan, fast):
        index.add(db[6003:])  # past the tail limit: add rebuilds the tables
    assert fast._tables.n > 6000  # noqa: SLF001
    check_same(scan, fast, queries, (1, 100, 1000), radii=(0, 4, 10))
    keep = scan.ids
    alive_codes = db[np.isin(np.arange(12000), keep)]
    assert_same(fast.search(queries, 300), reference_topk(queries, alive_codes, 300, ids=keep))
    for index in (scan, fast):
        index.remove(keep[: len(keep) * 3 // 4])  # compacts: rows move, the tables are rebuilt
    check_same(scan, fast, queries, (1, 100, 1000))


@needs_numba
def test_auto_uses_mih_with_a_scan_fallback_and_the_same_answers(monkeypatch):
    monkeypatch.setattr(index_module, "AUTO_MIH_MIN_ITEMS", 1000)
    rng = np.random.default_rng(10)
    for db in (lsh_codes(rng, 20000, 64), rng.integers(0, 256, (20000, 8), dtype=np.uint8)):
        scan = HammingIndex(64, method="scan")
        auto = HammingIndex(64)
        scan.add(db)
        auto.add(db)
        queries = np.concatenate([db[:10], rng.integers(0, 256, (10, 8), dtype=np.uint8)])
        check_same(scan, auto, queries, (1, 10, 100))
        assert auto._tables is None  # noqa: SLF001 - a few queries: scanned, no build
        auto.build_tables()
        check_same(scan, auto, queries, (1, 10, 100))
        many = np.concatenate([db[:30], rng.integers(0, 256, (30, 8), dtype=np.uint8)])  # a sample decides
        check_same(scan, auto, many, (1, 100), radii=())
        check_same(scan, auto, many[::-1].copy(), (1, 100), radii=())
        assert auto._tables is not None  # noqa: SLF001 - MIH ran (k * 64 <= n)
    t = auto._tables  # noqa: SLF001
    lazy = HammingIndex(64)
    lazy.add(db)
    monkeypatch.setattr(index_module, "AUTO_MIH_AFTER_QUERIES", 40)
    lazy.search(queries, 10)
    lazy.search(queries, 10)
    assert lazy._tables is None  # noqa: SLF001 - 20, then 40 queries scanned
    lazy.search(queries, 10)
    assert lazy._tables is not None  # noqa: SLF001 - 40 reached: this search built them
    d, p, failed = mih.topk(t, queries, auto._state.live_codes, None, 100, budget=50)  # noqa: SLF001
    assert failed.all()  # uniform random codes: no query fits a tiny budget; the index then scans


@needs_numba
def test_concurrent_mih_searches_while_adding(monkeypatch):
    monkeypatch.setattr(index_module, "_MIH_TAIL_MIN", 200)
    check_searches_while_adding(HammingIndex(64, method="mih"), readers=3)


def test_choose_m_and_bad_m():
    assert mih.choose_m(64, 10**7) == 3 and mih.choose_m(64, 10**6) == 4 and mih.choose_m(128, 10**7) == 6
    assert mih.choose_m(256, 10**3) == 29  # substrings of at most 32 bits, here about log2(n)
    starts, lens = mih.split(64, 3)
    assert lens.tolist() == [22, 21, 21] and starts.tolist() == [0, 22, 43]
    with pytest.raises(InvalidInputError, match="mih_m"):
        HammingIndex(64, method="scan", mih_m=0)
    with pytest.raises(InvalidInputError, match="at most 32 bits"):
        HammingIndex(128, method="scan", mih_m=2)
    with pytest.raises(InvalidInputError, match="unknown search method"):
        HammingIndex(64, method="fast")


def test_without_numba_auto_scans_and_mih_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.setattr(search_cpu, "_NUMBA_OK", False)
    monkeypatch.setattr(index_module, "AUTO_MIH_MIN_ITEMS", 10)
    with pytest.raises(MissingDependencyError, match="numba"):
        HammingIndex(64, method="mih")
    rng = np.random.default_rng(12)
    db = tied_codes(rng, 2000, 8)
    index = HammingIndex(64)
    index.add(db)
    assert_same(index.search(db[:4], 30), reference_topk(db[:4], db, 30))
    assert index._tables is None  # noqa: SLF001
