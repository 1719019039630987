"""Exact Hamming top-k on a CUDA GPU with CuPy raw kernels; same results as the CPU paths.

Used by `HammingIndex(bits, device="cuda")` (or backend="cupy"). CuPy is imported only here, and
only when such an index is created; without CuPy that raises MissingDependencyError, without a
visible GPU GpuUnavailableError (a MissingDependencyError).

Layout: the database is uploaded once per index state as uint32 words, word-major (W, n) with
W = ceil(bits / 32) (zero-padded; zero bytes add no distance), so every load is coalesced.

Algorithm, per batch of queries (all on the device; n = items, k = top-k):
1. bound    - `cmh_count` (limit `bits`) over the first S1 = max(4k, 16384) items: the k-th
              smallest distance U1[q] there bounds the true k-th distance from above (a subset's
              k-th smallest is never below the whole set's). A second `cmh_count` over the first
              S2 = n / 16 items, counting only d <= U1, tightens it to U[q].
2. count    - `cmh_count_cand`, the one full pass: per-query histograms of the distances <= U[q]
              (shared-memory atomics, rare because U is tight; one global atomic per non-zero bin
              and block), and every such item appended as a 64-bit key (d << 32 | position) to a
              per-query candidate buffer of C = clamp(4k * n / S2, 2048, 65536) slots. The
              histogram's cumulative sum gives the exact threshold T[q] (smallest t with
              count(d <= t) >= k), n_lt = count(d < T) and need = k - n_lt, the ties at T that
              enter the top k.
3. split    - `cmh_split` (one block per query) moves candidates with d < T (exactly n_lt of
              them) to the query's k key slots and the positions of those with d == T to a tie
              buffer of M = max(k, 256) slots. Queries whose candidate buffer overflowed instead
              run `cmh_collect`, an exact second pass over the database that does the same from
              the codes. When n <= S1 there is no bound: the histogram is exact and `cmh_collect`
              runs for all queries.
4. ties     - queries with more than M ties at T run `cmh_ties_ordered`: one block scans the
              database in position order (ballot + block prefix sum) and keeps the first `need`
              ties, stopping as soon as it has them.
5. finish   - keys and tie positions are sorted per row (cupy.sort), and `cmh_finish` writes
              row = sorted keys[:n_lt] + (T, first `need` tie positions) + padding. That is the
              (distance, position) order, the same as FAISS and the CPU kernels.

The database may hold up to 2**31 - 1 items (positions are int32 on the device).
"""

from __future__ import annotations

import threading

import numpy as np

from cmhash.errors import InvalidInputError, MissingDependencyError, require
from cmhash.runtime.search_cpu import PAD_DISTANCE, PAD_ID
_THREADS = 256
_SAMPLE_MIN = 16384  # first bound: the k-th distance over max(4k, this many) leading items
_SAMPLE_FRACTION = 16  # second, tighter bound: over the leading n / 16 items
_BATCH_BYTES = 1 << 30  # device memory for one batch of per-query buffers


_MODULES: dict = {}  # (device, source) -> compiled kernels
_MODULES_LOCK = threading.Lock()


class GpuUnavailableError(MissingDependencyError):
    """CuPy is installed but no usable CUDA device is visible."""


