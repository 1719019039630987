"""HammingIndex: exact Hamming search over packed binary codes, with ids, save/load and FAISS interop.

    index = HammingIndex(64)                 # method="auto": multi-index hashing when it pays
    index.add(codes)                         # uint8 (n, 8), FAISS bit layout (runtime.codes.pack)
    dist, ids = index.search(queries, k=100)
    index.save("db.cmhx"); index = HammingIndex.load("db.cmhx", mmap=True)

Results
    `search` returns distances int32 (nq, k) and ids int64 (nq, k), each row ordered by
    (distance, insertion position) ascending: exactly FAISS `IndexBinaryFlat`'s order, where ties
    go to the item added first. When k exceeds the number of items, the row holds every item and
    the remaining slots are padded with distance `PAD_DISTANCE` (2**31 - 1) and id `PAD_ID` (-1),
    as FAISS does, so the padding also sorts last. The output is always (nq, k).
    `range_search(queries, radius)` returns, per query, (distances, ids) of every item with
    distance <= radius (inclusive; FAISS's binary range search is strict, so its radius is ours + 1),
    in the same order. Every method gives these same results.

Storage
    The codes alone: bits / 8 bytes per item plus O(1) (growth leaves at most 25% spare rows;
    a single add, or a load, leaves none). Ids are implicit (id = insertion position) until
    `add(codes, ids)` gives other ids; then one int64 per item more. `remove` sets a bit in a
    tombstone bitmap (1 bit per row); when more than half of the rows are removed the index
    compacts itself (`compact()` does it on demand), which makes implicit ids explicit.

Ids
    int64 >= 0 and unique in the index (-1 is the padding id). `add` without ids assigns
    consecutive ids starting after the largest id the index has held (0, 1, 2, ... on a new
    index). `remove` of an id that is not in the index raises InvalidInputError and removes
    nothing. Ids given in increasing order are looked up by binary search; ids in any other order
    cost a sort of all ids per `add`/`remove` call (memory stays one int64 per item).

Methods
    method="scan" reads every code (runtime/search_cpu.py); method="mih" is exact multi-index
    hashing (runtime/mih.py; needs numba), sublinear in the number of items on codes with
    structure (e.g. hashes of real data); "auto" uses MIH from AUTO_MIH_MIN_ITEMS items on, once
    the tables exist (`build_tables()`, or built by itself after AUTO_MIH_AFTER_QUERIES scanned
    queries, so a one-shot search never pays a build), with a per-query work budget past which that
    query is answered by the scan. `mih_m` overrides the number of substrings. The tables (about
    4-6 bytes per item per substring) are built at the first search that uses them (not stored in
    the file) and kept current by `add`.

Backends
    backend="auto" (numba kernel when numba is installed, else numpy), "numba", "numpy", or
    "cupy" (same as device="cuda": the CUDA kernels of runtime.search_gpu; range_search then runs
    on the CPU). device="cuda" without CuPy or without a visible GPU raises MissingDependencyError
    (GpuUnavailableError for the latter) at construction. All backends give identical results.

Threads
    `threads` (constructor default, or per call) is how many CPU threads one search uses; by
    default every CPU this process may run on.

Thread safety
    Searches may run from any number of threads at once; they never block (except the first
    MIH search, which builds the tables). Writes (`add`, `remove`, `compact`) take an internal
    lock, so they run one at a time (concurrent writers are serialized, not interleaved). A search
    sees the index as it was when the search started: every item whose `add` had returned, none
    that a concurrent `add` is still writing. Writers never modify memory a running search reads
    (appends go past the snapshot's end; removals and compaction build new arrays).

Metadata
    `meta` is a small JSON-serialisable dict saved with the index (e.g. the identity of the model
    that encoded the codes); the file format is specified in docs/formats/index-file.md.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from cmhash.errors import CodeFormatError, IndexFormatError, InvalidInputError, require
from cmhash.runtime import mih, search_cpu
from cmhash.runtime.codes import check_bits, check_codes
from cmhash.runtime.formats import index_file
from cmhash.runtime.search_cpu import PAD_DISTANCE, PAD_ID
from cmhash.validators import positive_int

__all__ = ["BACKENDS", "METHODS", "HammingIndex", "PAD_DISTANCE", "PAD_ID", "as_id_array", "check_new_ids"]

BACKENDS = ("auto", "numba", "numpy", "cupy")
METHODS = ("auto", "scan", "mih")
#: "auto" uses MIH from this many items on: the crossover measured on LSH codes (BENCHMARKS.md
#: §Search at scale: MIH 2-4x faster at 2^18 items, slower for k = 100 at 2^16).
AUTO_MIH_MIN_ITEMS = 1 << 18
#: "auto": per-query MIH work budget (buckets + candidates) as a fraction of the items: a bucket
#: or candidate (a random access) costs many times a scanned code (a vectorised pass), so a failed
#: attempt must stop early; its measured cost is in BENCHMARKS.md §Search at scale.
AUTO_MIH_BUDGET = 1 / 256
#: "auto": a batch of more than twice this many queries first times MIH and the scan on this many,
#: then runs the faster on the whole batch.
AUTO_MIH_SAMPLE = 16
#: "auto" builds the tables only after this many queries were scanned (or on `build_tables()`): a
#: build costs about as much as 1,000 to 2,000 scanned queries (BENCHMARKS.md §Search at scale), which
#: a one-shot search (e.g. `cmhash search`) would never earn back.
AUTO_MIH_AFTER_QUERIES = 2048
_COMPACT_AT = 0.5  # compact when more than this fraction of the rows is removed
_MIH_TAIL_MIN = 1 << 16  # rows added after the tables that trigger no rebuild yet (or 1/8 of them)


# --------------------------------------------------------------------------------- id rules
def as_id_array(ids, m: int | None = None) -> np.ndarray:
    """ids as int64 (n,); `m`: the number of codes they go with. The one place the id rules live
    (HammingIndex and ShardedIndex both call it)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInputError(f"ids must be a 1-D array of integers, got shape {arr.shape}")
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.size and arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidInputError("ids must fit in int64")
    arr = arr.astype(np.int64, copy=False) if arr.size else np.empty(0, np.int64)
    if m is not None and arr.shape[0] != m:
        raise InvalidInputError(f"got {m} codes but {arr.shape[0]} ids")
    return arr


