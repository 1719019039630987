"""Exact Hamming top-k and range search on the CPU: a numba kernel and a pure-numpy fallback.

Both paths return identical results, ordered by (distance, database position) ascending, which is
FAISS `IndexBinaryFlat`'s order (ties go to the lowest position).

The numba kernel ("threshold scan")
-----------------------------------
Per query it keeps a limit `L`: a database item can only enter the top k if its distance is
`<= L`. `L` starts at `bits`; the items accepted so far are counted per distance (a histogram of
at most `bits + 1` bins) and appended, in position order, to a small per-query buffer. As soon as
`k` accepted items have a distance `<= L`, the limit drops to `t - 1`, where `t` is the smallest
distance with `k` accepted items at or below it: a later item at distance `t` comes after `k`
items that beat or tie it at a lower position, so it can never enter. At the end the answer is
every buffered item with `d <= L` plus the first `k - count(d <= L)` buffered items at
`d = L + 1` (position order), sorted by a stable counting sort on `d`. That is exactly the
(distance, position) order, with no comparison sort.

The hot loop only computes `popcount(q ^ code) <= L` over chunks of 64 codes and counts the hits,
which LLVM vectorises (AVX-512 VPOPCNTQ / AVX2 where present); the rare chunk with a hit is
re-scanned scalar. Queries are processed in blocks over database slices that stay in L2, and
query groups run on `threads` Python threads (the kernels release the GIL), so concurrent searches
from many threads are safe (no numba threading layer is involved).

Numba is optional: `numba_available()` says whether it imported; the numpy path is used without
it. Kernels are compiled on first use and cached on disk (`cache=True`, in `CACHE_DIR/numba`).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cmhash import constants
from cmhash.errors import InvalidInputError, MissingDependencyError, require
from cmhash.runtime.codes import hamming_distances
from cmhash.validators import positive_int

#: Distance written into the padding slots when k exceeds the index size (FAISS's value).
PAD_DISTANCE = int(np.iinfo(np.int32).max)
#: Id written into the padding slots when k exceeds the index size (FAISS's value).
PAD_ID = -1

_CHUNK = 128  # codes per vectorised check
_SEED_MIN = 8192  # items of the counting-selection seed: max(_SEED_MIN, _SEED_PER_K * k)
_SEED_PER_K = 64
_BLOCK_BYTES = 256 * 1024  # database slice scanned by a query block (stays in L2)
_BUFFER_BYTES = 256 << 20  # cap on the per-call candidate buffers (queries are batched)

# --------------------------------------------------------------------------------------------
# numba kernels: plain Python functions here, compiled by _kernels() on first use. They are
# module-level so that numba's on-disk cache can key them. The names below are bound by
# _kernels() to the numba popcount intrinsic and to the compiled helpers (numba freezes globals
# at compile time); they are never called from Python.
# --------------------------------------------------------------------------------------------
popcount = _compact = _accept = _dist = _alive = None
_scan_w1 = _scan_w2 = _scan_wn = _dists_w1 = _dists_w2 = _dists_wn = _seed = None


def _py_alive(dead, t):
    """False when row t is tombstoned in the bitmap `dead` (an empty bitmap: nothing is)."""
    return dead.shape[0] == 0 or ((dead[t >> 3] >> (t & 7)) & 1) == 0


def _py_compact(qi, L, k, below, bpos, bd, c):
    """Keep the current top-k candidates of query qi (all d <= L, then the first ties at L+1)."""
    need = k - below
    w = 0
    for i in range(c):
        d = bd[qi, i]
        if d <= L or (d == L + 1 and need > 0):
            if d == L + 1:
                need -= 1
            bpos[qi, w] = bpos[qi, i]
            bd[qi, w] = d
            w += 1
    return w


def _py_accept(qi, pos, d, L, k, hist, below, cnt, bpos, bd):
    """Record item `pos` at distance `d <= L` for query qi; return the (possibly lower) limit."""
    c = cnt[qi]
    if c == bpos.shape[1]:
        c = _compact(qi, L, k, below[qi], bpos, bd, c)
    bpos[qi, c] = pos
    bd[qi, c] = d
    cnt[qi] = c + 1
    hist[qi, d] += 1
    b = below[qi] + 1
    if b >= k:
        # smallest t with count(d <= t) >= k, walking down from L; count(d <= L) == b
        t = L
        cc = b
        while t > 0 and cc - hist[qi, t] >= k:
            cc -= hist[qi, t]
            t -= 1
        L = t - 1
        b = cc - hist[qi, t]
    below[qi] = b
    return L


def _py_scan_w1(x, db, dead, b0, b1, L, qi, k, hist, below, cnt, bpos, bd):
    j = b0
    while j < b1 and L >= 0:
        e = min(j + _CHUNK, b1)
        v = db[j:e]  # index a slice from 0: a provably non-negative index vectorises
        c = 0
        for t in range(v.shape[0]):
            if popcount(x ^ v[t]) <= L:
                c += 1
        if c > 0:
            for t in range(j, e):
                d = popcount(x ^ db[t])
                if d <= L and _alive(dead, t):
                    L = _accept(qi, t, d, L, k, hist, below, cnt, bpos, bd)
                    if L < 0:
                        break
        j = e
    return L


def _py_scan_w2(x0, x1, db, dead, b0, b1, L, qi, k, hist, below, cnt, bpos, bd):
    j = b0
    while j < b1 and L >= 0:
        e = min(j + _CHUNK, b1)
        v = db[2 * j:2 * e]
        c = 0
        for t in range(e - j):
            if popcount(x0 ^ v[2 * t]) + popcount(x1 ^ v[2 * t + 1]) <= L:
                c += 1
        if c > 0:
            for t in range(j, e):
                d = popcount(x0 ^ db[2 * t]) + popcount(x1 ^ db[2 * t + 1])
                if d <= L and _alive(dead, t):
                    L = _accept(qi, t, d, L, k, hist, below, cnt, bpos, bd)
                    if L < 0:
                        break
        j = e
    return L


def _py_dist(q, qi, db, t, W):
    s = 0
    for w in range(W):
        s += popcount(q[qi, w] ^ db[t * W + w])
    return s


def _py_scan_wn(q, W, db, dead, b0, b1, L, qi, k, hist, below, cnt, bpos, bd):
    for t in range(b0, b1):
        d = _dist(q, qi, db, t, W)
        if d <= L and _alive(dead, t):
            L = _accept(qi, t, d, L, k, hist, below, cnt, bpos, bd)
            if L < 0:
                break
    return L


def _py_dists_w1(x, db, b0, b1, out):
    v = db[b0:b1]
    for t in range(v.shape[0]):
        out[t] = popcount(x ^ v[t])


def _py_dists_w2(x0, x1, db, b0, b1, out):
    v = db[2 * b0:2 * b1]
    for t in range(b1 - b0):
        out[t] = popcount(x0 ^ v[2 * t]) + popcount(x1 ^ v[2 * t + 1])


def _py_dists_wn(q, qi, W, db, b0, b1, out):
    for t in range(b1 - b0):
        out[t] = _dist(q, qi, db, b0 + t, W)


def _py_seed(dists, m, qi, k, bits, hist, below, cnt, bpos, bd):
    """Exact state after the first m items (distances in dists[:m]) by a counting selection.

    Returns the limit L; the buffer then holds the current top-k in position order.
    """
    h = hist[qi]
    nb = h.shape[0]
    h4 = np.zeros(4 * nb, np.int64)  # 4 interleaved histograms: no store-to-load chains
    m4 = m - m % 4
    for t in range(0, m4, 4):  # a tombstoned row has distance nb - 1 (= bits + 1): never taken
        h4[dists[t]] += 1
        h4[nb + dists[t + 1]] += 1
        h4[2 * nb + dists[t + 2]] += 1
        h4[3 * nb + dists[t + 3]] += 1
    for t in range(m4, m):
        h4[dists[t]] += 1
    for d in range(nb):
        h[d] = h4[d] + h4[nb + d] + h4[2 * nb + d] + h4[3 * nb + d]
    live = m - h[nb - 1]
    h[nb - 1] = 0
    if live < k:  # everything live enters; no limit yet
        w = 0
        for t in range(m):
            if dists[t] <= bits:
                bpos[qi, w] = t
                bd[qi, w] = dists[t]
                w += 1
        cnt[qi] = w
        below[qi] = w
        return bits
    thr = 0
    c = h[0]
    while c < k:
        thr += 1
        c += h[thr]
    b = c - h[thr]  # count(d < thr) < k
    need = k - b
    w = 0
    for t in range(m):
        d = dists[t]
        if d < thr or (d == thr and need > 0):
            if d == thr:
                need -= 1
            bpos[qi, w] = t
            bd[qi, w] = d
            w += 1
    cnt[qi] = w
    below[qi] = b
    return thr - 1


def _py_topk(q, db, dead, k, bits, block, out_d, out_p):
    """Top-k of queries q (nq, W) against db (n * W,) words; fills out_d/out_p[:, :min(k, n)]."""
    nq, W = q.shape
    n = db.shape[0] // W
    cap = 2 * k + 64
    bpos = np.empty((nq, cap), np.int64)
    bd = np.empty((nq, cap), np.int64)
    cnt = np.zeros(nq, np.int64)
    below = np.zeros(nq, np.int64)
    hist = np.zeros((nq, bits + 2), np.int64)
    lim = np.full(nq, bits, np.int64)
    seed = min(n, block, max(_SEED_MIN, _SEED_PER_K * k))
    dists = np.empty(seed, np.int64)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        for qi in range(nq):
            s0 = b0
            if b0 == 0:  # seed: counting selection over the first `seed` items
                if W == 1:
                    _dists_w1(q[qi, 0], db, 0, seed, dists)
                elif W == 2:
                    _dists_w2(q[qi, 0], q[qi, 1], db, 0, seed, dists)
                else:
                    _dists_wn(q, qi, W, db, 0, seed, dists)
                if dead.shape[0]:
                    for t in range(seed):
                        if not _alive(dead, t):
                            dists[t] = bits + 1
                lim[qi] = _seed(dists, seed, qi, k, bits, hist, below, cnt, bpos, bd)
                s0 = seed
                if s0 >= b1:
                    continue
            L = lim[qi]
            if L < 0:
                continue
            if W == 1:
                L = _scan_w1(q[qi, 0], db, dead, s0, b1, L, qi, k, hist, below, cnt, bpos, bd)
            elif W == 2:
                L = _scan_w2(q[qi, 0], q[qi, 1], db, dead, s0, b1, L, qi, k, hist, below, cnt, bpos, bd)
            else:
                L = _scan_wn(q, W, db, dead, s0, b1, L, qi, k, hist, below, cnt, bpos, bd)
            lim[qi] = L
    k_eff = min(k, n)
    counts = np.empty(bits + 2, np.int64)
    for qi in range(nq):
        L = lim[qi]
        need = k_eff - below[qi]
        counts[:] = 0
        for i in range(cnt[qi]):
            d = bd[qi, i]
            if d <= L:
                counts[d] += 1
            elif d == L + 1 and need > 0:
                counts[d] += 1
                need -= 1
        s = 0
        for d in range(bits + 2):
            c = counts[d]
            counts[d] = s
            s += c
        need = k_eff - below[qi]
        for i in range(cnt[qi]):
            d = bd[qi, i]
            take = False
            if d <= L:
                take = True
            elif d == L + 1 and need > 0:
                take = True
                need -= 1
            if take:
                o = counts[d]
                counts[d] = o + 1
                out_d[qi, o] = d
                out_p[qi, o] = bpos[qi, i]


def _py_range_count(q, db, dead, radius, block, hist):
    """hist[qi, d] = number of items at distance d <= radius (d in 0..radius)."""
    nq, W = q.shape
    n = db.shape[0] // W
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        for qi in range(nq):
            if W == 1:
                x = q[qi, 0]
                j = b0
                while j < b1:
                    e = min(j + _CHUNK, b1)
                    v = db[j:e]
                    c = 0
                    for t in range(v.shape[0]):
                        if popcount(x ^ v[t]) <= radius:
                            c += 1
                    if c > 0:
                        for t in range(j, e):
                            d = popcount(x ^ db[t])
                            if d <= radius and _alive(dead, t):
                                hist[qi, d] += 1
                    j = e
            else:
                for t in range(b0, b1):
                    d = _dist(q, qi, db, t, W)
                    if d <= radius and _alive(dead, t):
                        hist[qi, d] += 1


def _py_range_fill(q, db, dead, radius, block, offs, out_d, out_p):
    """Write each match at offs[qi, d]++: the flat output is in (query, distance, position) order."""
    nq, W = q.shape
    n = db.shape[0] // W
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        for qi in range(nq):
            if W == 1:
                x = q[qi, 0]
                j = b0
                while j < b1:
                    e = min(j + _CHUNK, b1)
                    v = db[j:e]
                    c = 0
                    for t in range(v.shape[0]):
                        if popcount(x ^ v[t]) <= radius:
                            c += 1
                    if c > 0:
                        for t in range(j, e):
                            d = popcount(x ^ db[t])
                            if d <= radius and _alive(dead, t):
                                o = offs[qi, d]
                                offs[qi, d] = o + 1
                                out_d[o] = d
                                out_p[o] = t
                    j = e
            else:
                for t in range(b0, b1):
                    d = _dist(q, qi, db, t, W)
                    if d <= radius and _alive(dead, t):
                        o = offs[qi, d]
                        offs[qi, d] = o + 1
                        out_d[o] = d
                        out_p[o] = t


_KERNELS: dict = {}
_KERNELS_LOCK = threading.Lock()
_NUMBA_OK: bool | None = None


def load_numba(feature: str):
    """Import numba (or say which extra installs it), its kernel cache in cmhash's cache folder
    (`CACHE_DIR/numba`) unless NUMBA_CACHE_DIR is set. Why: numba's `cache=True` writes next to the
    module's source, which an installed package often may not write, so every new process compiled
    the kernels again (seconds, at its first search). Every numba import of cmhash goes through here."""
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(constants.CACHE_DIR / "numba"))
    return require("numba", "fast", feature)


def numba_available() -> bool:
    """True when numba imports (the compiled path is then the default)."""
    global _NUMBA_OK
    if _NUMBA_OK is None:
        try:
            load_numba("the compiled search kernels")
            _NUMBA_OK = True
        except MissingDependencyError:
            _NUMBA_OK = False
    return _NUMBA_OK


def _kernels() -> dict:
    """Compile (or load from numba's cache) the kernels; needs numba."""
    if _KERNELS:
        return _KERNELS
    with _KERNELS_LOCK:
        if _KERNELS:
            return _KERNELS
        numba = load_numba("the compiled Hamming search kernel")
        from llvmlite import ir
        from numba.core import types
        from numba.extending import intrinsic

        @intrinsic
        def _popcount(typingctx, x):
            if not isinstance(x, types.Integer):
                return None

            def codegen(context, builder, sig, args):
                v = builder.ctpop(args[0])
                if x.bitwidth < 64:
                    v = builder.zext(v, ir.IntType(64))
                return v

            return types.int64(x), codegen

        jit = numba.njit(nogil=True, cache=True)
        g = globals()
        g["popcount"] = _popcount
        for name in ("alive", "compact", "accept", "dist", "scan_w1", "scan_w2", "scan_wn",
                     "dists_w1", "dists_w2", "dists_wn", "seed"):
            g["_" + name] = jit(g["_py_" + name])
        kernels = {name: jit(g["_py_" + name]) for name in ("topk", "range_count", "range_fill")}
        _KERNELS.update(kernels)
        return _KERNELS


# --------------------------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------------------------

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def default_threads() -> int:
    """The number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    return positive_int(threads, "threads")


def _run_parallel(fn, nq: int, threads: int) -> None:
    """Call fn(start, stop) over `threads` contiguous query groups (inline when one)."""
    threads = max(1, min(threads, nq))
    if threads == 1:
        fn(0, nq)
        return
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:  # noqa: SLF001
            _POOL = ThreadPoolExecutor(max_workers=max(threads, default_threads()),
                                       thread_name_prefix="cmhash-search")
        pool = _POOL
    bounds = np.linspace(0, nq, threads + 1).astype(np.int64)
    futures = [pool.submit(fn, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()


def _word_dtype(nbytes: int) -> np.dtype:
    for dtype in (np.uint64, np.uint32, np.uint16):
        if nbytes % np.dtype(dtype).itemsize == 0:
            return np.dtype(dtype)
    return np.dtype(np.uint8)


def _as_words(codes: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, W) words of the widest unsigned type dividing the row (a view)."""
    codes = np.ascontiguousarray(codes)
    return codes.view(_word_dtype(codes.shape[1]))


def _block_rows(nbytes: int) -> int:
    return max(_CHUNK, (_BLOCK_BYTES // max(nbytes, 1)) // _CHUNK * _CHUNK)


_NO_DEAD = np.empty(0, np.uint8)


def _dead_bits(dead: np.ndarray | None, n: int) -> np.ndarray:
    """The tombstone bitmap as the kernels take it (an empty array: no row is removed)."""
    if dead is None:
        return _NO_DEAD
    return np.ascontiguousarray(dead[: (n + 7) // 8], dtype=np.uint8)


def dead_mask(dead: np.ndarray | None, n: int) -> np.ndarray | None:
    """The bitmap as a bool (n,) mask (True = removed), or None."""
    if dead is None:
        return None
    return np.unpackbits(np.asarray(dead[: (n + 7) // 8], np.uint8), count=n, bitorder="little").astype(bool)


def topk(queries: np.ndarray, database: np.ndarray, k: int, *, backend: str = "auto",
         threads: int | None = None, dead: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Hamming distance: (distances int32 (nq, k), positions int64 (nq, k)).

    `queries` (nq, B) and `database` (n, B) are packed uint8 codes of the same width (validated by
    the caller). Rows are ordered by (distance, position); when k exceeds the live rows the last
    slots hold PAD_DISTANCE / PAD_ID. `dead`: a tombstone bitmap (bit r % 8 of byte r // 8 set =
    row r is removed and never returned). backend: "numba", "numpy" or "auto" (numba when installed).
    """
    nq, n = queries.shape[0], database.shape[0]
    bits = queries.shape[1] * 8
    threads = _check_threads(threads)
    out_d = np.full((nq, k), PAD_DISTANCE, np.int32)
    out_p = np.full((nq, k), PAD_ID, np.int64)
    if n == 0 or nq == 0:
        return out_d, out_p
    backend = _resolve(backend)
    if backend == "numpy":
        mask = dead_mask(dead, n)
        _run_parallel(lambda a, b: _topk_numpy(queries[a:b], database, k, out_d[a:b], out_p[a:b], mask),
                      nq, threads)
        return out_d, out_p
    kern = _kernels()["topk"]
    dead = _dead_bits(dead, n)
    q, db = _as_words(queries), _as_words(database).reshape(-1)
    block = _block_rows(queries.shape[1])
    # bound the candidate buffers: (2k + 64) * 16 bytes per query in flight
    batch = max(1, _BUFFER_BYTES // ((2 * k + 64) * 16 + (bits + 2) * 8))

    def work(a: int, b: int) -> None:
        for s in range(a, b, batch):
            e = min(b, s + batch)
            kern(q[s:e], db, dead, k, bits, block, out_d[s:e], out_p[s:e])

    _run_parallel(work, nq, threads)
    return out_d, out_p


def range_search(queries: np.ndarray, database: np.ndarray, radius: int, *, backend: str = "auto",
                 threads: int | None = None, dead: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All items with distance <= radius: (lims int64 (nq+1,), distances int32, positions int64).

    Query i's results are distances[lims[i]:lims[i+1]], ordered by (distance, position).
    """
    nq, n = queries.shape[0], database.shape[0]
    bits = queries.shape[1] * 8
    threads = _check_threads(threads)
    radius = min(int(radius), bits)
    if n == 0 or nq == 0:
        return np.zeros(nq + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
    backend = _resolve(backend)
    if backend == "numpy":
        return _range_numpy(queries, database, radius, dead_mask(dead, n))
    kerns = _kernels()
    dead = _dead_bits(dead, n)
    q, db = _as_words(queries), _as_words(database).reshape(-1)
    block = _block_rows(queries.shape[1])
    hist = np.zeros((nq, radius + 1), np.int64)
    _run_parallel(lambda a, b: kerns["range_count"](q[a:b], db, dead, radius, block, hist[a:b]),
                  nq, threads)
    flat = hist.reshape(-1)
    offs = np.zeros(flat.size, np.int64)
    np.cumsum(flat[:-1], out=offs[1:])
    offs = offs.reshape(nq, radius + 1)
    lims = np.empty(nq + 1, np.int64)
    lims[:-1] = offs[:, 0]
    lims[-1] = int(flat.sum())
    out_d = np.empty(lims[-1], np.int32)
    out_p = np.empty(lims[-1], np.int64)
    _run_parallel(lambda a, b: kerns["range_fill"](q[a:b], db, dead, radius, block, offs[a:b], out_d, out_p),
                  nq, threads)
    return lims, out_d, out_p


def _resolve(backend: str) -> str:
    if backend == "auto":
        return "numba" if numba_available() else "numpy"
    if backend not in ("numba", "numpy"):
        raise InvalidInputError(f"unknown CPU search backend {backend!r}; use 'auto', 'numba' or 'numpy'")
    if backend == "numba":
        load_numba("the compiled Hamming search kernel (backend='numba')")
    return backend


# --------------------------------------------------------------------------------------------
# pure numpy path
# --------------------------------------------------------------------------------------------


def _distance_blocks(queries: np.ndarray, database: np.ndarray):
    """Yield (start, distances uint16 (rows, n)) over query blocks of about 64 MB of work."""
    n, nbytes = database.shape
    rows = max(1, (64 << 20) // max(1, n * max(nbytes, 8)))
    for s in range(0, queries.shape[0], rows):
        yield s, hamming_distances(queries[s:s + rows], database)


def _topk_numpy(queries, database, k, out_d, out_p, dead=None) -> None:
    n = database.shape[0]
    bits = queries.shape[1] * 8
    k_eff = min(k, n if dead is None else n - int(dead.sum()))
    if k_eff == 0:
        return
    for s, dist in _distance_blocks(queries, database):
        for i, row in enumerate(dist):
            if dead is not None:
                row[dead] = bits + 1  # removed rows sort after every live one
            hist = np.bincount(row, minlength=bits + 1)
            thr = int(np.searchsorted(np.cumsum(hist), k_eff))  # smallest t with count(<= t) >= k
            cand = np.flatnonzero(row <= thr)
            order = np.argsort(row[cand], kind="stable")[:k_eff]
            out_p[s + i, :k_eff] = cand[order]
            out_d[s + i, :k_eff] = row[cand[order]]


def _range_numpy(queries, database, radius, dead=None):
    lims = [0]
    ds, ps = [np.empty(0, np.int32)], [np.empty(0, np.int64)]
    for _, dist in _distance_blocks(queries, database):
        for row in dist:
            cand = np.flatnonzero((row <= radius) if dead is None else (row <= radius) & ~dead)
            order = np.argsort(row[cand], kind="stable")
            ps.append(cand[order])
            ds.append(row[cand[order]].astype(np.int32))
            lims.append(lims[-1] + cand.size)
    return (np.asarray(lims, np.int64), np.concatenate(ds).astype(np.int32),
            np.concatenate(ps).astype(np.int64))
