"""Exact multi-index hashing (Norouzi, Punjani and Fleet, TPAMI 2014): sublinear exact Hamming k-NN.

Each code is cut into m disjoint substrings of contiguous bits (bit i is bit i % 8 of byte
i // 8); substring j gets a table that maps each of its 2**s_j values to the rows holding it (CSR:
`offsets` of 2**s_j + 1 entries and the row numbers, uint32 below 2**32 rows, sorted by value and
then by row). A query probes, in the order (a, j) = (0, 0), (0, 1), ..., (0, m-1), (1, 0), ...,
the buckets of table j at Hamming distance exactly a from its own substring. After step (a, j)
every row within distance m*a + j of the query has been seen (pigeonhole: an unseen row differs
by >= a+1 on substrings 0..j and >= a on the others). Search stops once the k-th best distance D
found so far satisfies D <= m*a + j: every row at distance <= D, ties included, has then been seen,
so sorting the candidates by (distance, row) gives exactly the scan's answer.

A candidate found in table j at distance a is counted only at its first step: (a, j) must be the
smallest (d_i, i) over its substrings, which the substring distances (computed anyway: their sum
is the full distance) decide with no visited set.

`budget` (auto mode) bounds the work of one query (buckets probed + candidates checked); a query
that exceeds it is reported as failed and its caller answers it with the scan: the answer is the
same, and a query for which MIH does not pay (e.g. uniform random codes) costs at most the budget
more than the scan. Kernels need numba (compiled on first use, cached on disk).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from cmhash.errors import InvalidInputError
from cmhash.runtime import search_cpu

_KEY_SHIFT = 40  # sort key = distance << 40 | row: rows below 2**40
_ROW_MASK = (1 << _KEY_SHIFT) - 1
MAX_SUBSTRING_BITS = 32
_NO_WORDS = np.empty(0, np.int64)


@dataclass(frozen=True)
class MihTables:
    """The substring tables over rows [:n] of one codes buffer (generation `gen`)."""

    n: int
    gen: int
    starts: np.ndarray  # (m,) int64 first bit of each substring
    lens: np.ndarray  # (m,) int64 bits of each substring
    obase: np.ndarray  # (m,) int64 where table j's offsets start in `offsets`
    offsets: np.ndarray  # concatenated CSR offsets, uint32 or int64
    rows: np.ndarray  # (m * n,) table j's rows at [j * n, (j + 1) * n), uint32 or int64

    @property
    def m(self) -> int:
        return int(self.lens.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.rows.nbytes)


def choose_m(bits: int, n: int) -> int:
    """m = ceil(bits / floor(log2 n)): substrings of about log2(n) bits (the paper's choice, whose
    tables then hold about one row per bucket), and at most 32 bits each."""
    s = max(4, int(math.floor(math.log2(max(n, 2)))))
    return max(1, min(bits, max(math.ceil(bits / s), math.ceil(bits / MAX_SUBSTRING_BITS))))


def fit_m(bits: int, n: int, m: int) -> int:
    """The smallest m' >= m whose substrings have at most max(16, floor(log2 n) + 2) bits, so
    that the offsets cost at most 4 entries per row (a larger m never changes the answers)."""
    cap = max(16, int(math.floor(math.log2(max(n, 2)))) + 2)
    return max(int(m), math.ceil(bits / min(cap, MAX_SUBSTRING_BITS)))


def split(bits: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lens) of m contiguous substrings; the first bits % m are one bit longer."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= bits:
        raise InvalidInputError(f"mih_m (the number of substrings) must be an integer in 1..{bits}, got {m!r}")
    lens = np.array([bits // m + (j < bits % m) for j in range(int(m))], np.int64)
    if int(lens.max()) > MAX_SUBSTRING_BITS:
        raise InvalidInputError(f"mih_m={m} makes {int(lens.max())}-bit substrings for {bits}-bit codes; "
                                f"use mih_m >= {math.ceil(bits / MAX_SUBSTRING_BITS)} (at most "
                                f"{MAX_SUBSTRING_BITS} bits per substring)")
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    return starts, lens


# ------------------------------------------------------------------------------------------
# numba kernels (plain functions, compiled by _kernels(); names bound there)
# ------------------------------------------------------------------------------------------
popcount = _sub = _alive = _probe = None
_GATHER = 256  # rows of a bucket gathered before they are checked


def _py_sub(db8, base, nbytes, start, s):
    """Bits [start, start + s) of the code at byte offset `base` of db8, as an int64."""
    b0 = start >> 3
    b1 = min(nbytes, (start + s + 7) >> 3)
    v = 0
    for b in range(b0, b1):
        v |= np.int64(db8[base + b]) << (8 * (b - b0))
    return (v >> (start & 7)) & ((np.int64(1) << s) - 1)


def _py_build(db8, n, nbytes, start, s, offsets, obase, rows, rbase):
    """Counting sort of rows [:n] by their substring (start, s): table j's CSR arrays."""
    nb = 1 << s
    for v in range(nb + 1):
        offsets[obase + v] = 0
    for t in range(n):
        offsets[obase + _sub(db8, t * nbytes, nbytes, start, s) + 1] += 1
    for v in range(nb):
        offsets[obase + v + 1] += offsets[obase + v]
    cursor = np.empty(nb, np.int64)
    for v in range(nb):
        cursor[v] = offsets[obase + v]
    for t in range(n):
        v = _sub(db8, t * nbytes, nbytes, start, s)
        rows[rbase + cursor[v]] = t
        cursor[v] += 1