_SOURCE = r"""
#define W {W}
#define QT {QT}
#define E {E}
#define NB {NB}

template <bool WRITE>
__device__ __forceinline__ void count_body(
          const unsigned int* __restrict__ db, const long long n, const long long stop,
          const long long chunk, const unsigned int* __restrict__ q, const int nq,
          const int* __restrict__ lim, int* __restrict__ hist,
          int* __restrict__ cand_cnt, long long* __restrict__ cand, const int C)
{{
    extern __shared__ int smem[];
    int* sh = smem;                                          // QT * NB
    unsigned int* qs = (unsigned int*)(smem + QT * NB);      // QT * W
    int* ls = (int*)(qs + QT * W);                           // QT
    const int q0 = blockIdx.y * QT;
    for (int t = threadIdx.x; t < QT * NB; t += blockDim.x) sh[t] = 0;
    for (int t = threadIdx.x; t < QT * W; t += blockDim.x) {{
        const int qq = t / W;
        qs[t] = (q0 + qq < nq) ? q[(long long)(q0 + qq) * W + (t % W)] : 0u;
    }}
    for (int t = threadIdx.x; t < QT; t += blockDim.x) ls[t] = (q0 + t < nq) ? lim[q0 + t] : -1;
    __syncthreads();
    const long long c0 = (long long)blockIdx.x * chunk;
    const long long c1 = min(stop, c0 + chunk);
    for (long long base = c0; base < c1; base += (long long)E * blockDim.x) {{
        unsigned int x[E][W];
        bool ok[E];
#pragma unroll
        for (int e = 0; e < E; ++e) {{
            const long long i = base + (long long)e * blockDim.x + threadIdx.x;
            ok[e] = i < c1;
#pragma unroll
            for (int w = 0; w < W; ++w) x[e][w] = ok[e] ? db[(long long)w * n + i] : 0u;
        }}
#pragma unroll 2
        for (int qq = 0; qq < QT; ++qq) {{
            const int L = ls[qq];
            int d[E];
#pragma unroll
            for (int e = 0; e < E; ++e) d[e] = 0;
#pragma unroll
            for (int w = 0; w < W; ++w) {{
                const unsigned int y = qs[qq * W + w];
#pragma unroll
                for (int e = 0; e < E; ++e) d[e] += __popc(x[e][w] ^ y);
            }}
#pragma unroll
            for (int e = 0; e < E; ++e) {{
                if (ok[e] && d[e] <= L) {{
                    atomicAdd(&sh[qq * NB + d[e]], 1);
                    if (WRITE) {{
                        const long long qg = q0 + qq;
                        const int s = atomicAdd(&cand_cnt[qg], 1);
                        if (s < C) cand[qg * C + s] =
                            ((long long)d[e] << 32) | (base + (long long)e * blockDim.x + threadIdx.x);
                    }}
                }}
            }}
        }}
    }}
    __syncthreads();
    for (int t = threadIdx.x; t < QT * NB; t += blockDim.x) {{
        const int v = sh[t];
        const int qq = t / NB;
        if (v != 0 && q0 + qq < nq) atomicAdd(&hist[(long long)(q0 + qq) * NB + (t % NB)], v);
    }}
}}

// per-query histogram of the distances <= lim[q] over items [0, stop)
extern "C" __global__ void __launch_bounds__(256)
cmh_count(const unsigned int* __restrict__ db, const long long n, const long long stop,
          const long long chunk, const unsigned int* __restrict__ q, const int nq,
          const int* __restrict__ lim, int* __restrict__ hist)
{{
    count_body<false>(db, n, stop, chunk, q, nq, lim, hist, nullptr, nullptr, 0);
}}

// the same, and every item with d <= lim[q] appended to cand[q] as (d << 32 | position)
extern "C" __global__ void __launch_bounds__(256)
cmh_count_cand(const unsigned int* __restrict__ db, const long long n, const long long stop,
               const long long chunk, const unsigned int* __restrict__ q, const int nq,
               const int* __restrict__ lim, int* __restrict__ hist,
               int* __restrict__ cand_cnt, long long* __restrict__ cand, const int C)
{{
    count_body<true>(db, n, stop, chunk, q, nq, lim, hist, cand_cnt, cand, C);
}}

// one block per query: split its candidates into d < T (keys) and d == T (tie positions)
extern "C" __global__ void __launch_bounds__(256)
cmh_split(const int nq, const int* __restrict__ cand_cnt, const long long* __restrict__ cand,
          const int C, const int* __restrict__ thr, const int k, int* __restrict__ cnt_lt,
          long long* __restrict__ lt_key, int* __restrict__ cnt_tie, int* __restrict__ tie_pos,
          const int M)
{{
    __shared__ int s_lt, s_tie;
    const long long qg = blockIdx.x;
    const int m = cand_cnt[qg];
    if (m > C) return;  // overflowed: handled by the collect pass
    if (threadIdx.x == 0) {{ s_lt = 0; s_tie = 0; }}
    __syncthreads();
    const int T = thr[qg];
    for (int j = threadIdx.x; j < m; j += blockDim.x) {{
        const long long key = cand[qg * C + j];
        const int d = (int)(key >> 32);
        if (d < T) {{
            const int s = atomicAdd(&s_lt, 1);
            if (s < k) lt_key[qg * k + s] = key;
        }} else if (d == T) {{
            const int s = atomicAdd(&s_tie, 1);
            if (s < M) tie_pos[qg * M + s] = (int)(key & 0xffffffffLL);
        }}
    }}
    __syncthreads();
    if (threadIdx.x == 0) {{ cnt_lt[qg] = s_lt; cnt_tie[qg] = s_tie; }}
}}

extern "C" __global__ void __launch_bounds__(256)
cmh_collect(const unsigned int* __restrict__ db, const long long n, const long long chunk,
            const unsigned int* __restrict__ q, const int nq, const int* __restrict__ thr,
            const int k, int* __restrict__ cnt_lt, long long* __restrict__ lt_key,
            int* __restrict__ cnt_tie, int* __restrict__ tie_pos, const int M)
{{
    extern __shared__ int smem[];
    unsigned int* qs = (unsigned int*)smem;                  // QT * W
    int* ts = (int*)(qs + QT * W);                           // QT
    const int q0 = blockIdx.y * QT;
    for (int t = threadIdx.x; t < QT * W; t += blockDim.x) {{
        const int qq = t / W;
        qs[t] = (q0 + qq < nq) ? q[(long long)(q0 + qq) * W + (t % W)] : 0u;
    }}
    for (int t = threadIdx.x; t < QT; t += blockDim.x) ts[t] = (q0 + t < nq) ? thr[q0 + t] : -1;
    __syncthreads();
    const long long c0 = (long long)blockIdx.x * chunk;
    const long long c1 = min(n, c0 + chunk);
    for (long long base = c0; base < c1; base += (long long)E * blockDim.x) {{
        unsigned int x[E][W];
        bool ok[E];
#pragma unroll
        for (int e = 0; e < E; ++e) {{
            const long long i = base + (long long)e * blockDim.x + threadIdx.x;
            ok[e] = i < c1;
#pragma unroll
            for (int w = 0; w < W; ++w) x[e][w] = ok[e] ? db[(long long)w * n + i] : 0u;
        }}
#pragma unroll 2
        for (int qq = 0; qq < QT; ++qq) {{
            const int T = ts[qq];
            int d[E];
#pragma unroll
            for (int e = 0; e < E; ++e) d[e] = 0;
#pragma unroll
            for (int w = 0; w < W; ++w) {{
                const unsigned int y = qs[qq * W + w];
#pragma unroll
                for (int e = 0; e < E; ++e) d[e] += __popc(x[e][w] ^ y);
            }}
#pragma unroll
            for (int e = 0; e < E; ++e) {{
                if (ok[e] && d[e] <= T) {{
                    const long long qg = q0 + qq;
                    const int pos = (int)(base + (long long)e * blockDim.x + threadIdx.x);
                    if (d[e] < T) {{
                        const int s = atomicAdd(&cnt_lt[qg], 1);
                        if (s < k) lt_key[qg * k + s] = ((long long)d[e] << 32) | (long long)pos;
                    }} else {{
                        const int s = atomicAdd(&cnt_tie[qg], 1);
                        if (s < M) tie_pos[qg * M + s] = pos;
                    }}
                }}
            }}
        }}
    }}
}}

extern "C" __global__ void __launch_bounds__(256)
cmh_ties_ordered(const unsigned int* __restrict__ db, const long long n,
                 const unsigned int* __restrict__ q, const int* __restrict__ rows,
                 const int* __restrict__ thr, const int* __restrict__ need,
                 int* __restrict__ tie_pos, const int M)
{{
    __shared__ unsigned int qs[W];
    __shared__ int warp_tot[32];
    const long long qg = rows[blockIdx.x];
    for (int t = threadIdx.x; t < W; t += blockDim.x) qs[t] = q[qg * W + t];
    __syncthreads();
    const int T = thr[qg];
    const int nd = need[qg];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    long long found = 0;  // identical in every thread
    for (long long start = 0; start < n && found < nd; start += blockDim.x) {{
        const long long i = start + threadIdx.x;
        bool f = false;
        if (i < n) {{
            int d = 0;
#pragma unroll
            for (int w = 0; w < W; ++w) d += __popc(db[(long long)w * n + i] ^ qs[w]);
            f = (d == T);
        }}
        const unsigned int m = __ballot_sync(0xffffffffu, f);
        const int r = __popc(m & ((1u << lane) - 1u));
        if (lane == 0) warp_tot[warp] = __popc(m);
        __syncthreads();
        int off = 0, tot = 0;
        for (int v = 0; v < nwarps; ++v) {{
            const int c = warp_tot[v];
            if (v < warp) off += c;
            tot += c;
        }}
        if (f && found + off + r < nd) tie_pos[qg * M + found + off + r] = (int)i;
        found += tot;
        __syncthreads();
    }}
}}

extern "C" __global__ void
cmh_finish(const long long total, const int k, const int M, const int* __restrict__ cnt_lt,
           const int* __restrict__ need, const int* __restrict__ thr,
           const long long* __restrict__ lt_sorted, const int* __restrict__ ties_sorted,
           int* __restrict__ out_d, int* __restrict__ out_p)
{{
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {{
        const long long qg = idx / k;
        const int j = (int)(idx - qg * k);
        const int nl = cnt_lt[qg];
        if (j < nl) {{
            const long long key = lt_sorted[qg * k + j];
            out_d[idx] = (int)(key >> 32);
            out_p[idx] = (int)(key & 0xffffffffLL);
        }} else if (j - nl < need[qg]) {{
            out_d[idx] = thr[qg];
            out_p[idx] = ties_sorted[qg * M + (j - nl)];
        }} else {{
            out_d[idx] = {PAD};
            out_p[idx] = -1;
        }}
    }}
}}
"""


