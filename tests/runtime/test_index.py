"""HammingIndex: exact top-k / range search against a brute-force reference, persistence, errors."""

from __future__ import annotations

import json
import struct
import sys
import threading
import zlib

import numpy as np
import pytest

from cmhash.errors import (
    CodeFormatError,
    DataNotFoundError,
    IndexFormatError,
    InvalidInputError,
    MissingDependencyError,
)
from cmhash.runtime import search_cpu
from cmhash.runtime.formats import index_file as index_format
from cmhash.runtime.codes import hamming_distances
from cmhash.runtime.index import PAD_DISTANCE, PAD_ID, HammingIndex

HAS_NUMBA = search_cpu.numba_available()
CPU_BACKENDS = ["numpy"] + (["numba"] if HAS_NUMBA else [])
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")


# ----------------------------------------------------------------------------- references
def reference_topk(queries, db, k, ids=None):
    """Brute force: hamming_distances, then sort by (distance, position); FAISS-style padding."""
    n = db.shape[0]
    ids = np.arange(n) if ids is None else np.asarray(ids)
    out_d = np.full((len(queries), k), PAD_DISTANCE, np.int32)
    out_i = np.full((len(queries), k), PAD_ID, np.int64)
    if n == 0:
        return out_d, out_i
    dist = hamming_distances(queries, db).astype(np.int64)
    for r, row in enumerate(dist):
        order = np.lexsort((np.arange(n), row))[:k]
        out_d[r, : order.size] = row[order]
        out_i[r, : order.size] = ids[order]
    return out_d, out_i


def reference_range(queries, db, radius, ids=None):
    n = db.shape[0]
    ids = np.arange(n) if ids is None else np.asarray(ids)
    out = []
    for row in hamming_distances(queries, db).astype(np.int64):
        hit = np.flatnonzero(row <= radius)
        order = hit[np.lexsort((hit, row[hit]))]
        out.append((row[order], ids[order]))
    return out


def tied_codes(rng, n, nbytes, distinct=None):
    """Codes with many exact ties: few varying bits, or a small pool of distinct codes."""
    if distinct is not None:
        pool = rng.integers(0, 256, (distinct, nbytes), dtype=np.uint8)
        return pool[rng.integers(0, distinct, n)]
    codes = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    codes[:, 1:] &= rng.integers(0, 256, nbytes - 1, dtype=np.uint8) & 0x11 if nbytes > 1 else 0
    return codes


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.int32 and got[1].dtype == np.int64


# ----------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("bits", [8, 16, 24, 32, 64, 96, 128, 256])
def test_search_matches_brute_force_with_many_ties(backend, bits):
    rng = np.random.default_rng(bits)
    nb = bits // 8
    for db in (rng.integers(0, 256, (3000, nb), dtype=np.uint8), tied_codes(rng, 3000, nb),
               tied_codes(rng, 3000, nb, distinct=7)):
        queries = np.concatenate([rng.integers(0, 256, (6, nb), dtype=np.uint8), db[:3]])
        index = HammingIndex(bits, backend=backend)
        index.add(db)
        for k in (1, 7, 100, 2999, 3000):
            assert_same(index.search(queries, k, threads=2), reference_topk(queries, db, k))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_k_larger_than_the_index_pads_like_faiss(backend):
    rng = np.random.default_rng(1)
    db = rng.integers(0, 256, (5, 8), dtype=np.uint8)
    index = HammingIndex(64, backend=backend)
    index.add(db, ids=[10, 11, 12, 13, 14])
    dist, ids = index.search(db[:2], 8)
    assert dist.shape == ids.shape == (2, 8)
    assert (dist[:, 5:] == PAD_DISTANCE).all() and (ids[:, 5:] == PAD_ID).all()
    assert sorted(ids[0, :5].tolist()) == [10, 11, 12, 13, 14]
    assert dist[0, 0] == 0 and ids[0, 0] == 10
    empty = HammingIndex(64, backend=backend)
    dist, ids = empty.search(db[:2], 3)
    assert (dist == PAD_DISTANCE).all() and (ids == PAD_ID).all()