def _py_probe(q8, qi, db8, db64, W, nbytes, n, starts, lens, obase, offsets, rows, dead, bits, k, radius,
              budget, masks, wlo, whi, qs, q64, ts, xs, hist, buf):
    """One query: (candidate count, limit, failed, buffer). k > 0: top-k; k == 0: range <= radius.

    The buffer holds keys (distance << 40 | row) of every first-found candidate with distance <=
    the current limit (ties included). The limit is the radius, or the k-th best distance so far.
    With whole-word rows (W > 0) each bucket's codes are gathered first (independent loads that
    overlap their cache misses), then checked with word masks: the full distance rejects most
    candidates before the first-found test.
    """
    m = starts.shape[0]
    for j in range(m):
        qs[j] = _sub(q8, qi * nbytes, nbytes, starts[j], lens[j])
    for w in range(W):
        v = np.int64(0)
        for b in range(8):
            v |= np.int64(q8[qi * nbytes + 8 * w + b]) << (8 * b)
        q64[w] = v
    for d in range(bits + 2):
        hist[d] = 0
    L = bits if k > 0 else radius
    le = 0  # candidates with distance <= L
    c = 0
    work = 0
    smax = 0
    chunk = ts.shape[0]
    for j in range(m):
        smax = max(smax, lens[j])
    for a in range(smax + 1):
        for i in range(m):
            s = lens[i]
            if a <= s:
                mask = (np.int64(1) << a) - 1
                top = np.int64(1) << s
                ob = obase[i]
                rb = i * n
                qv = qs[i]
                while mask < top:
                    b = qv ^ mask
                    o0 = np.int64(offsets[ob + b])
                    o1 = np.int64(offsets[ob + b + 1])
                    work += 1 + (o1 - o0)
                    o = o0
                    while o < o1:
                        ne = min(o1 - o, chunk)
                        for e in range(ne):
                            t = np.int64(rows[rb + o + e])
                            ts[e] = t
                            for w in range(W):
                                xs[e * W + w] = db64[t * W + w]
                        o += ne
                        for e in range(ne):
                            t = ts[e]
                            if not _alive(dead, t):
                                continue
                            first = True
                            if W > 0:
                                tot = 0
                                for w in range(W):
                                    tot += popcount(xs[e * W + w] ^ q64[w])
                                if tot > L:
                                    continue
                                for j in range(m):
                                    if j != i:
                                        dj = 0
                                        for w in range(wlo[j], whi[j]):
                                            dj += popcount((xs[e * W + w] ^ q64[w]) & masks[j * W + w])
                                        if dj < a or (dj == a and j < i):
                                            first = False
                                            break
                            else:
                                tot = a
                                for j in range(m):
                                    if j != i:
                                        dj = popcount(_sub(db8, t * nbytes, nbytes, starts[j], lens[j]) ^ qs[j])
                                        if dj < a or (dj == a and j < i):
                                            first = False
                                            break
                                        tot += dj
                                if tot > L:
                                    continue
                            if not first:
                                continue
                            if c == buf.shape[0]:  # drop entries above the limit, grow if still full
                                w2 = 0
                                for e2 in range(c):
                                    if (buf[e2] >> 40) <= L:
                                        buf[w2] = buf[e2]
                                        w2 += 1
                                c = w2
                                if c > buf.shape[0] // 2:
                                    nbuf = np.empty(2 * buf.shape[0], np.int64)
                                    nbuf[:c] = buf[:c]
                                    buf = nbuf
                            buf[c] = (np.int64(tot) << 40) | t
                            c += 1
                            hist[tot] += 1
                            le += 1
                            if k > 0:
                                while L > 0 and le - hist[L] >= k:
                                    le -= hist[L]
                                    L -= 1
                    if a == 0:
                        break
                    low = mask & -mask  # Gosper's hack: the next s-bit mask with a bits set
                    r = mask + low
                    mask = (((r ^ mask) >> 2) // low) | r
            if k > 0:
                if le >= k and L <= m * a + i:
                    return c, L, False, buf
            elif radius <= m * a + i:
                return c, L, False, buf
            if budget > 0 and work > budget:
                return c, L, True, buf
    return c, L, False, buf


def _scratch(m, W, bits):
    return (np.empty(m, np.int64), np.empty(max(W, 1), np.int64), np.empty(_GATHER, np.int64),
            np.empty(_GATHER * max(W, 1), np.int64), np.zeros(bits + 2, np.int64))


def _py_topk(q8, db8, db64, W, nbytes, n, starts, lens, obase, offsets, rows, dead, masks, wlo, whi, bits, k,
             budget, out_d, out_p, failed):
    nq = q8.shape[0] // nbytes
    qs, q64, ts, xs, hist = _scratch(starts.shape[0], W, bits)
    buf = np.empty(max(1024, 4 * k), np.int64)
    for qi in range(nq):
        c, L, bad, buf = _probe(q8, qi, db8, db64, W, nbytes, n, starts, lens, obase, offsets, rows, dead,
                                bits, k, 0, budget, masks, wlo, whi, qs, q64, ts, xs, hist, buf)
        if bad:
            failed[qi] = True
            continue
        w = 0
        for e in range(c):
            if (buf[e] >> 40) <= L:
                buf[w] = buf[e]
                w += 1
        keys = np.sort(buf[:w])
        for e in range(min(k, w)):
            out_d[qi, e] = keys[e] >> 40
            out_p[qi, e] = keys[e] & 0xFFFFFFFFFF


def _py_range(q8, qi, db8, db64, W, nbytes, n, starts, lens, obase, offsets, rows, dead, masks, wlo, whi, bits,
              radius):
    qs, q64, ts, xs, hist = _scratch(starts.shape[0], W, bits)
    buf = np.empty(1024, np.int64)
    c, L, bad, buf = _probe(q8, qi, db8, db64, W, nbytes, n, starts, lens, obase, offsets, rows, dead,
                            bits, 0, radius, 0, masks, wlo, whi, qs, q64, ts, xs, hist, buf)
    return np.sort(buf[:c])


_KERNELS: dict = {}
_LOCK = threading.Lock()


def _kernels() -> dict:
    if _KERNELS:
        return _KERNELS
    with _LOCK:
        if _KERNELS:
            return _KERNELS
        numba = search_cpu.load_numba("multi-index hashing")
        search_cpu._kernels()  # noqa: SLF001 - binds the popcount intrinsic and _alive
        g = globals()
        g["popcount"] = search_cpu.popcount
        jit = numba.njit(nogil=True, cache=True)
        g["_alive"] = jit(search_cpu._py_alive)  # noqa: SLF001
        g["_sub"] = jit(_py_sub)
        g["_scratch"] = jit(_scratch)
        g["_probe"] = jit(_py_probe)
        _KERNELS.update(build=jit(_py_build), topk=jit(_py_topk), range=jit(_py_range))
        return _KERNELS


# ------------------------------------------------------------------------------------------
# drivers
# ------------------------------------------------------------------------------------------


def build(codes: np.ndarray, n: int, gen: int, m: int | None = None) -> MihTables:
    """Tables over rows [:n] of `codes` (n, nbytes) uint8; m from `choose_m` unless given."""
    bits = codes.shape[1] * 8
    starts, lens = split(bits, choose_m(bits, n) if m is None else fit_m(bits, n, m))
    wide = n >= 2**32
    odt = np.int64 if wide else np.uint32
    sizes = (1 << lens) + 1
    obase = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    offsets = np.empty(int(sizes.sum()), odt)
    rows = np.empty(len(lens) * n, odt)
    db8 = np.ascontiguousarray(codes[:n]).reshape(-1)
    kern = _kernels()["build"]
    for j in range(len(lens)):
        kern(db8, n, codes.shape[1], int(starts[j]), int(lens[j]), offsets, int(obase[j]), rows, j * n)
    return MihTables(n, gen, starts, lens, obase, offsets, rows)


def _args(t: MihTables, codes: np.ndarray, dead: np.ndarray | None) -> tuple:
    db8 = np.ascontiguousarray(codes[: t.n]).reshape(-1)
    W = codes.shape[1] // 8 if codes.shape[1] % 8 == 0 else 0
    db64 = db8.view(np.int64) if W else _NO_WORDS
    masks = np.zeros(len(t.lens) * max(W, 1), np.int64)  # substring j's bits in word w: masks[j * W + w]
    wlo = np.zeros(len(t.lens), np.int64)
    whi = np.zeros(len(t.lens), np.int64)
    for j, (start, s) in enumerate(zip(t.starts.tolist(), t.lens.tolist())):
        wlo[j], whi[j] = start // 64, (start + s - 1) // 64 + 1
        for w in range(wlo[j], whi[j]) if W else ():
            lo, hi = max(start, 64 * w), min(start + s, 64 * w + 64)
            masks[j * W + w] = np.uint64(((1 << (hi - lo)) - 1) << (lo - 64 * w)).view(np.int64)
    return (db8, db64, W, codes.shape[1], t.n, t.starts, t.lens, t.obase, t.offsets, t.rows,
            search_cpu._dead_bits(dead, t.n), masks, wlo, whi)  # noqa: SLF001


def topk(t: MihTables, queries: np.ndarray, codes: np.ndarray, dead: np.ndarray | None, k: int, *,
         budget: int = 0, threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distances int32 (nq, k), rows int64 (nq, k), failed bool (nq,)) over rows [:t.n].

    Rows of failed queries (work over `budget`, when > 0) are unset: answer them with the scan.
    """
    nq = queries.shape[0]
    bits = queries.shape[1] * 8
    out_d = np.full((nq, k), search_cpu.PAD_DISTANCE, np.int32)
    out_p = np.full((nq, k), search_cpu.PAD_ID, np.int64)
    failed = np.zeros(nq, bool)
    q8 = np.ascontiguousarray(queries)
    args = _args(t, codes, dead)
    kern = _kernels()["topk"]
    search_cpu._run_parallel(  # noqa: SLF001
        lambda a, b: kern(q8[a:b].reshape(-1), *args, bits, k, budget, out_d[a:b], out_p[a:b], failed[a:b]),
        nq, threads)
    return out_d, out_p, failed


def range_search(t: MihTables, queries: np.ndarray, codes: np.ndarray, dead: np.ndarray | None,
                 radius: int, *, threads: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, (distances int32, rows int64) of every row [:t.n] within `radius`, in (d, row) order."""
    bits = queries.shape[1] * 8
    q8 = np.ascontiguousarray(queries).reshape(-1)
    args = _args(t, codes, dead)
    kern = _kernels()["range"]
    out: list = [None] * queries.shape[0]

    def work(a: int, b: int) -> None:
        for qi in range(a, b):
            keys = kern(q8, qi, *args, bits, min(int(radius), bits))
            out[qi] = ((keys >> _KEY_SHIFT).astype(np.int32), keys & _ROW_MASK)

    search_cpu._run_parallel(work, queries.shape[0], threads)  # noqa: SLF001
    return out