def _import_cupy():
    cp = require("cupy", "gpu", "HammingIndex(device='cuda')")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver / no device
        raise GpuUnavailableError(f"CuPy is installed but no CUDA device is usable ({exc})") from exc
    if count < 1:
        raise GpuUnavailableError("CuPy is installed but no CUDA device is visible")
    return cp


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _import_cupy()
        return True
    except MissingDependencyError:
        return False


class GpuSearcher:
    """Holds the compiled kernels for one code width and a device copy of the database."""

    def __init__(self, bits: int) -> None:
        self.cp = _import_cupy()
        self.bits = int(bits)
        self.nbytes = self.bits // 8
        self.W = (self.nbytes + 3) // 4
        self.E = max(1, min(4, 16 // self.W))
        nb = self.bits + 1
        self.QT = max(1, min(32, 40000 // (4 * (nb + self.W + 1))))
        src = _SOURCE.format(W=self.W, QT=self.QT, E=self.E, NB=nb, PAD=PAD_DISTANCE)
        with _MODULES_LOCK:
            key = (self.cp.cuda.Device().id, src)
            if key not in _MODULES:
                module = self.cp.RawModule(code=src, options=("-std=c++17",))
                _MODULES[key] = {name: module.get_function(name) for name in
                                 ("cmh_count", "cmh_count_cand", "cmh_split", "cmh_collect",
                                  "cmh_ties_ordered", "cmh_finish")}
            self._k = _MODULES[key]
        self._lock = threading.Lock()
        self._cached_state = None
        self._cached_db = None
        self.profile: list | None = None  # set to [] to record (stage, cuda event) pairs
        self.last_overflow = 0  # queries of the last batch whose candidate buffer overflowed

    def _mark(self, stage: str) -> None:
        if self.profile is not None:
            ev = self.cp.cuda.Event()
            ev.record()
            self.profile.append((stage, ev))

    # ------------------------------------------------------------------ data movement
    def to_words(self, codes: np.ndarray):
        """(n, nbytes) uint8 host codes -> (W, n) uint32 device words (zero padded)."""
        cp = self.cp
        n = codes.shape[0]
        padded = np.zeros((n, self.W * 4), np.uint8)
        padded[:, : self.nbytes] = codes
        words = padded.view("<u4")  # (n, W), little-endian: byte j -> bits 8j..8j+7 of the word
        return cp.ascontiguousarray(cp.asarray(words).T)

    def query_words(self, queries: np.ndarray):
        """(nq, nbytes) uint8 -> (nq, W) uint32 device words."""
        padded = np.zeros((queries.shape[0], self.W * 4), np.uint8)
        padded[:, : self.nbytes] = queries
        return self.cp.asarray(padded.view("<u4"))

    def database(self, state):
        """The device copy of an index state's codes, uploaded once per state."""
        with self._lock:
            if self._cached_state is not state:
                if state.n >= 2**31:
                    raise InvalidInputError("the GPU backend holds at most 2**31 - 1 items")
                self._cached_db = self.to_words(np.asarray(state.live_codes))
                self._cached_state = state
            return self._cached_db

    # ------------------------------------------------------------------ search
    def topk(self, state, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Host API: (distances int32 (nq, k), positions int64 (nq, k)) as numpy arrays."""
        nq = queries.shape[0]
        if state.n == 0:
            return (np.full((nq, k), PAD_DISTANCE, np.int32), np.full((nq, k), PAD_ID, np.int64))
        db = self.database(state)
        d, p = self.topk_device(db, self.query_words(queries), k)
        dist = self.cp.asnumpy(d)
        pos = self.cp.asnumpy(p).astype(np.int64)
        return dist, pos

    def topk_device(self, db, q, k: int):
        """Device API: db (W, n) and q (nq, W) uint32 device arrays -> (d int32, p int32) (nq, k)."""
        cp = self.cp
        n, nq = int(db.shape[1]), int(q.shape[0])
        M = max(int(k), 256)
        s1 = min(n, max(4 * k, _SAMPLE_MIN))
        s2 = min(n, max(s1, n // _SAMPLE_FRACTION))
        cap = 0 if s1 >= n else int(min(max(2048, 4 * k * -(-n // s2)), 1 << 16))
        per_query = (self.bits + 1) * 4 * 3 + k * 8 * 4 + M * 4 * 3 + cap * 8 + 64
        batch = max(1, min(nq, _BATCH_BYTES // per_query))
        out_d = cp.empty((nq, k), cp.int32)
        out_p = cp.empty((nq, k), cp.int32)
        for s in range(0, nq, batch):
            e = min(nq, s + batch)
            self._topk_batch(db, n, cp.ascontiguousarray(q[s:e]), k, M, cap, s1, s2, out_d[s:e], out_p[s:e])
        return out_d, out_p

    def _grid(self, n_items: int, nq: int) -> tuple[int, int, int]:
        gy = (nq + self.QT - 1) // self.QT
        gx = max(1, min((n_items + 1023) // 1024, -(-132 * 8 // gy)))
        step = self.E * _THREADS
        chunk = -(-n_items // gx)
        chunk = -(-chunk // step) * step
        gx = -(-n_items // chunk)
        return gx, gy, chunk

    def _count(self, db, n, stop, q, nq, lim, hist, cand_cnt=None, cand=None, cap=0):
        """Histogram of d <= lim over items [0, stop) (optionally appending candidates); cumsum."""
        cp = self.cp
        hist.fill(0)
        gx, gy, chunk = self._grid(stop, nq)
        smem = 4 * (self.QT * (self.bits + 1) + self.QT * self.W + self.QT)
        args = (db, np.int64(n), np.int64(stop), np.int64(chunk), q, np.int32(nq), lim, hist)
        if cand is None:
            self._k["cmh_count"]((gx, gy), (_THREADS,), args, shared_mem=smem)
        else:
            self._k["cmh_count_cand"]((gx, gy), (_THREADS,), args + (cand_cnt, cand, np.int32(cap)),
                                      shared_mem=smem)
        return cp.cumsum(hist, axis=1)

    def _collect(self, db, n, q, thr, k, M):
        """The exact second pass: (cnt_lt, lt_key, cnt_tie, tie_pos) for queries q."""
        cp = self.cp
        nq = int(q.shape[0])
        cnt_lt = cp.zeros(nq, cp.int32)
        cnt_tie = cp.zeros(nq, cp.int32)
        lt_key = cp.full((nq, k), np.iinfo(np.int64).max, cp.int64)
        tie_pos = cp.full((nq, M), np.iinfo(np.int32).max, cp.int32)
        gx, gy, chunk = self._grid(n, nq)
        smem = 4 * (self.QT * self.W + self.QT)
        self._k["cmh_collect"]((gx, gy), (_THREADS,),
                               (db, np.int64(n), np.int64(chunk), q, np.int32(nq), thr, np.int32(k),
                                cnt_lt, lt_key, cnt_tie, tie_pos, np.int32(M)), shared_mem=smem)
        return cnt_lt, lt_key, cnt_tie, tie_pos

    def _topk_batch(self, db, n, q, k, M, cap, s1, s2, out_d, out_p):
        cp = self.cp
        nq = int(q.shape[0])
        nb = self.bits + 1
        k_eff = min(k, n)
        self._mark("start")
        hist = cp.empty((nq, nb), cp.int32)
        cum = self._count(db, n, s1, q, nq, cp.full(nq, self.bits, cp.int32), hist)
        if s1 < n:
            # U = k-th smallest distance over a prefix (>= k items): an upper bound on the true one
            lim = (cum < k).sum(axis=1).astype(cp.int32)
            if s2 > s1:
                lim = (self._count(db, n, s2, q, nq, lim, hist) < k).sum(axis=1).astype(cp.int32)
            self._mark("bound")
            cand_cnt = cp.zeros(nq, cp.int32)
            cand = cp.empty((nq, cap), cp.int64)
            cum = self._count(db, n, n, q, nq, lim, hist, cand_cnt, cand, cap)
        else:
            self._mark("bound")
        thr = (cum < k_eff).sum(axis=1).astype(cp.int32)  # smallest t with count(d <= t) >= k_eff
        rows = cp.arange(nq)
        n_lt = cp.where(thr > 0, cum[rows, cp.maximum(thr - 1, 0)], 0).astype(cp.int32)
        need = (k_eff - n_lt).astype(cp.int32)
        self._mark("count")
        if s1 < n:
            cnt_lt = cp.zeros(nq, cp.int32)
            cnt_tie = cp.zeros(nq, cp.int32)
            lt_key = cp.full((nq, k), np.iinfo(np.int64).max, cp.int64)
            tie_pos = cp.full((nq, M), np.iinfo(np.int32).max, cp.int32)
            self._k["cmh_split"]((nq,), (_THREADS,),
                                 (np.int32(nq), cand_cnt, cand, np.int32(cap), thr, np.int32(k),
                                  cnt_lt, lt_key, cnt_tie, tie_pos, np.int32(M)))
            over = cp.nonzero(cand_cnt > cap)[0]
            if over.size:  # candidate buffer overflowed: the exact collect pass for those queries
                sub = self._collect(db, n, cp.ascontiguousarray(q[over]), cp.ascontiguousarray(thr[over]), k, M)
                cnt_lt[over], lt_key[over], cnt_tie[over], tie_pos[over] = sub
            self.last_overflow = int(over.size)
        else:
            cnt_lt, lt_key, cnt_tie, tie_pos = self._collect(db, n, q, thr, k, M)
        self._mark("collect")
        over = cp.nonzero(cnt_tie > M)[0].astype(cp.int32)
        if over.size:
            tie_pos[over] = np.iinfo(np.int32).max
            self._k["cmh_ties_ordered"]((int(over.size),), (_THREADS,),
                                        (db, np.int64(n), q, over, thr, need, tie_pos, np.int32(M)))
        self._mark("ties_overflow")
        lt_sorted = cp.sort(lt_key, axis=1)
        ties_sorted = cp.sort(tie_pos, axis=1)
        self._mark("sort")
        total = nq * k
        blocks = max(1, min(65535, -(-total // _THREADS)))
        self._k["cmh_finish"]((blocks,), (_THREADS,),
                              (np.int64(total), np.int32(k), np.int32(M), cnt_lt, need, thr,
                               lt_sorted, ties_sorted, out_d, out_p))
        self._mark("finish")
