"""ShardedIndex: a HammingIndex split over Ray actors, one shard per actor, with single-node results.

    with ray_cluster():                          # or ray_cluster("ray://head:10001")
        index = ShardedIndex(64, shards=4)
        index.add(codes, ids)                    # ids optional, as in HammingIndex.add
        dist, ids = index.search(queries, k=100)
        index.save("db.shards")                  # index.json + two files per shard
        index = ShardedIndex.load("db.shards")   # e.g. after a restart

Results equal a single HammingIndex holding the same items added in the same order: ids,
distances and tie order (see merge.py). Every added item gets the next global sequence number
(seq) and goes to shard `seq % shards`; searches fan out to every shard and merge by
(distance, seq). Ids follow HammingIndex's rules, checked by the same functions (runtime/index.py:
int64 >= 0, unique across all shards; `add` without ids continues after the largest id the index
has held; `remove` of an absent id removes nothing and raises). Each shard searches with
HammingIndex's `method` (scan or multi-index hashing, identical results); `meta` is saved in every
shard file and comes back with `load`.

Failures: when a shard's actor has died (or Ray restarted it empty), every call that needs it
raises ShardUnavailableError naming the shard, never a result without its items. Restore it with
`restore_shard(n)` from the last save (refused if it changed since, unless discard_unsaved=True),
or reload the whole index with `load`.

Writes: one writer (this driver object); searches may run while no write is in progress. `add`
first asks every shard whether it holds any of the new ids (np.isin over the shard: linear in its
size), so add in large batches when building a big index. On a real
cluster the save folder must be on storage every node can reach (NFS, a mounted bucket): each actor
writes and reads its own shard's files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cmhash.errors import InvalidInputError, ShardUnavailableError
from cmhash.runtime.codes import check_bits, check_codes
from cmhash.runtime.distributed.cluster import cluster_cpus, gather, init, ray_module
from cmhash.runtime.formats.sharded_index import (ShardEntry, ShardManifest, is_sharded_index, read_shard_manifest,
                                                  write_shard_manifest)
from cmhash.runtime.distributed.merge import merge_ranges, merge_topk
from cmhash.runtime.formats.index_file import encode_meta
from cmhash.runtime.index import BACKENDS, METHODS, as_id_array, check_new_ids, ids_missing_error, ids_present_error
from cmhash.validators import positive_int

_REMOTE: Any = None


def _remote_shard() -> Any:
    """`ray.remote(IndexShard)`, made once per process."""
    global _REMOTE
    if _REMOTE is None:
        import ray

        from cmhash.runtime.distributed.shard import IndexShard

        # No automatic restarts: a restarted actor would come back empty and answer searches
        # without its items. A dead shard must surface as an error (ShardUnavailableError).
        _REMOTE = ray.remote(max_restarts=0, max_task_retries=0)(IndexShard)
    return _REMOTE


class ShardedIndex:
    """Exact Hamming search over shards held by Ray actors (see the module docstring)."""

    def __init__(self, bits: int, shards: int, *, num_cpus: float | None = None, threads: int | None = None,
                 backend: str = "auto", timeout_s: float | None = None, method: str = "auto",
                 meta: dict | None = None) -> None:
        """`num_cpus`: Ray CPUs reserved per shard actor (default: min(1, cluster CPUs / shards), so
        that every shard fits); `threads`: search threads per shard (default max(1, num_cpus));
        `timeout_s`: how long a call waits for a shard before ShardUnavailableError; `method`:
        each shard's HammingIndex method; `meta`: a small JSON dict saved with the shards."""
        self._ray = ray_module("ShardedIndex")
        init()  # joins the session already started (ray_cluster), else starts a local one
        self._bits = check_bits(bits)
        n = positive_int(shards, "shards")
        if backend not in BACKENDS:  # checked here: in the actors it would surface as a dead shard
            raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if method not in METHODS:
            raise InvalidInputError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
        encode_meta(meta)  # checks it
        self.meta = dict(meta or {})
        total = cluster_cpus()
        if num_cpus is None:
            num_cpus = min(1.0, math.floor(total / n * 1e4) / 1e4)  # Ray's resource granularity is 1e-4
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
            raise InvalidInputError(f"num_cpus must be a number >= 0, got {num_cpus!r}")
        if num_cpus * n > total + 1e-9:
            # Ray would leave the extra actors pending for ever (no error): refuse up front.
            raise InvalidInputError(f"{n} shards x num_cpus={num_cpus} need {num_cpus * n:g} CPUs but the cluster has "
                                    f"{total}; use fewer shards, a smaller num_cpus, or a bigger cluster")
        self._num_cpus = num_cpus
        self._shard_kwargs = {"backend": backend, "threads": threads or max(1, int(num_cpus)), "method": method,
                              "meta": self.meta}
        self._timeout = timeout_s
        self._actors = [self._spawn(i) for i in range(n)]
        self._tokens: list[str] = [""] * n
        self._counts = [0] * n
        self._expect(gather([a.info.remote() for a in self._actors], "start", timeout_s), range(n), fresh=True)
        self._next_seq = 0
        self._next_id = 0
        self._saved: tuple[Path, ShardManifest] | None = None
        self._dirty: set[int] = set(range(n))  # changed since the last save (or never saved)

    # ------------------------------------------------------------------ plumbing
    def _spawn(self, number: int) -> Any:
        return _remote_shard().options(num_cpus=self._num_cpus).remote(number, self._bits, **self._shard_kwargs)

    def _expect(self, infos: list[dict], numbers: Any, *, fresh: bool = False) -> None:
        """Record (fresh) or check each shard's token and item count: a shard that Ray restarted,
        or that lost items, must not answer as if nothing happened."""
        for number, info in zip(numbers, infos):
            if fresh:
                self._tokens[number], self._counts[number] = info["token"], info["count"]
            elif info["token"] != self._tokens[number] or info["count"] != self._counts[number]:
                raise ShardUnavailableError(
                    f"shard {number} answered with {info['count']} items but should hold {self._counts[number]} "
                    "(its actor was restarted or replaced without its data); restore it with "
                    f"index.restore_shard({number}) or reload the index with ShardedIndex.load(FOLDER)", shard=number)

    def _call(self, numbers: list[int], method: str, what: str, *args: Any) -> list[Any]:
        refs = [getattr(self._actors[i], method).remote(*args) for i in numbers]
        return gather(refs, what, self._timeout, numbers) if refs else []

    # ------------------------------------------------------------------ properties
    @property
    def bits(self) -> int:
        return self._bits

    @property
    def num_shards(self) -> int:
        return len(self._actors)

    @property
    def shard_counts(self) -> list[int]:
        return list(self._counts)

    @property
    def actors(self) -> list[Any]:
        """The shard actors' handles (for operations tooling; e.g. ray.kill in failure tests)."""
        return list(self._actors)

    def __len__(self) -> int:
        return sum(self._counts)

    def __repr__(self) -> str:
        return f"ShardedIndex(bits={self._bits}, shards={self.num_shards}, n={len(self)})"

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the shard actors (their memory is freed; saved files stay)."""
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:  # already dead, or the cluster is gone: nothing left to stop
                pass

    # ------------------------------------------------------------------ writes
    def _present(self, ids: np.ndarray) -> np.ndarray:
        found = self._call(list(range(self.num_shards)), "contains", "a lookup of ids", ids)
        return np.logical_or.reduce(found) if found else np.zeros(ids.shape, bool)

    def add(self, codes: np.ndarray, ids: Any = None) -> np.ndarray:
        """Append codes (n, bits // 8) uint8; return their int64 ids (HammingIndex.add's rules)."""
        codes = check_codes(codes, self._bits, what="codes to add")
        m = codes.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        else:
            new_ids = as_id_array(ids, m)
        if m == 0:
            return new_ids
        uniq = check_new_ids(new_ids)
        clash = new_ids[self._present(new_ids)]
        if clash.size:
            raise ids_present_error(clash)
        seqs = np.arange(self._next_seq, self._next_seq + m, dtype=np.int64)
        shard_of = seqs % self.num_shards
        numbers = [i for i in range(self.num_shards) if (shard_of == i).any()]
        refs = [self._actors[i].add.remote(codes[shard_of == i], new_ids[shard_of == i], seqs[shard_of == i])
                for i in numbers]
        self._next_seq += m  # even if a shard fails below: seqs are never reused
        self._next_id = max(self._next_id, int(uniq[-1]) + 1)
        self._dirty.update(numbers)
        self._apply(numbers, refs, "add", [int((shard_of == i).sum()) for i in numbers])
        return new_ids

    def remove(self, ids: Any) -> int:
        """Remove the items with these ids; all must be present, else InvalidInputError and nothing changes."""
        rm = np.unique(as_id_array(ids))
        if rm.size == 0:
            return 0
        found = self._call(list(range(self.num_shards)), "contains", "a lookup of ids", rm)
        missing = rm[~np.logical_or.reduce(found)]
        if missing.size:
            raise ids_missing_error(missing)
        numbers = [i for i, hit in enumerate(found) if hit.any()]
        self._dirty.update(numbers)
        refs = [self._actors[i].remove.remote(rm) for i in numbers]
        self._apply(numbers, refs, "remove", [-int(found[i].sum()) for i in numbers])
        return int(rm.size)

    def _apply(self, numbers: list[int], refs: list[Any], what: str, deltas: list[int]) -> None:
        """Wait for a write on every shard it touched and book each shard's new count, so that a
        failure on one shard leaves the others' bookkeeping right; then raise the first failure."""
        first: Exception | None = None
        for number, ref, delta in zip(numbers, refs, deltas):
            try:
                (info,) = gather([ref], what, self._timeout, [number])
            except ShardUnavailableError as exc:
                first = first or exc
                continue
            self._counts[number] += delta
            self._expect([info], [number])
        if first is not None:
            raise first

    # ------------------------------------------------------------------ search
    def _queries(self, queries: np.ndarray) -> Any:
        queries = check_codes(queries, self._bits, what="query codes")
        if queries.shape[0] == 0:
            raise InvalidInputError("the query set is empty: pass at least one query code")
        return self._ray.put(np.ascontiguousarray(queries))  # one copy in the object store for all shards

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (distances int32 (nq, k), ids int64 (nq, k)), exactly as HammingIndex.search."""
        k = positive_int(k, "k")
        ref = self._queries(queries)
        answers = self._call(list(range(self.num_shards)), "search", "search", ref, k)
        self._expect([a[3] for a in answers], range(self.num_shards))
        return merge_topk([a[:3] for a in answers], k)

    def range_search(self, queries: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (distances, ids) of every item at distance <= radius, as HammingIndex.range_search."""
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise InvalidInputError(f"radius must be an integer >= 0, got {radius!r}")
        ref = self._queries(queries)
        answers = self._call(list(range(self.num_shards)), "range_search", "range search", ref, int(radius))
        self._expect([a[1] for a in answers], range(self.num_shards))
        return merge_ranges([a[0] for a in answers])

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike) -> Path:
        """Save every shard (in parallel, by its actor) and then the manifest; return the manifest path."""
        folder = Path(folder).resolve()
        if folder.exists() and not folder.is_dir():
            raise InvalidInputError(f"{folder} is a file; a sharded index is saved into a folder")
        folder.mkdir(parents=True, exist_ok=True)
        old = read_shard_manifest(folder) if is_sharded_index(folder) else None
        generation = (old.generation if old else 0) + 1
        names = [ShardManifest.file_names(i, generation) for i in range(self.num_shards)]
        encode_meta(self.meta)  # checked here: in the actors a bad dict would surface as a dead shard
        infos = self._call_each("save", "save", [(str(folder / a), str(folder / b), self.meta) for a, b in names])
        self._expect(infos, range(self.num_shards))
        entries = [ShardEntry(a, b, info["count"], info["seq_crc32"]) for (a, b), info in zip(names, infos)]
        manifest = ShardManifest(self._bits, generation, self._next_seq, self._next_id, entries)
        path = write_shard_manifest(folder, manifest)
        for stale in (old.files() - manifest.files()) if old else ():
            (folder / stale).unlink(missing_ok=True)
        self._saved = (folder, manifest)
        self._dirty.clear()
        return path

    def _call_each(self, method: str, what: str, args: list[tuple]) -> list[Any]:
        refs = [getattr(a, method).remote(*arg) for a, arg in zip(self._actors, args)]
        return gather(refs, what, self._timeout)

    @classmethod
    def load(cls, folder: str | os.PathLike, *, num_cpus: float | None = None, threads: int | None = None,
             backend: str = "auto", timeout_s: float | None = None, method: str = "auto") -> "ShardedIndex":
        """Start one actor per saved shard and load it (every actor reads its own files)."""
        folder = Path(folder).resolve()
        manifest = read_shard_manifest(folder)
        index = cls(manifest.bits, len(manifest.shards), num_cpus=num_cpus, threads=threads, backend=backend,
                    timeout_s=timeout_s, method=method)
        args = [(str(folder / s.index), str(folder / s.seqs), s.count, s.seq_crc32) for s in manifest.shards]
        infos = index._call_each("load", "load", args)
        index._expect(infos, range(index.num_shards), fresh=True)
        index.meta = infos[0]["meta"] if infos else {}
        index._next_seq, index._next_id = manifest.next_seq, manifest.next_id
        index._saved = (folder, manifest)
        index._dirty.clear()
        return index

    def restore_shard(self, number: int, *, discard_unsaved: bool = False) -> None:
        """Replace shard `number` (e.g. after its actor died) by a new actor loaded from the last save."""
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or not 0 <= number < self.num_shards:
            raise InvalidInputError(f"shard number must be in 0..{self.num_shards - 1}, got {number!r}")
        if self._saved is None:
            raise InvalidInputError(f"shard {number} cannot be restored: this index was never saved or loaded; "
                                    "save it with index.save(FOLDER) to make shards restorable")
        folder, manifest = self._saved
        if number in self._dirty and not discard_unsaved:
            raise InvalidInputError(
                f"shard {number} changed after the last save to {folder}; restoring it would drop those changes. "
                "Pass discard_unsaved=True to accept that, or reload the whole index with ShardedIndex.load")
        try:
            self._ray.kill(self._actors[number])
        except Exception:  # already dead: that is why we are here
            pass
        entry = manifest.shards[number]
        self._actors[number] = self._spawn(number)
        ref = self._actors[number].load.remote(str(folder / entry.index), str(folder / entry.seqs), entry.count,
                                               entry.seq_crc32)
        self._expect(gather([ref], "restore", self._timeout, [number]), [number], fresh=True)
        self._dirty.discard(number)