@needs_numba
@pytest.mark.parametrize("bits", [16, 32, 64, 128])
def test_numba_path_equals_numpy_path(bits):
    rng = np.random.default_rng(7)
    nb = bits // 8
    db = np.concatenate([rng.integers(0, 256, (20000, nb), dtype=np.uint8), tied_codes(rng, 5000, nb)])
    queries = np.concatenate([rng.integers(0, 256, (20, nb), dtype=np.uint8), db[::2500]])
    for k in (1, 100, 1000):
        a = search_cpu.topk(queries, db, k, backend="numpy", threads=1)
        b = search_cpu.topk(queries, db, k, backend="numba", threads=2)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    la, da, pa = search_cpu.range_search(queries, db, bits // 4, backend="numpy")
    lb, db_, pb = search_cpu.range_search(queries, db, bits // 4, backend="numba", threads=2)
    for x, y in ((la, lb), (da, db_), (pa, pb)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bits", [16, 64, 128])
def test_identical_to_faiss(bits):
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    nb = bits // 8
    db = np.concatenate([rng.integers(0, 256, (4000, nb), dtype=np.uint8), tied_codes(rng, 4000, nb)])
    queries = rng.integers(0, 256, (16, nb), dtype=np.uint8)
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(db)
    index = HammingIndex(bits)
    index.add(db)
    for k in (1, 50, 100, 9000):
        want = flat.search(queries, k)
        got = index.search(queries, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_to_faiss_and_from_faiss_round_trip():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    db = tied_codes(rng, 2000, 8)
    index = HammingIndex(64)
    index.add(db, ids=np.arange(2000) * 5 + 3)
    index.remove(np.arange(0, 2000, 3) * 5 + 3)
    queries = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    mine = index.search(queries, 60)
    theirs = index.to_faiss().search(queries, 60)
    np.testing.assert_array_equal(mine[0], theirs[0])
    np.testing.assert_array_equal(mine[1], theirs[1])
    flat = index.to_faiss(with_ids=False)
    assert isinstance(flat, faiss.IndexBinaryFlat) and flat.ntotal == len(index)
    back = HammingIndex.from_faiss(index.to_faiss())
    np.testing.assert_array_equal(back.ids, index.ids)
    np.testing.assert_array_equal(back.codes, index.codes)
    plain = HammingIndex.from_faiss(flat)
    np.testing.assert_array_equal(plain.ids, np.arange(len(index)))
    with pytest.raises(InvalidInputError):
        HammingIndex.from_faiss(faiss.IndexBinaryHash(64, 8))


def test_faiss_interop_without_faiss_is_a_typed_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingDependencyError, match="faiss"):
        HammingIndex(64).to_faiss()


# ----------------------------------------------------------------------------- range search
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("bits", [16, 24, 64, 128])
def test_range_search_matches_brute_force(backend, bits):
    rng = np.random.default_rng(bits + 1)
    nb = bits // 8
    db = np.concatenate([rng.integers(0, 256, (1500, nb), dtype=np.uint8), tied_codes(rng, 1500, nb)])
    ids = rng.permutation(10**6)[: len(db)]
    queries = np.concatenate([rng.integers(0, 256, (5, nb), dtype=np.uint8), db[:2]])
    index = HammingIndex(bits, backend=backend)
    index.add(db, ids)
    for radius in (0, 3, bits // 3, bits, bits + 5):
        got = index.range_search(queries, radius, threads=2)
        want = reference_range(queries, db, radius, ids)
        assert len(got) == len(want)
        for (gd, gi), (wd, wi) in zip(got, want):
            np.testing.assert_array_equal(gd, wd)
            np.testing.assert_array_equal(gi, wi)
            assert gd.dtype == np.int32 and gi.dtype == np.int64
    with pytest.raises(InvalidInputError):
        index.range_search(queries, -1)


def test_range_search_is_inclusive_unlike_faiss():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    db = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (4, 8), dtype=np.uint8)
    index = HammingIndex(64)
    index.add(db)
    lims, _, labels = index.to_faiss().range_search(queries, 21)  # FAISS: d < 21
    for i, (_, ids) in enumerate(index.range_search(queries, 20)):  # ours: d <= 20
        assert sorted(ids.tolist()) == sorted(labels[lims[i]:lims[i + 1]].tolist())


# ----------------------------------------------------------------------------- add / remove
def test_add_remove_len_and_ids():
    rng = np.random.default_rng(6)
    db = tied_codes(rng, 300, 4, distinct=20)
    index = HammingIndex(32)
    assert len(index) == 0
    first = index.add(db[:100])
    np.testing.assert_array_equal(first, np.arange(100))
    second = index.add(db[100:200], ids=np.arange(1000, 1100))
    third = index.add(db[200:])  # default ids continue after the largest id held
    np.testing.assert_array_equal(third, np.arange(1100, 1200))
    assert len(index) == 300
    np.testing.assert_array_equal(index.ids, np.concatenate([first, second, third]))

    assert index.remove(np.concatenate([first[::2], [1050, 1050]])) == 51
    assert len(index) == 249
    keep = np.ones(300, bool)
    keep[0:100:2] = False
    keep[150] = False
    np.testing.assert_array_equal(index.ids, np.concatenate([first, second, third])[keep])
    np.testing.assert_array_equal(index.codes, db[keep])
    queries = db[:9]
    assert_same(index.search(queries, 40), reference_topk(queries, db[keep], 40, index.ids))

    with pytest.raises(InvalidInputError, match="not in the index"):
        index.remove([1, 5, 999999])  # 1 is present, but nothing is removed
    assert len(index) == 249 and 1 in index.ids
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(db[:1], ids=[1])
    with pytest.raises(InvalidInputError, match="repeat"):
        index.add(db[:2], ids=[5000, 5000])
    with pytest.raises(InvalidInputError, match=">= 0"):
        index.add(db[:1], ids=[-3])
    with pytest.raises(InvalidInputError):
        index.add(db[:2], ids=[7000])
    with pytest.raises(InvalidInputError):
        index.add(db[:1], ids=[1.5])
    assert len(index) == 249
    assert index.remove([]) == 0


def test_add_checks_codes():
    index = HammingIndex(64)
    with pytest.raises(CodeFormatError):
        index.add(np.zeros((3, 4), np.uint8))
    with pytest.raises(CodeFormatError):
        index.add(np.zeros((3, 8), np.int64))
    with pytest.raises(CodeFormatError):
        HammingIndex(12)
    with pytest.raises(InvalidInputError):
        HammingIndex(64, backend="annoy")
    with pytest.raises(InvalidInputError):
        HammingIndex(64, device="tpu")
    with pytest.raises(InvalidInputError):
        HammingIndex(64, threads=0)


# ----------------------------------------------------------------------------- input errors
def test_search_input_errors():
    rng = np.random.default_rng(8)
    index = HammingIndex(64)
    index.add(rng.integers(0, 256, (50, 8), dtype=np.uint8))
    q = rng.integers(0, 256, (2, 8), dtype=np.uint8)
    for bad_k in (0, -1, 1.5, True, "3", None):
        with pytest.raises(InvalidInputError):
            index.search(q, bad_k)
    with pytest.raises(InvalidInputError, match="empty"):
        index.search(np.zeros((0, 8), np.uint8), 5)
    with pytest.raises(CodeFormatError):
        index.search(np.zeros((2, 4), np.uint8), 5)  # 32-bit queries on a 64-bit index
    with pytest.raises(CodeFormatError):
        index.search(q.astype(np.int64), 5)
    with pytest.raises(CodeFormatError):
        index.search(q[0], 5)  # 1-D
    with pytest.raises(InvalidInputError):
        index.search(q, 5, threads=0)
    with pytest.raises(InvalidInputError, match="empty"):
        index.range_search(np.zeros((0, 8), np.uint8), 3)
    dist, ids = index.search(q[:, :][::-1], np.int64(3))  # non-contiguous input and numpy int k
    assert dist.shape == (2, 3)


def test_missing_optional_dependencies_are_typed_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(MissingDependencyError, match="cupy"):
        HammingIndex(64, device="cuda")
    with pytest.raises(MissingDependencyError):
        HammingIndex(64, backend="cupy")
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(MissingDependencyError, match="numba"):
        HammingIndex(64, backend="numba")
    # "auto" falls back to numpy without numba, with the same results
    monkeypatch.setattr(search_cpu, "_NUMBA_OK", False)
    rng = np.random.default_rng(9)
    db = tied_codes(rng, 500, 8)
    index = HammingIndex(64)
    index.add(db)
    assert index.backend == "numpy"
    assert_same(index.search(db[:4], 30), reference_topk(db[:4], db, 30))


# ----------------------------------------------------------------------------- persistence
@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(10)
    db = tied_codes(rng, 1000, 16)
    index = HammingIndex(128, meta={"model": {"sha256": "ab" * 32, "bits": 128}})
    index.add(db, ids=rng.permutation(10**5)[:1000])
    path = tmp_path / "db.cmhx"
    index.save(path)
    return index, path


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(saved, mmap):
    index, path = saved
    meta_len = len(json.dumps(index.meta, sort_keys=True).encode())
    assert path.stat().st_size == index_format.layout(128, 1000, index_format.FLAG_IDS, meta_len)["size"]
    loaded = HammingIndex.load(path, mmap=mmap)
    assert loaded.bits == 128 and len(loaded) == 1000
    assert loaded.meta == {"model": {"sha256": "ab" * 32, "bits": 128}}
    np.testing.assert_array_equal(loaded.ids, index.ids)
    np.testing.assert_array_equal(loaded.codes, index.codes)
    q = index.codes[:5]
    assert_same(loaded.search(q, 20), index.search(q, 20))
    before = path.read_bytes()
    loaded.add(q, ids=[10**6 + i for i in range(5)])  # an mmap-loaded index copies on write
    loaded.remove(index.ids[:3])
    assert len(loaded) == 1002 and path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp"))  # atomic_write left no temporary file


def test_implicit_ids_store_the_codes_only(tmp_path):
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, (5000, 8), dtype=np.uint8)
    index = HammingIndex(64)
    index.add(db[:3000])
    index.add(db[3000:])
    assert index.memory_bytes()["ids"] == 0
    index.save(tmp_path / "a.cmhx")
    assert (tmp_path / "a.cmhx").stat().st_size == 64 + 8 * 5000  # header + codes
    loaded = HammingIndex.load(tmp_path / "a.cmhx")
    assert loaded.memory_bytes() == {"codes": 8 * 5000, "ids": 0, "tombstones": 0, "mih": 0}
    assert_same(loaded.search(db[:7], 30), reference_topk(db[:7], db, 30))
    assert loaded.add(db[:2]).tolist() == [5000, 5001]


def test_removals_are_tombstones_that_survive_save_and_load(tmp_path):
    rng = np.random.default_rng(4)
    db = tied_codes(rng, 4000, 8, distinct=50)
    index = HammingIndex(64)
    index.add(db)
    gone = rng.permutation(4000)[:900]
    index.remove(gone)
    mem = index.memory_bytes()
    assert mem["ids"] == 0 and mem["tombstones"] == 500  # 1 bit per row; ids stay implicit
    keep = np.setdiff1d(np.arange(4000), gone)
    want = reference_topk(db[:9], db[keep], 60, ids=keep)
    assert_same(index.search(db[:9], 60), want)
    index.save(tmp_path / "t.cmhx")
    for mmap in (False, True):
        loaded = HammingIndex.load(tmp_path / "t.cmhx", mmap=mmap, verify=True)
        assert len(loaded) == 3100
        assert_same(loaded.search(db[:9], 60), want)
        np.testing.assert_array_equal(loaded.ids, keep)
        with pytest.raises(InvalidInputError, match="not in the index"):
            loaded.remove(gone[:1])
    index.compact()
    assert len(index) == 3100 and index.memory_bytes()["tombstones"] == 0
    assert_same(index.search(db[:9], 60), want)
    assert index.add(db[:1]).tolist() == [4000]


def test_removing_more_than_half_compacts():
    db = np.arange(2000, dtype=np.uint16).view(np.uint8).reshape(2000, 2)
    index = HammingIndex(16)
    index.add(db)
    index.remove(np.arange(0, 2000, 2))
    assert index.memory_bytes()["tombstones"] > 0
    index.remove([1, 3])
    assert index.memory_bytes()["tombstones"] == 0 and len(index) == 998
    assert index.ids[:3].tolist() == [5, 7, 9]
    assert_same(index.search(db[5:6], 2), (np.array([[0, 1]], np.int32), np.array([[5, 7]])))


def test_version_1_files_still_load(tmp_path):
    """A version-1 file written byte by byte from the version-1 spec (docs/formats/index-file.md)."""
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (37, 4), dtype=np.uint8)
    for ids in (np.arange(37, dtype="<i8"), rng.permutation(1000)[:37].astype("<i8")):
        codes_offset = (64 + 8 * 37 + 63) // 64 * 64
        crc = zlib.crc32(codes.tobytes(), zlib.crc32(ids.tobytes()))
        head = struct.pack("<8sIIIIQQQI", b"CMHASHIX", 1, 64, 32, 4, 37, 64, codes_offset, crc)
        raw = head + struct.pack("<I", zlib.crc32(head)) + bytes(8) + ids.tobytes()
        raw += bytes(codes_offset - len(raw)) + codes.tobytes()
        (tmp_path / "v1.cmhx").write_bytes(raw)
        for mmap in (False, True):
            index = HammingIndex.load(tmp_path / "v1.cmhx", mmap=mmap, verify=True)
            np.testing.assert_array_equal(index.ids, ids)
            assert_same(index.search(codes[:3], 10), reference_topk(codes[:3], codes, 10, ids=ids))
            assert index.meta == {}
        assert index.memory_bytes()["ids"] == (0 if ids[5] == 5 else 8 * 37)
        index.save(tmp_path / "v2.cmhx")  # the upgrade: load, save
        assert (tmp_path / "v2.cmhx").read_bytes()[8:12] == struct.pack("<I", 2)
        np.testing.assert_array_equal(HammingIndex.load(tmp_path / "v2.cmhx").ids, ids)


def test_meta_is_checked_and_bounded(tmp_path):
    with pytest.raises(InvalidInputError, match="JSON"):
        HammingIndex(8, meta={"x": object()})
    with pytest.raises(InvalidInputError, match="dict"):
        HammingIndex(8, meta=["not", "a", "dict"])
    index = HammingIndex(8, meta={"ok": 1})
    index.meta["blob"] = "x" * (index_format.META_MAX + 1)
    with pytest.raises(InvalidInputError, match="limit"):
        index.save(tmp_path / "m.cmhx")
    index.meta["blob"] = "é"
    index.save(tmp_path / "m.cmhx")
    assert HammingIndex.load(tmp_path / "m.cmhx").meta == {"ok": 1, "blob": "é"}


def test_empty_index_round_trip(tmp_path):
    HammingIndex(16).save(tmp_path / "e.cmhx")
    for mmap in (False, True):
        loaded = HammingIndex.load(tmp_path / "e.cmhx", mmap=mmap)
        assert len(loaded) == 0 and loaded.bits == 16
        assert loaded.add(np.zeros((1, 2), np.uint8)).tolist() == [0]


def test_corrupted_byte_fails_the_checksum(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    head = index_format.read_header(path)
    for at, what in ((head["codes"] + 5, "payload checksum"), (head["ids"] + 3, "payload checksum"),
                     (head["meta"] + 2, "metadata checksum"), (17, "header checksum")):
        bad = bytearray(raw)
        bad[at] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(IndexFormatError, match=what):
            HammingIndex.load(path)
        with pytest.raises(IndexFormatError, match=what):
            HammingIndex.load(path, mmap=True, verify=True)
    bad = bytearray(raw)
    bad[head["codes"] + 5] ^= 0x10
    path.write_bytes(bytes(bad))
    assert len(HammingIndex.load(path, verify=False)) == 1000
    assert len(HammingIndex.load(path, mmap=True)) == 1000  # mmap: no payload pass unless verify=True


def test_truncated_file_is_a_typed_error(saved):
    _, path = saved
    raw = path.read_bytes()
    for cut in (len(raw) - 1, 1000, 40, 3, 0):
        path.write_bytes(raw[:cut])
        with pytest.raises(IndexFormatError):
            HammingIndex.load(path)
    path.write_bytes(raw + b"\0")
    with pytest.raises(IndexFormatError, match="longer"):
        HammingIndex.load(path)
    with pytest.raises(DataNotFoundError):
        HammingIndex.load(path.parent / "missing.cmhx")
    path.write_bytes(b"not an index at all, just some text" * 4)
    with pytest.raises(IndexFormatError, match="magic"):
        HammingIndex.load(path)


_V2_FIELDS = ["magic", "version", "header_size", "bits", "code_bytes", "count", "flags", "meta_len",
              "meta_crc32", "payload_crc32"]


def _rewrite_header(path, **fields):
    raw = bytearray(path.read_bytes())
    fmt = "<8sIIIIQQIII"
    values = dict(zip(_V2_FIELDS, struct.unpack_from(fmt, raw)))
    values.update(fields)
    head = struct.pack(fmt, *[values[n] for n in _V2_FIELDS])
    raw[: len(head)] = head
    raw[len(head): len(head) + 4] = struct.pack("<I", zlib.crc32(head))  # a consistent forgery
    path.write_bytes(bytes(raw))


def test_forged_huge_count_or_meta_is_refused_before_allocating(saved, monkeypatch):
    _, path = saved
    raw = path.read_bytes()

    def no_alloc(*args, **kwargs):
        raise AssertionError("allocated from a forged header")

    for fields, match in (({"count": 2**40}, "truncated"), ({"meta_len": 2**31}, "metadata block"),
                          ({"meta_len": index_format.META_MAX}, "truncated")):
        path.write_bytes(raw)
        _rewrite_header(path, **fields)
        with monkeypatch.context() as mp:
            mp.setattr(index_format.np, "fromfile", no_alloc)
            mp.setattr(index_format.np, "memmap", no_alloc)
            for mmap in (False, True):
                with pytest.raises(IndexFormatError, match=match):
                    HammingIndex.load(path, mmap=mmap)


def test_newer_format_version_or_flags_say_to_upgrade(saved):
    _, path = saved
    raw = path.read_bytes()
    _rewrite_header(path, version=index_format.VERSION + 1)
    with pytest.raises(IndexFormatError, match="upgrade cmhash"):
        HammingIndex.load(path)
    path.write_bytes(raw)
    _rewrite_header(path, flags=8 | index_format.FLAG_IDS)
    with pytest.raises(IndexFormatError, match="upgrade cmhash"):
        HammingIndex.load(path)


def test_repeated_ids_in_a_file_are_refused(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    head = index_format.read_header(path)
    raw[head["ids"] + 8:head["ids"] + 16] = raw[head["ids"]:head["ids"] + 8]  # id 1 := id 0
    codes = bytes(raw[head["codes"]:head["codes"] + 16000])
    crc = zlib.crc32(bytes(raw[head["ids"]:head["ids"] + 8000]), zlib.crc32(codes))
    path.write_bytes(bytes(raw))
    _rewrite_header(path, payload_crc32=crc)
    with pytest.raises(IndexFormatError, match="repeated"):
        HammingIndex.load(path)


# ----------------------------------------------------------------------------- concurrency
def check_searches_while_adding(index: HammingIndex, readers: int = 4) -> None:
    """`readers` threads search while one thread adds 15 batches; every result must be the exact
    answer for some prefix of the adds (a snapshot), and the final one for all of them."""
    rng = np.random.default_rng(11)
    db = tied_codes(rng, 8000, 8, distinct=300)
    queries = db[:6] ^ np.uint8(1)
    batches = np.array_split(np.arange(len(db)), 16)
    prefixes = np.cumsum([0] + [len(b) for b in batches])
    refs = {int(n): reference_topk(queries, db[:n], 25) for n in prefixes}
    index.add(db[batches[0]])
    index.search(queries[:1], 1)  # load the kernels first: the adds must overlap real searches
    done = threading.Event()
    errors, results = [], []

    def reader():
        try:
            while not done.is_set() or len(results) < 4:
                results.append(index.search(queries, 25, threads=1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def writer():
        try:
            for b in batches[1:]:
                index.add(db[b])
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            done.set()

    threads = [threading.Thread(target=reader) for _ in range(readers)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(index) == len(db)
    for dist, ids in results:  # each result is the exact answer for some snapshot (a prefix)
        assert any(np.array_equal(dist, rd) and np.array_equal(ids, ri) for rd, ri in refs.values())
    assert_same(index.search(queries, 25), refs[len(db)])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_concurrent_searches_while_adding(backend):
    check_searches_while_adding(HammingIndex(64, backend=backend))


# ----------------------------------------------------------------------------- GPU
def _gpu_ok() -> bool:
    try:
        from cmhash.runtime.search_gpu import gpu_available

        return gpu_available()
    except Exception:  # pragma: no cover
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ok(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("bits", [8, 16, 24, 32, 64, 128, 256])
def test_gpu_matches_cpu(bits):
    rng = np.random.default_rng(bits)
    nb = bits // 8
    db = np.concatenate([rng.integers(0, 256, (60000, nb), dtype=np.uint8),
                         tied_codes(rng, 10000, nb), tied_codes(rng, 5000, nb, distinct=3)])
    queries = np.concatenate([rng.integers(0, 256, (40, nb), dtype=np.uint8), db[::9000]])
    cpu = HammingIndex(bits)
    gpu = HammingIndex(bits, device="cuda")
    ids = rng.permutation(10**7)[: len(db)]
    cpu.add(db, ids)
    gpu.add(db, ids)
    for k in (1, 10, 100, 1500):
        assert_same(gpu.search(queries, k), cpu.search(queries, k))
    small = db[:700]
    g2 = HammingIndex(bits, backend="cupy")
    g2.add(small)
    assert_same(g2.search(queries, 1000), reference_topk(queries, small, 1000))
    gpu.remove(ids[:100])
    cpu.remove(ids[:100])
    assert_same(gpu.search(queries, 50), cpu.search(queries, 50))


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ok(), reason="needs CuPy and a CUDA device")
def test_gpu_overflow_paths_match_cpu():
    rng = np.random.default_rng(12)
    db = rng.integers(0, 256, (200_000, 8), dtype=np.uint8)
    db[rng.permutation(200_000)[:30_000]] = db[0]  # 30k exact duplicates: buffers overflow
    queries = np.concatenate([db[:1], db[:1] ^ np.uint8(1), rng.integers(0, 256, (30, 8), dtype=np.uint8)])
    cpu = HammingIndex(64)
    gpu = HammingIndex(64, device="cuda")
    cpu.add(db)
    gpu.add(db)
    for k in (10, 100, 2000):
        assert_same(gpu.search(queries, k), cpu.search(queries, k))
        if k <= 100:  # buffers of max(2048, 4k * 13) slots < 30k duplicates: the fallback ran
            assert gpu._gpu.last_overflow >= 2  # noqa: SLF001


def test_gpu_path_drops_tombstoned_rows():
    """The GPU scan knows no tombstones: the index asks it for k + removed rows and filters them.
    A stand-in GpuSearcher (the CPU scan over every row, removed ones included) checks that filter."""

    class AllRows:
        def topk(self, state, queries, k):
            return search_cpu.topk(queries, state.live_codes, k, backend="numpy")

    rng = np.random.default_rng(21)
    db = tied_codes(rng, 3000, 8, distinct=40)
    cpu, gpu = HammingIndex(64, method="scan"), HammingIndex(64, method="scan")
    for index in (cpu, gpu):
        index.add(db)
        index.remove(np.arange(0, 3000, 3))
    gpu._gpu = AllRows()  # noqa: SLF001
    queries = db[:7]
    for k in (1, 50, 2000, 2500):
        assert_same(gpu.search(queries, k), cpu.search(queries, k))


@pytest.mark.skipif(not search_cpu.numba_available(), reason="needs numba")
def test_compiled_kernels_are_cached_in_cmhash_cache_folder(tmp_path):
    """Before: numba's cache sat next to the installed source (often not writable), so every new process
    compiled the kernels again at its first search. A process that does not set NUMBA_CACHE_DIR now
    keeps them in CACHE_DIR/numba; one that sets it keeps its choice."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from cmhash.runtime.index import HammingIndex\n"
            "codes = np.random.default_rng(0).integers(0, 256, (20000, 8), dtype=np.uint8)\n"
            "ix = HammingIndex(64, backend='numba'); ix.add(codes); ix.search(codes[:1], k=3)\n"
            "import sys; assert 'numba' in sys.modules, 'the search did not run the compiled kernels'\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env={**env, "CMHASH_CACHE": str(tmp_path / "c")})
    assert list((tmp_path / "c" / "numba").rglob("*.nbi")), "no kernel cached in CACHE_DIR/numba"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   env={**env, "CMHASH_CACHE": str(tmp_path / "d"), "NUMBA_CACHE_DIR": str(tmp_path / "mine")})
    assert list((tmp_path / "mine").rglob("*.nbi")) and not (tmp_path / "d" / "numba").exists()
