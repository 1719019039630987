"""One shard of a sharded index: the state a Ray actor holds (a plain class, so it is testable without Ray).

The shard's HammingIndex is keyed by the items' global sequence numbers (seq), not by their ids:
searching it then yields seqs directly, already in (distance, seq) order, which is what the merge
needs (see merge.py). The user's ids sit in a parallel array; since seqs only grow and removal
keeps the order, `seqs` stays sorted and maps a seq to its row with one binary search.

On disk a shard is two files: `NAME.cmhx`, a regular index file (docs/formats/index-file.md) holding
the user ids, the codes in seq order and the sharded index's metadata (so it also loads as a plain
HammingIndex of that shard), and
`NAME.seq.npy`, the seqs, whose CRC-32 the sharded index's manifest records.
"""

from __future__ import annotations

import os
import uuid
import zlib

import numpy as np

from cmhash.errors import IndexFormatError, InvalidInputError
from cmhash.runtime.distributed.merge import SEQ_PAD
from cmhash.runtime.formats import index_file
from cmhash.runtime.index import PAD_ID, HammingIndex
from cmhash.runtime.io import atomic_write


def seq_crc32(seqs: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(seqs, dtype="<i8").tobytes())


class IndexShard:
    """A HammingIndex keyed by seq, plus the user ids; every method is one Ray actor call."""

    def __init__(self, number: int, bits: int, *, backend: str = "auto", threads: int | None = None,
                 method: str = "auto", meta: dict | None = None) -> None:
        self.number = number
        self._bits = bits
        self._kwargs = {"backend": backend, "threads": threads, "method": method}
        self.meta = dict(meta or {})
        self._reset()

    def _reset(self) -> None:
        self.index = HammingIndex(self._bits, **self._kwargs)
        self.user_ids = np.empty(0, np.int64)
        self.seqs = np.empty(0, np.int64)  # the index's ids (insertion order = ascending), kept to avoid copies
        # A new token whenever this state is created: an actor that Ray restarted (and that came
        # back empty) answers with a token the driver does not know.
        self.token = uuid.uuid4().hex

    def info(self) -> dict:
        return {"number": self.number, "count": len(self.index), "token": self.token, "pid": os.getpid()}

    def add(self, codes: np.ndarray, ids: np.ndarray, seqs: np.ndarray) -> dict:
        """Append items; their seqs must be larger than every seq the shard holds (the driver's counter)."""
        seqs = np.asarray(seqs, np.int64)
        if seqs.size:
            last = int(self.seqs[-1]) if self.seqs.size else -1
            if int(seqs[0]) <= last or (seqs.size > 1 and bool((np.diff(seqs) <= 0).any())):
                raise InvalidInputError(
                    f"shard {self.number}: seqs must grow (got {seqs[:3].tolist()}... after {last})")
        self.index.add(codes, seqs)
        self.user_ids = np.concatenate([self.user_ids, np.asarray(ids, np.int64)])
        self.seqs = np.concatenate([self.seqs, seqs])
        return self.info()

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Which of `ids` this shard holds (bool per id)."""
        return np.isin(np.asarray(ids, np.int64), self.user_ids)

    def remove(self, ids: np.ndarray) -> dict:
        """Remove the items with these user ids that live here (the driver checked they all exist)."""
        hit = np.isin(self.user_ids, np.asarray(ids, np.int64))
        if hit.any():
            self.index.remove(self.seqs[hit])
            self.user_ids = self.user_ids[~hit]
            self.seqs = self.seqs[~hit]
        return self.info()

    def _ids_of(self, seqs: np.ndarray) -> np.ndarray:
        """User ids of seqs (PAD_ID for padding), through a binary search in the sorted seqs."""
        real = seqs != PAD_ID
        out = np.full(seqs.shape, PAD_ID, np.int64)
        if real.any():
            out[real] = self.user_ids[np.searchsorted(self.seqs, seqs[real])]
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """This shard's top-k as (distances, seqs, ids, info); padding has seq SEQ_PAD and id PAD_ID."""
        dist, seqs = self.index.search(queries, k)
        ids = self._ids_of(seqs)
        seqs = np.where(seqs == PAD_ID, SEQ_PAD, seqs)
        return dist, seqs, ids, self.info()

    def range_search(self, queries: np.ndarray, radius: int) -> tuple[list, dict]:
        hits = self.index.range_search(queries, radius)
        return [(d, s, self._ids_of(s)) for d, s in hits], self.info()

    # ------------------------------------------------------------------ files
    def save(self, index_path: str, seq_path: str, meta: dict | None = None) -> dict:
        """Write both files atomically; return info plus the seqs' CRC for the manifest."""
        if meta is not None:
            self.meta = dict(meta)
        index_file.write_index(index_path, index_file.IndexFile(self._bits, self.index.codes, self.user_ids,
                                                                meta=self.meta))
        seqs = np.ascontiguousarray(self.seqs, dtype="<i8")
        with atomic_write(seq_path) as fh:
            np.save(fh, seqs, allow_pickle=False)
        return {**self.info(), "seq_crc32": seq_crc32(seqs)}

    def load(self, index_path: str, seq_path: str, count: int, crc: int) -> dict:
        """Replace the state with a saved shard, checked against the manifest's count and CRC."""
        f = index_file.read_index(index_path)
        if f.bits != self._bits:
            raise IndexFormatError(
                f"{index_path} holds {f.bits}-bit codes; the sharded index is {self._bits}-bit")
        alive = None if f.dead is None else ~np.unpackbits(f.dead, count=f.codes.shape[0], bitorder="little").astype(bool)
        codes = f.codes if alive is None else f.codes[alive]
        ids = np.arange(codes.shape[0], dtype=np.int64) if f.ids is None else f.ids if alive is None else f.ids[alive]
        try:
            seqs = np.load(seq_path, allow_pickle=False)
        except FileNotFoundError as exc:
            raise IndexFormatError(f"{seq_path} is missing; the sharded index folder is incomplete") from exc
        except (OSError, ValueError, EOFError) as exc:
            raise IndexFormatError(f"{seq_path} is not a readable .npy file ({exc})") from exc
        if seqs.dtype != np.int64 or seqs.shape != ids.shape or ids.shape[0] != count or seq_crc32(seqs) != crc:
            raise IndexFormatError(f"{seq_path} or {index_path} does not match the manifest (expected {count} items "
                                   "and the recorded checksum): the files are damaged or from another save")
        if seqs.size > 1 and bool((np.diff(seqs) <= 0).any()):
            raise IndexFormatError(f"{seq_path}: the sequence numbers are not increasing")
        self._reset()
        self.index.add(codes, seqs)
        self.user_ids = ids.copy()
        self.seqs = seqs
        self.meta = f.meta
        return {**self.info(), "meta": f.meta}