def check_new_ids(new_ids: np.ndarray) -> np.ndarray:
    """Refuse negative or repeated ids to add; return them sorted."""
    if new_ids.size and int(new_ids.min()) < 0:
        raise InvalidInputError("ids must be >= 0 (-1 marks padding in search results)")
    srt = np.sort(new_ids)
    dup = srt[1:][srt[1:] == srt[:-1]]
    if dup.size:
        raise InvalidInputError(f"ids to add repeat: {np.unique(dup)[:5].tolist()}")
    return srt


def ids_present_error(clash: np.ndarray) -> InvalidInputError:
    return InvalidInputError(f"ids already in the index: {clash[:5].tolist()}; remove them first or add "
                             "without ids to get new ones")


def ids_missing_error(missing: np.ndarray) -> InvalidInputError:
    return InvalidInputError(f"ids not in the index: {missing[:5].tolist()}")


# --------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class _State:
    """An immutable view of the index: rows [:n] of the buffers, in insertion order."""

    codes: np.ndarray  # (capacity, nbytes) uint8
    n: int
    ids: np.ndarray | None = None  # (capacity,) int64, or None: id = row
    dead: np.ndarray | None = None  # tombstone bitmap over the capacity, or None: no row removed
    n_dead: int = 0
    gen: int = 0  # bumped when rows move (compaction): MIH tables of another gen are stale
    ids_increasing: bool = True  # ids[:n] strictly increasing: binary search finds an id's row

    @property
    def live_codes(self) -> np.ndarray:
        """Rows [:n] (removed rows included: searches skip them through `dead_bits`)."""
        return self.codes[: self.n]

    @property
    def row_ids(self) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64) if self.ids is None else self.ids[: self.n]

    @property
    def dead_bits(self) -> np.ndarray | None:
        return None if self.dead is None else self.dead[: (self.n + 7) // 8]

    def alive(self) -> np.ndarray | None:
        """Bool (n,) mask of the rows not removed, or None when none is."""
        mask = search_cpu.dead_mask(self.dead_bits, self.n)
        return None if mask is None else ~mask

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The live row holding each id, or -1."""
        n = self.n
        if self.ids is None:
            rows = np.where((ids >= 0) & (ids < n), ids, -1)
        elif n == 0:
            return np.full(ids.shape, -1, np.int64)
        elif self.ids_increasing:
            live = self.ids[:n]
            pos = np.minimum(np.searchsorted(live, ids), n - 1)
            rows = np.where(live[pos] == ids, pos, -1)
        else:  # a transient sort of the live ids
            alive = self.alive()
            cand = np.arange(n) if alive is None else np.flatnonzero(alive)
            order = cand[np.argsort(self.ids[cand], kind="stable")]
            srt = self.ids[order]
            pos = np.minimum(np.searchsorted(srt, ids), max(srt.size - 1, 0))
            hit = (srt[pos] == ids) if srt.size else np.zeros(ids.shape, bool)
            return np.where(hit, order[pos] if srt.size else -1, -1)
        if self.dead is not None:
            ok = rows >= 0
            r = rows[ok]
            ok[ok] = ((self.dead[r >> 3] >> (r & 7)) & 1) == 0
            rows = np.where(ok, rows, -1)
        return rows


class HammingIndex:
    """Exact Hamming top-k and range search over packed uint8 codes (see the module docstring)."""

    def __init__(self, bits: int, *, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None, method: str = "auto", mih_m: int | None = None,
                 meta: dict | None = None) -> None:
        self._bits = check_bits(bits)
        self._nbytes = self._bits // 8
        if backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if device not in ("cpu", "cuda"):
            raise InvalidInputError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
        if method not in METHODS:
            raise InvalidInputError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
        if backend == "cupy":
            device = "cuda"
        elif device == "cuda":
            if backend not in ("auto", "cupy"):
                raise InvalidInputError(f"device='cuda' needs backend 'cupy' (or 'auto'), got {backend!r}")
            backend = "cupy"
        if backend == "numba":
            search_cpu.load_numba("HammingIndex(backend='numba')")
        if method == "mih":
            if device == "cuda":
                raise InvalidInputError("method='mih' runs on the CPU; use method='scan' (or 'auto') with "
                                        "device='cuda'")
            if backend == "numpy":
                raise InvalidInputError("method='mih' needs the compiled kernels; use backend='auto' or 'numba'")
            search_cpu.load_numba("HammingIndex(method='mih')")
        if mih_m is not None:
            mih.split(self._bits, mih_m)  # checks it
        index_file.encode_meta(meta)  # checks it
        self._backend = backend
        self._device = device
        self._method = method
        self._mih_m = None if mih_m is None else int(mih_m)
        self._meta = dict(meta or {})
        self._threads = None if threads is None else search_cpu._check_threads(threads)  # noqa: SLF001
        self._gpu = None
        if device == "cuda":
            from cmhash.runtime import search_gpu

            self._gpu = search_gpu.GpuSearcher(self._bits)
        self._lock = threading.Lock()
        self._mih_lock = threading.Lock()
        self._state = _State(np.empty((0, self._nbytes), np.uint8), 0)
        self._tables: mih.MihTables | None = None
        self._scanned = 0  # queries answered by the scan ("auto" builds tables after enough of them)
        self._next_id = 0

    # ---------------------------------------------------------------- properties
    @property
    def bits(self) -> int:
        return self._bits

    @property
    def backend(self) -> str:
        """The backend searches use: 'numba', 'numpy' or 'cupy'."""
        if self._backend == "auto":
            return "numba" if search_cpu.numba_available() else "numpy"
        return self._backend

    @property
    def method(self) -> str:
        return self._method

    @property
    def device(self) -> str:
        return self._device

    @property
    def meta(self) -> dict:
        """The metadata dict saved with the index (mutable; checked when saved)."""
        return self._meta

    def __len__(self) -> int:
        st = self._state
        return st.n - st.n_dead

    def __repr__(self) -> str:
        return f"HammingIndex(bits={self._bits}, n={len(self)}, backend={self.backend!r}, method={self._method!r})"

    @property
    def ids(self) -> np.ndarray:
        """A copy of the ids, in insertion (tie-break) order."""
        st = self._state
        alive = st.alive()
        return st.row_ids.copy() if alive is None else st.row_ids[alive]

    @property
    def codes(self) -> np.ndarray:
        """The codes in insertion order, read-only (a view; a copy once items were removed)."""
        st = self._state
        alive = st.alive()
        view = st.live_codes.view() if alive is None else st.live_codes[alive]
        view.flags.writeable = False
        return view

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: codes, ids, tombstones (capacity included) and MIH tables."""
        st = self._state
        t = self._tables
        return {"codes": int(st.codes.nbytes), "ids": 0 if st.ids is None else int(st.ids.nbytes),
                "tombstones": 0 if st.dead is None else int(st.dead.nbytes),
                "mih": 0 if t is None else t.nbytes}

    # ---------------------------------------------------------------- writes
    def add(self, codes: np.ndarray, ids=None) -> np.ndarray:
        """Append codes (n, bits // 8) uint8; return the int64 ids they got (see module docstring)."""
        codes = check_codes(codes, self._bits, what="codes to add")
        m = codes.shape[0]
        with self._lock:
            st = self._state
            n = st.n
            if ids is None:
                new_ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            else:
                new_ids = as_id_array(ids, m)
            if m == 0:
                return new_ids
            srt = check_new_ids(new_ids)
            if ids is not None:
                clash = new_ids[st.rows_of(new_ids) >= 0]
                if clash.size:
                    raise ids_present_error(clash)
            implicit = st.ids is None and new_ids[0] == n and new_ids[-1] == n + m - 1 and \
                (m == 1 or bool((np.diff(new_ids) == 1).all()))
            last = int(st.row_ids[-1]) if n else -1
            increasing = st.ids_increasing and int(new_ids[0]) > last and \
                (m == 1 or bool((np.diff(new_ids) > 0).all()))
            cap = st.codes.shape[0]
            in_place = n + m <= cap and st.codes.flags.writeable and (
                implicit or (st.ids is not None and st.ids.flags.writeable))
            if not in_place:
                cap = n + m if n == 0 else max(n + m, n + n // 4, 256)
            codes_buf, ids_buf, dead_buf = st.codes, st.ids, st.dead
            if not in_place:
                codes_buf = np.empty((cap, self._nbytes), np.uint8)
                codes_buf[:n] = st.live_codes
                if dead_buf is not None:
                    dead_buf = np.zeros((cap + 7) // 8, np.uint8)
                    dead_buf[: (n + 7) // 8] = st.dead_bits
            if not implicit and (ids_buf is None or not in_place):
                ids_buf = np.empty(cap, np.int64)
                ids_buf[:n] = st.row_ids
            codes_buf[n:n + m] = codes
            if not implicit:
                ids_buf[n:n + m] = new_ids
            self._next_id = max(self._next_id, int(srt[-1]) + 1)
            new = replace(st, codes=codes_buf, n=n + m, ids=None if implicit else ids_buf, dead=dead_buf,
                          ids_increasing=increasing)
            self._state = new  # publish
            self._refresh_tables(new)
            return new_ids

    def remove(self, ids) -> int:
        """Remove the items with these ids; return how many were removed.

        Every id must be in the index, else InvalidInputError and nothing is removed.
        """
        rm = np.unique(as_id_array(ids))
        if rm.size == 0:
            return 0
        with self._lock:
            st = self._state
            rows = st.rows_of(rm)
            if (rows < 0).any():
                raise ids_missing_error(rm[rows < 0])
            dead = np.zeros((st.codes.shape[0] + 7) // 8, np.uint8) if st.dead is None else st.dead.copy()
            np.bitwise_or.at(dead, rows >> 3, (1 << (rows & 7)).astype(np.uint8))
            new = replace(st, dead=dead, n_dead=st.n_dead + int(rm.size))
            self._state = new  # publish
            if new.n_dead > _COMPACT_AT * new.n:
                self._compact_locked()
            return int(rm.size)

    def compact(self) -> None:
        """Drop removed rows from memory (ids become explicit if they were implicit)."""
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        st = self._state
        alive = st.alive()
        if alive is None:
            return
        codes = np.ascontiguousarray(st.live_codes[alive])
        ids = np.ascontiguousarray(st.row_ids[alive])
        self._tables = None
        self._state = _State(codes, int(ids.shape[0]), ids, None, 0, st.gen + 1, st.ids_increasing)

    # ---------------------------------------------------------------- MIH tables
    def _wants_mih(self, st: _State, k: int | None) -> bool:
        if self._gpu is not None or self._method == "scan" or st.n == 0:
            return False
        if self._method == "mih":
            return True
        if not (self.backend == "numba" and st.n >= AUTO_MIH_MIN_ITEMS and (k is None or k * 64 <= st.n)):
            return False
        return self._tables is not None or self._scanned >= AUTO_MIH_AFTER_QUERIES

    def build_tables(self) -> None:
        """Build the multi-index hashing tables now (e.g. at a server's start) rather than at the
        first search that needs them; "auto" then uses them at once. Needs numba."""
        search_cpu.load_numba("HammingIndex.build_tables")
        self._tables_for(self._state)

    def _refresh_tables(self, st: _State) -> None:
        """After an add (writer lock held): rebuild tables whose unindexed tail grew past 1/8."""
        t = self._tables
        if t is not None and t.gen == st.gen and st.n - t.n > max(t.n // 8, _MIH_TAIL_MIN):
            self._tables = mih.build(st.codes, st.n - st.n % 8, st.gen, self._mih_m)

    def _tables_for(self, st: _State) -> mih.MihTables | None:
        """Tables valid for snapshot st (covering a prefix of it), built on first use."""
        t = self._tables
        if t is not None and t.gen == st.gen and t.n <= st.n:
            return t
        with self._mih_lock:
            t = self._tables
            if t is not None and t.gen == st.gen and t.n <= st.n:
                return t
            nb = st.n - st.n % 8  # whole bytes of the tombstone bitmap: the tail starts on one
            if nb == 0:
                return None
            t = mih.build(st.codes, nb, st.gen, self._mih_m)
            with self._lock:
                if self._state.gen == st.gen:
                    self._tables = t
            return t

    # ---------------------------------------------------------------- search
    def _check_queries(self, queries) -> np.ndarray:
        queries = check_codes(queries, self._bits, what="query codes")
        if queries.shape[0] == 0:
            raise InvalidInputError("the query set is empty: pass at least one query code")
        return np.ascontiguousarray(queries)

    def _threads_for(self, threads: int | None) -> int:
        return search_cpu._check_threads(threads if threads is not None else self._threads)  # noqa: SLF001

    def search(self, queries: np.ndarray, k: int, *, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: (distances int32 (nq, k), ids int64 (nq, k)), rows in (distance, position) order.

        k > len(self): every item, then padding (PAD_DISTANCE, PAD_ID). k <= 0, an empty query
        set, or codes of the wrong width or dtype raise typed errors.
        """
        k = positive_int(k, "k")
        queries = self._check_queries(queries)
        st = self._state  # one snapshot for the whole search
        threads = self._threads_for(threads)
        if self._gpu is not None:
            dist, pos = self._gpu_topk(st, queries, k)
        elif self._wants_mih(st, k) and (t := self._tables_for(st)) is not None:
            dist, pos = self._mih_topk(st, t, queries, k, threads)
        else:
            dist, pos = search_cpu.topk(queries, st.live_codes, k, backend=self.backend, threads=threads,
                                        dead=st.dead_bits)
            self._scanned += queries.shape[0]  # unlocked: an approximate count is enough
        return dist, self._positions_to_ids(st, pos)

    def _gpu_topk(self, st: _State, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The GPU scan knows no tombstones: ask for k + removed rows, then drop the removed."""
        if st.n_dead == 0:
            return self._gpu.topk(st, queries, k)
        dist, pos = self._gpu.topk(st, queries, k + st.n_dead)
        dead = search_cpu.dead_mask(st.dead_bits, st.n)
        keep = (pos >= 0) & ~dead[np.where(pos >= 0, pos, 0)]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        dist, pos, keep = (np.take_along_axis(a, order, 1) for a in (dist, pos, keep))
        return np.where(keep, dist, PAD_DISTANCE).astype(np.int32), np.where(keep, pos, PAD_ID)

    def _mih_topk(self, st: _State, t: mih.MihTables, queries: np.ndarray, k: int, threads: int):
        budget = int(st.n * AUTO_MIH_BUDGET) + 1 if self._method == "auto" else 0
        if budget and queries.shape[0] > 2 * AUTO_MIH_SAMPLE and not self._mih_pays(st, t, queries, k, budget):
            return search_cpu.topk(queries, st.live_codes, k, backend="numba", threads=threads, dead=st.dead_bits)
        dist, pos, failed = mih.topk(t, queries, st.live_codes, st.dead_bits, k, budget=budget, threads=threads)
        tail = st.n > t.n
        if tail:  # rows added since the tables were built: scanned, then merged by (distance, row)
            dead = None if st.dead is None else st.dead_bits[t.n // 8:]
            d2, p2 = search_cpu.topk(queries, st.live_codes[t.n:], k, backend="numba", threads=threads, dead=dead)
            p2 = np.where(p2 >= 0, p2 + t.n, p2)
            dist, pos = _merge(dist, pos, d2, p2, k)
        if failed.any():
            d3, p3 = search_cpu.topk(queries[failed], st.live_codes, k, backend="numba", threads=threads,
                                     dead=st.dead_bits)
            dist[failed], pos[failed] = d3, p3
        return dist, pos

    @staticmethod
    def _mih_pays(st: _State, t: mih.MihTables, queries: np.ndarray, k: int, budget: int) -> bool:
        """Time both methods on the batch's first AUTO_MIH_SAMPLE queries (one thread each): the
        batch goes to the faster. The answers are the same either way; this only picks the cost."""
        sample = queries[:AUTO_MIH_SAMPLE]
        t0 = time.perf_counter()
        failed = mih.topk(t, sample, st.live_codes, st.dead_bits, k, budget=budget)[2]
        t1 = time.perf_counter()
        search_cpu.topk(sample, st.live_codes, k, backend="numba", threads=1, dead=st.dead_bits)
        scan = time.perf_counter() - t1
        return (t1 - t0) + failed.mean() * scan < scan  # a query over budget is then scanned too

    def range_search(self, queries: np.ndarray, radius: int, *, threads: int | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (distances int32, ids int64) of every item at distance <= radius.

        Ordered by (distance, position). radius must be an integer >= 0.
        """
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InvalidInputError(f"radius must be an integer >= 0, got {radius!r}")
        queries = self._check_queries(queries)
        st = self._state
        threads = self._threads_for(threads)
        backend = self.backend if self.backend != "cupy" else "auto"
        if self._wants_mih(st, None) and (self._method == "mih" or radius <= self._bits // 8) \
                and (t := self._tables_for(st)) is not None:
            hits = mih.range_search(t, queries, st.live_codes, st.dead_bits, int(radius), threads=threads)
            if st.n > t.n:
                dead = None if st.dead is None else st.dead_bits[t.n // 8:]
                lims, dist, pos = search_cpu.range_search(queries, st.live_codes[t.n:], int(radius),
                                                          backend=backend, threads=threads, dead=dead)
                hits = [_sorted_hits(np.concatenate([d, dist[a:b]]), np.concatenate([p, pos[a:b] + t.n]))
                        for (d, p), a, b in zip(hits, lims[:-1], lims[1:])]
            ids = st.row_ids
            return [(d.astype(np.int32), ids[p]) for d, p in hits]
        lims, dist, pos = search_cpu.range_search(queries, st.live_codes, int(radius), backend=backend,
                                                  threads=threads, dead=st.dead_bits)
        ids = st.row_ids[pos] if pos.size else np.empty(0, np.int64)
        return [(dist[a:b], ids[a:b]) for a, b in zip(lims[:-1], lims[1:])]

    @staticmethod
    def _positions_to_ids(st: _State, pos: np.ndarray) -> np.ndarray:
        if st.ids is None:
            return pos  # id = row; padding is PAD_ID (-1) in both
        valid = pos >= 0
        out = st.ids[np.where(valid, pos, 0)] if st.n else np.zeros(pos.shape, np.int64)
        out[~valid] = PAD_ID
        return out

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the index atomically (format: docs/formats/index-file.md)."""
        st = self._state
        index_file.write_index(path, index_file.IndexFile(
            self._bits, st.live_codes, None if st.ids is None else st.ids[: st.n], st.dead_bits, self._meta))

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False, *, verify: bool | None = None,
             backend: str = "auto", device: str = "cpu", threads: int | None = None,
             method: str | None = None, mih_m: int | None = None) -> "HammingIndex":
        """Read an index saved by `save`. mmap=True maps the codes (and ids) read-only; adds then
        copy them, and resident memory grows only with the pages searches touch.

        verify: check the payload CRC (reads every byte); default True, False with mmap=True (the
        header, file size and metadata are always checked). method None: the `search_method` the
        index was built with (`cmhash index build --method`), else "auto". A truncated, corrupted or
        newer-version file raises IndexFormatError.
        """
        f = index_file.read_index(path, mmap=mmap, verify=(not mmap) if verify is None else verify)
        if method is None:
            method = f.meta.get("search_method", "auto")
            method = method if method in METHODS else "auto"
        index = cls(f.bits, backend=backend, device=device, threads=threads, method=method, mih_m=mih_m,
                    meta=f.meta)
        index._install(path, f)
        return index

    def _install(self, path, f: index_file.IndexFile) -> None:
        n = f.codes.shape[0]
        ids, increasing, n_dead = f.ids, True, 0
        if f.dead is not None:
            n_dead = int(np.unpackbits(f.dead, count=n, bitorder="little").sum())
        if ids is not None and n:
            step = np.diff(ids)
            increasing = bool((step > 0).all())
            if f.version == 1 and increasing and ids[0] == 0 and ids[-1] == n - 1:
                ids = None  # a version-1 file of implicit ids: keep codes only
            elif int(ids.min()) < 0:
                raise IndexFormatError(f"{path} holds negative ids; the file is damaged: rebuild the index")
            elif not increasing:
                live = ids if f.dead is None else ids[~search_cpu.dead_mask(f.dead, n)]
                srt = np.sort(live)
                if (srt[1:] == srt[:-1]).any():
                    raise IndexFormatError(f"{path} holds repeated ids; the file is damaged: rebuild the index")
        st = _State(f.codes, n, ids, f.dead, n_dead, 0, increasing)
        with self._lock:
            self._next_id = n if ids is None else (int(ids.max()) + 1 if n else 0)
            self._state = st
            self._tables = None

    # ---------------------------------------------------------------- FAISS
    def to_faiss(self, with_ids: bool = True):
        """A FAISS binary index with the same codes in the same order (same search results).

        with_ids=True: `IndexBinaryIDMap` over an `IndexBinaryFlat` (labels are our ids);
        with_ids=False: a plain `IndexBinaryFlat` (labels are positions).
        """
        faiss = require("faiss", "faiss", "HammingIndex.to_faiss")
        codes, ids = np.ascontiguousarray(self.codes), np.ascontiguousarray(self.ids)
        flat = faiss.IndexBinaryFlat(self._bits)
        if not with_ids:
            if codes.shape[0]:
                flat.add(codes)
            return flat
        idmap = faiss.IndexBinaryIDMap(flat)
        idmap.referenced_objects = [flat]  # keep the wrapped index alive
        if codes.shape[0]:
            idmap.add_with_ids(codes, ids)
        return idmap

    @classmethod
    def from_faiss(cls, index, **kwargs) -> "HammingIndex":
        """Build from a FAISS `IndexBinaryFlat` (ids 0..n-1) or `IndexBinaryIDMap` over one."""
        faiss = require("faiss", "faiss", "HammingIndex.from_faiss")
        ids = None
        inner = index
        if isinstance(index, faiss.IndexBinaryIDMap):
            inner = faiss.downcast_IndexBinary(index.index)
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        if not isinstance(inner, faiss.IndexBinaryFlat):
            raise InvalidInputError(
                f"from_faiss takes an IndexBinaryFlat or an IndexBinaryIDMap over one, got {type(index).__name__}"
            )
        n, bits = int(inner.ntotal), int(inner.d)
        codes = faiss.vector_to_array(inner.xb).astype(np.uint8, copy=False)
        if codes.size != n * (bits // 8):
            raise CodeFormatError(f"the FAISS index holds {codes.size} code bytes for {n} codes of {bits} bits")
        out = cls(bits, **kwargs)
        if n:
            out.add(codes.reshape(n, bits // 8), ids)
        return out


def _sorted_hits(dist: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((pos, dist))
    return dist[order], pos[order]


def _merge(d1, p1, d2, p2, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of two (distance, row) lists by (distance, row); padding (row -1) sorts last."""
    key = np.concatenate([np.where(p1 >= 0, (d1.astype(np.int64) << 40) | p1, np.iinfo(np.int64).max),
                          np.where(p2 >= 0, (d2.astype(np.int64) << 40) | p2, np.iinfo(np.int64).max)], axis=1)
    key = np.sort(key, axis=1)[:, :k]
    pad = key == np.iinfo(np.int64).max
    dist = np.where(pad, PAD_DISTANCE, key >> 40).astype(np.int32)
    pos = np.where(pad, PAD_ID, key & ((1 << 40) - 1)).astype(np.int64)
    return dist, pos
