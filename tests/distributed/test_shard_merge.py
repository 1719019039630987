"""The merge of per-shard results equals one HammingIndex, ties included (no Ray needed).

IndexShard is the state a shard actor holds; here plain objects stand in for the actors, routed
exactly as ShardedIndex routes (item with global seq s goes to shard s % shards). Few bits and
duplicated codes make ties at the k-th distance the common case, which is what must match.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cmhash.runtime.distributed.merge import SEQ_PAD, merge_ranges, merge_topk
from cmhash.runtime.distributed.shard import IndexShard
from cmhash.runtime.index import PAD_DISTANCE, PAD_ID, HammingIndex


def build(codes: np.ndarray, ids: np.ndarray, shards: int, bits: int) -> list[IndexShard]:
    parts = [IndexShard(i, bits, backend="numpy") for i in range(shards)]
    seqs = np.arange(len(ids))
    for i, shard in enumerate(parts):
        mask = seqs % shards == i
        shard.add(codes[mask], ids[mask], seqs[mask])
    return parts


def sharded_search(parts: list[IndexShard], queries: np.ndarray, k: int):
    return merge_topk([p.search(queries, k)[:3] for p in parts], k)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), shards=st.integers(1, 5), k=st.integers(1, 400), seed=st.integers(0, 2**32 - 1),
       distinct=st.integers(1, 40))
def test_merged_topk_equals_one_index_with_ties(n, shards, k, seed, distinct):
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (distinct, 1), dtype=np.uint8)  # few distinct 8-bit codes: many exact ties
    codes = pool[rng.integers(0, distinct, n)]
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # ids unrelated to insertion order
    queries = rng.integers(0, 256, (7, 1), dtype=np.uint8)
    single = HammingIndex(8, backend="numpy")
    single.add(codes, ids)
    want_d, want_i = single.search(queries, k)
    got_d, got_i = sharded_search(build(codes, ids, shards, 8), queries, k)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_i, want_i)


def test_merge_after_removals_keeps_the_single_node_order():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, (400, 2), dtype=np.uint8)  # 16 bits but only 4 distinct values per byte
    ids = np.arange(1000, 1400)
    parts = build(codes, ids, 3, 16)
    single = HammingIndex(16, backend="numpy")
    single.add(codes, ids)
    gone = ids[rng.random(400) < 0.3]
    single.remove(gone)
    for p in parts:
        p.remove(gone)
    queries = rng.integers(0, 4, (5, 2), dtype=np.uint8)
    for k in (1, 10, 100, 500):
        got, want = sharded_search(parts, queries, k), single.search(queries, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_padding_sorts_last_and_matches():
    parts = build(np.array([[1], [1], [3]], np.uint8), np.array([7, 8, 9]), 2, 8)
    dist, ids = sharded_search(parts, np.array([[1]], np.uint8), 5)
    assert ids.tolist() == [[7, 8, 9, PAD_ID, PAD_ID]]
    assert dist.tolist() == [[0, 0, 1, PAD_DISTANCE, PAD_DISTANCE]]
    assert parts[0].search(np.array([[0]], np.uint8), 3)[1][0, -1] == SEQ_PAD


def test_merged_range_search_equals_one_index():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (500, 1), dtype=np.uint8)
    ids = rng.permutation(500)
    single = HammingIndex(8, backend="numpy")
    single.add(codes, ids)
    parts = build(codes, ids, 4, 8)
    queries = rng.integers(0, 256, (6, 1), dtype=np.uint8)
    got = merge_ranges([p.range_search(queries, 3)[0] for p in parts])
    want = single.range_search(queries, 3)
    for (gd, gi), (wd, wi) in zip(got, want):
        np.testing.assert_array_equal(gd, wd)
        np.testing.assert_array_equal(gi, wi)
