"""HammingIndex under concurrent use: 8 threads search while one thread adds (or removes), and every
result must be the exact answer over some prefix of the writes, one the search could have seen.

The index promises (runtime/index.py, "Thread safety") that a search sees the index as it was when it
started: every add that had returned, nothing half-written. So a search that started after `lo` writes
had returned and ended before write `hi + 1` began must equal the brute-force top-k after m writes,
for some m in [lo, hi]. Brute force: numpy popcounts, ordered by (distance, insertion position).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from cmhash.runtime.index import PAD_DISTANCE, PAD_ID, HammingIndex
from cmhash.runtime import search_cpu
from cmhash.runtime.search_cpu import numba_available

BITS, K, SEARCHERS = 64, 10, 8
BACKENDS = ["numpy"] + (["numba"] if numba_available() else [])


def _distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    x = queries[:, None, :] ^ codes[None, :, :]
    return np.unpackbits(x, axis=2).sum(axis=2).astype(np.int64)


def _expected(dist_row: np.ndarray, order: np.ndarray, alive: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (distance, id) over the items `alive` (positions = ids, insertion order), padded.

    `order`: all positions sorted by (distance, position), computed once per query.
    """
    top = order[alive[order]][:k]
    d = np.full(k, PAD_DISTANCE, np.int64)
    i = np.full(k, PAD_ID, np.int64)
    d[: top.size], i[: top.size] = dist_row[top], top
    return d, i


def _run(index: HammingIndex, write, n_writes: int, queries: np.ndarray):
    """Run `write(j)` for j < n_writes in one thread while SEARCHERS threads search; return the log."""
    # Load the compiled kernels first (about 0.4 s): otherwise the writes can all finish while the
    # first searches wait for them, and the test is about searches overlapping writes.
    search_cpu.topk(queries[:1], queries, K, backend=index.backend, threads=1)
    returned = [0]  # writes that have returned
    started = [0]  # writes that have begun
    done = threading.Event()
    errors: list[BaseException] = []
    logs: list[list] = [[] for _ in range(SEARCHERS)]

    def writer():
        try:
            for j in range(n_writes):
                started[0] = j + 1
                write(j)
                returned[0] = j + 1
                time.sleep(0.0002)  # spread the writes over the searches' lifetime
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    def searcher(t: int):
        rng = np.random.default_rng(t)
        try:
            while not done.is_set() or len(logs[t]) < 20:
                rows = rng.choice(len(queries), size=3, replace=False)
                lo = returned[0]
                dist, ids = index.search(queries[rows], K, threads=1)
                hi = started[0]
                logs[t].append((lo, hi, rows, dist, ids))
                time.sleep(0.0005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(t,)) for t in range(SEARCHERS)]
    threads.append(threading.Thread(target=writer))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over often, so writes land in the middle of searches
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
    finally:
        sys.setswitchinterval(switch)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert errors == []
    return [entry for log in logs for entry in log]


def _check(log, dist_all: np.ndarray, alive_after) -> int:
    """Every logged result equals the exact answer after some m in [lo, hi] writes; returns the count."""
    positions = np.arange(dist_all.shape[1])
    orders = [np.lexsort((positions, row)) for row in dist_all]
    for lo, hi, rows, dist, ids in log:
        assert lo <= hi
        ok = any(all(np.array_equal((dist[r], ids[r]), _expected(dist_all[q], orders[q], alive_after(m), K))
                     for r, q in enumerate(rows)) for m in range(lo, hi + 1))
        assert ok, f"a search between write {lo} and {hi} returned ids {ids.tolist()}, no prefix gives that"
    return len(log)


def _assert_overlapped(log) -> None:
    """Not vacuous: searches ran all along the writes, and some had a write start while they ran."""
    assert len({lo for lo, *_ in log}) > 50
    assert sum(hi > lo for lo, hi, *_ in log) > 20


def _distinct_codes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, 256, (n * 2, BITS // 8), dtype=np.uint8), axis=0)[:n]
    return codes[rng.permutation(n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_searches_during_adds_see_a_prefix_of_the_adds(backend):
    n = 1000
    codes = _distinct_codes(n, 0)
    queries = _distinct_codes(40, 1)
    index = HammingIndex(BITS, backend=backend)
    log = _run(index, lambda j: index.add(codes[j:j + 1], ids=[j]), n, queries)
    checked = _check(log, _distances(queries, codes), lambda m: np.arange(n) < m)
    assert checked >= SEARCHERS * 20 and len(index) == n
    assert np.array_equal(index.ids, np.arange(n))
    _assert_overlapped(log)


@pytest.mark.parametrize("backend", BACKENDS)
def test_searches_during_removes_see_a_prefix_of_the_removes(backend):
    n, removes = 1000, 600
    codes = _distinct_codes(n, 2)
    queries = _distinct_codes(40, 3)
    order = np.random.default_rng(4).permutation(n)[:removes]
    index = HammingIndex(BITS, backend=backend)
    index.add(codes)

    def alive_after(m: int) -> np.ndarray:
        alive = np.ones(n, bool)
        alive[order[:m]] = False
        return alive

    log = _run(index, lambda j: index.remove([order[j]]), removes, queries)
    _check(log, _distances(queries, codes), alive_after)
    assert sorted(index.ids.tolist()) == sorted(set(range(n)) - set(order.tolist()))
    _assert_overlapped(log)


def test_concurrent_writers_are_serialized_not_interleaved():
    """Two adders at once (against the single-writer advice) still lose nothing and keep each batch whole."""
    codes = _distinct_codes(1000, 5)
    index = HammingIndex(BITS, backend="numpy")
    barrier = threading.Barrier(2)

    def adder(first: int):
        barrier.wait()
        for j in range(first, first + 500, 10):
            index.add(codes[j:j + 10], ids=np.arange(j, j + 10))

    threads = [threading.Thread(target=adder, args=(s,)) for s in (0, 500)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ids = index.ids
    assert sorted(ids.tolist()) == list(range(1000))
    for start in range(0, len(ids), 10):  # every batch of 10 landed contiguously, in order
        assert np.array_equal(ids[start:start + 10], np.arange(ids[start], ids[start] + 10))
    assert np.array_equal(index.codes, codes[ids])
