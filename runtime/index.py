"""HammingIndex: exact Hamming search over packed binary codes, with ids, save/load and FAISS interop.

    index = HammingIndex(64)
    index.add(codes)                       # uint8 (n, 8), FAISS bit layout (runtime.codes.pack)
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
    in the same order.

Ids
    int64 >= 0 and unique in the index (-1 is the padding id). `add` without ids assigns
    consecutive ids starting after the largest id the index has held (0, 1, 2, ... on a new
    index). `remove` of an id that is not in the index raises InvalidInputError and removes
    nothing. Removal keeps the remaining items' relative order, hence their tie order.

Backends
    backend="auto" (numba kernel when numba is installed, else numpy), "numba", "numpy", or
    "cupy" (same as device="cuda": the CUDA kernels of runtime.search_gpu; range_search then runs
    on the CPU). device="cuda" without CuPy or without a visible GPU raises MissingDependencyError
    (GpuUnavailableError for the latter) at construction. All backends give identical results.

Threads
    `threads` (constructor default, or per call) is how many CPU threads one search uses; by
    default every CPU this process may run on.

Thread safety
    Searches may run from any number of threads at once; they never block. Writes (`add`,
    `remove`) take an internal lock, so they run one at a time (the single-writer rule: concurrent
    writers are serialized, not interleaved). A search sees the index as it was when the search
    started: every item whose `add` had returned, none that a concurrent `add` is still writing.
    Writers never modify memory a running search reads (appends go past the snapshot's end,
    removals build new arrays).

The file format is documented in runtime/index_format.py.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from cmhash.errors import CodeFormatError, IndexFormatError, InvalidInputError, require
from cmhash.runtime import index_format, search_cpu
from cmhash.runtime.codes import check_bits, check_codes
from cmhash.runtime.search_cpu import PAD_DISTANCE, PAD_ID

__all__ = ["HammingIndex", "PAD_DISTANCE", "PAD_ID"]

_BACKENDS = ("auto", "numba", "numpy", "cupy")


@dataclass(frozen=True)
class _State:
    """An immutable view of the index: rows [:n] of the buffers are the items, in order."""

    codes: np.ndarray  # (capacity, nbytes) uint8
    ids: np.ndarray  # (capacity,) int64
    n: int

    @property
    def live_codes(self) -> np.ndarray:
        return self.codes[: self.n]

    @property
    def live_ids(self) -> np.ndarray:
        return self.ids[: self.n]


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{what} must be an integer, got {value!r}")
    if value <= 0:
        raise InvalidInputError(f"{what} must be >= 1, got {value}")
    return int(value)


def _as_id_array(ids, what: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInputError(f"{what} must be a 1-D array of integers, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{what} must fit in int64")
    return arr.astype(np.int64, copy=False)


class HammingIndex:
    """Exact Hamming top-k and range search over packed uint8 codes (see the module docstring)."""

    def __init__(self, bits: int, *, backend: str = "auto", device: str = "cpu",
                 threads: int | None = None) -> None:
        self._bits = check_bits(bits)
        self._nbytes = self._bits // 8
        if backend not in _BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(_BACKENDS)}")
        if device not in ("cpu", "cuda"):
            raise InvalidInputError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
        if backend == "cupy":
            device = "cuda"
        elif device == "cuda":
            if backend not in ("auto", "cupy"):
                raise InvalidInputError(f"device='cuda' needs backend 'cupy' (or 'auto'), got {backend!r}")
            backend = "cupy"
        if backend == "numba":
            require("numba", "fast", "HammingIndex(backend='numba')")
        self._backend = backend
        self._device = device
        self._threads = None if threads is None else search_cpu._check_threads(threads)  # noqa: SLF001
        self._gpu = None
        if device == "cuda":
            from cmhash.runtime import search_gpu

            self._gpu = search_gpu.GpuSearcher(self._bits)
        self._lock = threading.Lock()
        self._state = _State(np.empty((0, self._nbytes), np.uint8), np.empty(0, np.int64), 0)
        self._sorted_ids = np.empty(0, np.int64)
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
    def device(self) -> str:
        return self._device

    def __len__(self) -> int:
        return self._state.n

    def __repr__(self) -> str:
        return f"HammingIndex(bits={self._bits}, n={len(self)}, backend={self.backend!r})"

    @property
    def ids(self) -> np.ndarray:
        """A copy of the ids, in insertion (tie-break) order."""
        return self._state.live_ids.copy()

    @property
    def codes(self) -> np.ndarray:
        """A read-only view of the codes, in insertion order."""
        view = self._state.live_codes.view()
        view.flags.writeable = False
        return view

    # ---------------------------------------------------------------- writes
    def add(self, codes: np.ndarray, ids=None) -> np.ndarray:
        """Append codes (n, bits // 8) uint8; return the int64 ids they got (see module docstring)."""
        codes = check_codes(codes, self._bits, what="codes to add")
        m = codes.shape[0]
        with self._lock:
            if ids is None:
                new_ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            else:
                new_ids = _as_id_array(ids)
                if new_ids.shape[0] != m:
                    raise InvalidInputError(f"got {m} codes but {new_ids.shape[0]} ids")
            if m == 0:
                return new_ids
            if int(new_ids.min()) < 0:
                raise InvalidInputError("ids must be >= 0 (-1 marks padding in search results)")
            new_sorted = np.sort(new_ids)
            dup = new_sorted[1:][new_sorted[1:] == new_sorted[:-1]]
            if dup.size:
                raise InvalidInputError(f"ids to add repeat: {dup[:5].tolist()}")
            pos = np.searchsorted(self._sorted_ids, new_sorted)
            hit = pos < self._sorted_ids.size
            clash = new_sorted[hit][self._sorted_ids[pos[hit]] == new_sorted[hit]]
            if clash.size:
                raise InvalidInputError(f"ids already in the index: {clash[:5].tolist()}")
            st = self._state
            n = st.n
            if n + m <= st.codes.shape[0] and st.codes.flags.writeable and st.ids.flags.writeable:
                codes_buf, ids_buf = st.codes, st.ids
            else:
                cap = max(n + m, int(n * 1.5), 1024)
                codes_buf = np.empty((cap, self._nbytes), np.uint8)
                ids_buf = np.empty(cap, np.int64)
                codes_buf[:n] = st.live_codes
                ids_buf[:n] = st.live_ids
            codes_buf[n:n + m] = codes
            ids_buf[n:n + m] = new_ids
            self._sorted_ids = np.insert(self._sorted_ids, pos, new_sorted)
            self._next_id = max(self._next_id, int(new_sorted[-1]) + 1)
            self._state = _State(codes_buf, ids_buf, n + m)  # publish
            return new_ids

    def remove(self, ids) -> int:
        """Remove the items with these ids; return how many were removed.

        Every id must be in the index, else InvalidInputError and nothing is removed.
        """
        rm = np.unique(_as_id_array(ids))
        if rm.size == 0:
            return 0
        with self._lock:
            pos = np.searchsorted(self._sorted_ids, rm)
            ok = pos < self._sorted_ids.size
            ok[ok] = self._sorted_ids[pos[ok]] == rm[ok]
            if not ok.all():
                raise InvalidInputError(f"ids not in the index: {rm[~ok][:5].tolist()}")
            st = self._state
            keep = ~np.isin(st.live_ids, rm, assume_unique=True)
            codes_buf = np.ascontiguousarray(st.live_codes[keep])
            ids_buf = np.ascontiguousarray(st.live_ids[keep])
            self._sorted_ids = np.delete(self._sorted_ids, pos)
            self._state = _State(codes_buf, ids_buf, int(ids_buf.shape[0]))  # publish
            return int(rm.size)

    # ---------------------------------------------------------------- search
    def _check_queries(self, queries) -> np.ndarray:
        queries = check_codes(queries, self._bits, what="query codes")
        if queries.shape[0] == 0:
            raise InvalidInputError("the query set is empty: pass at least one query code")
        return np.ascontiguousarray(queries)

    def search(self, queries: np.ndarray, k: int, *, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k: (distances int32 (nq, k), ids int64 (nq, k)), rows in (distance, position) order.

        k > len(self): every item, then padding (PAD_DISTANCE, PAD_ID). k <= 0, an empty query
        set, or codes of the wrong width or dtype raise typed errors.
        """
        k = _check_positive_int(k, "k")
        queries = self._check_queries(queries)
        st = self._state  # one snapshot for the whole search
        if self._gpu is not None:
            dist, pos = self._gpu.topk(st, queries, k)
        else:
            dist, pos = search_cpu.topk(queries, st.live_codes, k, backend=self.backend,
                                        threads=threads if threads is not None else self._threads)
        return dist, self._positions_to_ids(st, pos)

    def range_search(self, queries: np.ndarray, radius: int, *, threads: int | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (distances int32, ids int64) of every item at distance <= radius.

        Ordered by (distance, position). radius must be an integer >= 0.
        """
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InvalidInputError(f"radius must be an integer >= 0, got {radius!r}")
        queries = self._check_queries(queries)
        st = self._state
        backend = self.backend if self.backend != "cupy" else "auto"
        lims, dist, pos = search_cpu.range_search(
            queries, st.live_codes, int(radius), backend=backend,
            threads=threads if threads is not None else self._threads)
        ids = st.live_ids[pos] if pos.size else np.empty(0, np.int64)
        return [(dist[a:b], ids[a:b]) for a, b in zip(lims[:-1], lims[1:])]

    @staticmethod
    def _positions_to_ids(st: _State, pos: np.ndarray) -> np.ndarray:
        if st.n == 0:
            return np.full(pos.shape, PAD_ID, np.int64)
        valid = pos >= 0
        out = st.live_ids[np.where(valid, pos, 0)]
        out[~valid] = PAD_ID
        return out

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the index atomically in the format of runtime/index_format.py."""
        st = self._state
        index_format.write_index(path, self._bits, st.live_ids, st.live_codes)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False, *, verify: bool = True,
             backend: str = "auto", device: str = "cpu", threads: int | None = None) -> "HammingIndex":
        """Read an index saved by `save`. mmap=True maps the codes read-only (adds then copy them).

        verify=False skips the payload checksum (the header and file size are always checked).
        A truncated, corrupted or newer-version file raises IndexFormatError.
        """
        head, ids, codes = index_format.read_index(path, mmap=mmap, verify=verify)
        index = cls(head["bits"], backend=backend, device=device, threads=threads)
        sorted_ids = np.sort(ids)
        if ids.size and (sorted_ids[0] < 0 or (sorted_ids[1:] == sorted_ids[:-1]).any()):
            raise IndexFormatError(f"{path} holds negative or repeated ids")
        index._install(codes, ids, sorted_ids)
        return index

    def _install(self, codes: np.ndarray, ids: np.ndarray, sorted_ids: np.ndarray) -> None:
        with self._lock:
            self._sorted_ids = sorted_ids
            self._next_id = int(sorted_ids[-1]) + 1 if sorted_ids.size else 0
            self._state = _State(codes, ids, int(ids.shape[0]))

    # ---------------------------------------------------------------- FAISS
    def to_faiss(self, with_ids: bool = True):
        """A FAISS binary index with the same codes in the same order (same search results).

        with_ids=True: `IndexBinaryIDMap` over an `IndexBinaryFlat` (labels are our ids);
        with_ids=False: a plain `IndexBinaryFlat` (labels are positions).
        """
        faiss = require("faiss", "faiss", "HammingIndex.to_faiss")
        st = self._state
        flat = faiss.IndexBinaryFlat(self._bits)
        if not with_ids:
            if st.n:
                flat.add(np.ascontiguousarray(st.live_codes))
            return flat
        idmap = faiss.IndexBinaryIDMap(flat)
        idmap.referenced_objects = [flat]  # keep the wrapped index alive
        if st.n:
            idmap.add_with_ids(np.ascontiguousarray(st.live_codes), np.ascontiguousarray(st.live_ids))
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
