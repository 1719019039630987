"""Merge per-shard results into the exact global result, in the single-node index's order.

A single HammingIndex orders hits by (distance, insertion position). A sharded index gives every
item a global insertion sequence number (`seq`) when it is added; each shard keeps its items in
seq order, so its own top-k is ordered by (distance, seq) too. Each shard's top-k contains every
item of the global top-k that lives on that shard (an item beaten by k items of its own shard is
beaten by k items overall), so sorting the union by (distance, seq) and keeping k is exact,
ties included. Padding (k larger than the index) carries PAD_DISTANCE and SEQ_PAD and sorts last,
as in the single-node index.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cmhash.runtime.search_cpu import PAD_DISTANCE, PAD_ID

#: The seq of padding slots: larger than any real seq, so padding sorts after real hits.
SEQ_PAD = int(np.iinfo(np.int64).max)

#: One shard's answer: distances int32 (nq, k), seqs int64 (nq, k), ids int64 (nq, k).
ShardHits = tuple[np.ndarray, np.ndarray, np.ndarray]


def merge_topk(parts: Sequence[ShardHits], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k (distances int32 (nq, k), ids int64 (nq, k)) from every shard's top-k."""
    if not parts:
        raise ValueError("merge_topk needs at least one shard's results")
    dist = np.concatenate([p[0] for p in parts], axis=1)
    seq = np.concatenate([p[1] for p in parts], axis=1)
    ids = np.concatenate([p[2] for p in parts], axis=1)
    order = np.lexsort((seq, dist), axis=1)[:, :k]  # last key is primary: distance, then seq
    out_d = np.take_along_axis(dist, order, axis=1).astype(np.int32, copy=False)
    out_i = np.take_along_axis(ids, order, axis=1)
    if out_d.shape[1] < k:  # fewer slots than k (cannot happen when every shard pads to k)
        pad = k - out_d.shape[1]
        out_d = np.pad(out_d, ((0, 0), (0, pad)), constant_values=PAD_DISTANCE)
        out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=PAD_ID)
    return out_d, out_i


def merge_ranges(parts: Sequence[list[ShardHits]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, (distances, ids) of every shard's range hits, in (distance, seq) order."""
    if not parts:
        raise ValueError("merge_ranges needs at least one shard's results")
    out = []
    for per_query in zip(*parts):
        dist = np.concatenate([h[0] for h in per_query])
        seq = np.concatenate([h[1] for h in per_query])
        ids = np.concatenate([h[2] for h in per_query])
        order = np.lexsort((seq, dist))
        out.append((dist[order].astype(np.int32, copy=False), ids[order]))
    return out
