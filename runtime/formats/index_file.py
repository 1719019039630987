"""The Hamming index file (`.cmhx`): one reader (`read_index`) and one writer (`write_index`).

Version 2 stores the codes alone when ids are implicit (id = insertion position), so a 64-bit
index costs 8 bytes per code plus O(1) on disk, and `mmap=True` maps the codes (and the ids, when
present) without reading them. Optional sections follow the codes: the user ids, the tombstone
bitmap of removed rows, and a small JSON metadata block (issue 17 stores the encoder's model
identity there). Version-1 files (header, ids, codes) still load. The byte layout, the checks in
order and the upgrade path are specified in docs/formats/index-file.md.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmhash.errors import DataNotFoundError, IndexFormatError, InvalidInputError
from cmhash.runtime.io import atomic_write

MAGIC = b"CMHASHIX"
VERSION = 2
REBUILD = ("build it again from its codes (cmhash index build CODES --out PATH --overwrite, or HammingIndex.save) "
           "or restore it from a copy")
HEADER_SIZE = 64
META_MAX = 64 * 1024  # bytes of the JSON metadata block, at most
FLAG_IDS = 1  # the file holds user ids (else id = row position)
FLAG_DEAD = 2  # the file holds a tombstone bitmap (some rows are removed)
_KNOWN_FLAGS = FLAG_IDS | FLAG_DEAD
_HEAD_V1 = struct.Struct("<8sIIIIQQQI")  # through payload_crc32: 52 bytes
_HEAD_V2 = struct.Struct("<8sIIIIQQIII")  # magic .. payload_crc32: 52 bytes
_CRC = struct.Struct("<I")
_CHUNK = 16 << 20  # bytes per CRC / write step


@dataclass
class IndexFile:
    """What an index file holds. `ids` None: id = row; `dead` None: no row is removed."""

    bits: int
    codes: np.ndarray  # (n, bits // 8) uint8, rows in insertion order (removed rows included)
    ids: np.ndarray | None = None  # (n,) int64
    dead: np.ndarray | None = None  # (ceil(n / 8),) uint8, bit r % 8 of byte r // 8 = row r removed
    meta: dict = field(default_factory=dict)
    version: int = VERSION


def _align64(x: int) -> int:
    return (x + 63) // 64 * 64


def layout(bits: int, count: int, flags: int = 0, meta_len: int = 0) -> dict[str, int]:
    """Offsets of a version-2 file's sections and its exact size (Python ints: no overflow)."""
    codes = _align64(HEADER_SIZE + meta_len)
    end = codes + count * (bits // 8)
    ids = _align64(end) if flags & FLAG_IDS else 0
    if ids:
        end = ids + 8 * count
    dead = _align64(end) if flags & FLAG_DEAD else 0
    if dead:
        end = dead + (count + 7) // 8
    return {"meta": HEADER_SIZE, "codes": codes, "ids": ids, "dead": dead, "size": end}


def layout_v1(bits: int, count: int) -> dict[str, int]:
    codes = _align64(HEADER_SIZE + 8 * count)
    return {"ids": HEADER_SIZE, "codes": codes, "size": codes + count * (bits // 8)}


def _bytes(arr: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous array (also empty ones and memmaps), without copying."""
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _crc(buf, crc: int = 0) -> int:
    mv = _bytes(buf)
    for s in range(0, len(mv), _CHUNK):
        crc = zlib.crc32(mv[s:s + _CHUNK], crc)
    return crc


def encode_meta(meta: dict | None) -> bytes:
    """The metadata block's bytes: a JSON object (sorted keys, UTF-8), at most META_MAX bytes."""
    if meta is None:
        return b""
    if not isinstance(meta, dict):
        raise InvalidInputError(f"index metadata must be a dict of JSON values, got {type(meta).__name__}")
    if not meta:
        return b""
    try:
        raw = json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"index metadata must be JSON-serialisable (str, int, float, list, dict): {exc}") from exc
    if len(raw) > META_MAX:
        raise InvalidInputError(f"index metadata is {len(raw)} bytes as JSON; the limit is {META_MAX}: keep it small "
                                "(a model identity, a few names), not per-item data")
    return raw


def write_index(path: str | os.PathLike, f: IndexFile) -> None:
    """Write `f` atomically in format version 2 (ids and tombstones only when present)."""
    codes = np.ascontiguousarray(f.codes, dtype=np.uint8)
    n = codes.shape[0]
    meta = encode_meta(f.meta)
    flags = (FLAG_IDS if f.ids is not None else 0) | (FLAG_DEAD if f.dead is not None else 0)
    lay = layout(f.bits, n, flags, len(meta))
    sections: list[tuple[int, np.ndarray]] = [(lay["codes"], codes)]
    if f.ids is not None:
        sections.append((lay["ids"], np.ascontiguousarray(f.ids, dtype="<i8")))
    if f.dead is not None:
        sections.append((lay["dead"], np.ascontiguousarray(f.dead, dtype=np.uint8)[: (n + 7) // 8]))
    payload = 0
    for _, arr in sections:
        payload = _crc(arr, payload)
    head = _HEAD_V2.pack(MAGIC, VERSION, HEADER_SIZE, f.bits, f.bits // 8, n, flags, len(meta),
                         zlib.crc32(meta), payload)
    header = head + _CRC.pack(zlib.crc32(head)) + bytes(HEADER_SIZE - _HEAD_V2.size - _CRC.size)
    with atomic_write(path, "wb") as fh:
        fh.write(header)
        fh.write(meta)
        at = HEADER_SIZE + len(meta)
        for offset, arr in sections:
            fh.write(bytes(offset - at))
            _write(fh, arr)
            at = offset + arr.nbytes


def _write(fh, arr: np.ndarray) -> None:
    mv = _bytes(arr)
    for s in range(0, len(mv), _CHUNK):
        fh.write(mv[s:s + _CHUNK])


def read_header(path: str | os.PathLike) -> dict:
    """Parse and validate the header and the file size; allocates nothing sized by the header."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_SIZE)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"no index file at {path}: check the path, or build one with "
                                "`cmhash index build`") from exc
    except IsADirectoryError as exc:
        raise IndexFormatError(f"{path} is a folder, not an index file (a sharded index is opened with "
                               "ShardedIndex.load)") from exc
    if len(raw) < 8 or raw[:8] != MAGIC:
        raise IndexFormatError(f"{path} is not a cmhash index file (bad magic bytes {raw[:8]!r}); {REBUILD}")
    if len(raw) < HEADER_SIZE:
        raise IndexFormatError(f"{path} is truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header; "
                               f"{REBUILD}")
    (version,) = struct.unpack_from("<I", raw, 8)
    if version > VERSION:
        raise IndexFormatError(
            f"{path} uses index format version {version}, but this cmhash reads up to version "
            f"{VERSION}: upgrade cmhash (pip install -U cmhash) to load it"
        )
    if version < 1:
        raise IndexFormatError(f"{path} has an invalid format version {version}")
    (header_crc,) = _CRC.unpack_from(raw, 52)
    if zlib.crc32(raw[:52]) != header_crc:
        raise IndexFormatError(f"{path} is corrupted: the header checksum does not match; {REBUILD}")
    head = _header_v1(path, raw) if version == 1 else _header_v2(path, raw)
    if size != head["size"]:
        what = "truncated" if size < head["size"] else "longer than its header says"
        raise IndexFormatError(
            f"{path} is {what}: the header declares {head['count']} items of {head['bits']} bits "
            f"({head['size']} bytes) but the file has {size} bytes; {REBUILD}"
        )
    return head


def _check_bits(path, header_size: int, bits: int, code_bytes: int) -> None:
    if header_size != HEADER_SIZE or bits <= 0 or bits % 8 or code_bytes * 8 != bits:
        raise IndexFormatError(
            f"{path} has an inconsistent header (header_size={header_size}, bits={bits}, code_bytes={code_bytes})"
        )


def _header_v1(path, raw: bytes) -> dict:
    _, version, header_size, bits, code_bytes, count, ids_offset, codes_offset, payload_crc = \
        _HEAD_V1.unpack_from(raw)
    _check_bits(path, header_size, bits, code_bytes)
    lay = layout_v1(bits, count)
    if (ids_offset, codes_offset) != (lay["ids"], lay["codes"]):
        raise IndexFormatError(f"{path} has inconsistent offsets for {count} items")
    return {"version": version, "bits": bits, "count": count, "flags": FLAG_IDS, "meta_len": 0,
            "meta_crc32": 0, "payload_crc32": payload_crc, **lay}


def _header_v2(path, raw: bytes) -> dict:
    _, version, header_size, bits, code_bytes, count, flags, meta_len, meta_crc, payload_crc = \
        _HEAD_V2.unpack_from(raw)
    _check_bits(path, header_size, bits, code_bytes)
    if flags & ~_KNOWN_FLAGS:
        raise IndexFormatError(f"{path} sets unknown flags {flags:#x}: it was written by a newer cmhash; "
                               "upgrade cmhash (pip install -U cmhash) to load it")
    if meta_len > META_MAX:
        raise IndexFormatError(f"{path} declares a {meta_len}-byte metadata block; the limit is {META_MAX}")
    if raw[56:64] != bytes(8):
        raise IndexFormatError(f"{path} has non-zero reserved header bytes")
    lay = layout(bits, count, flags, meta_len)
    return {"version": version, "bits": bits, "count": count, "flags": flags, "meta_len": meta_len,
            "meta_crc32": meta_crc, "payload_crc32": payload_crc, **lay}


def _read_meta(path, fh, head: dict) -> dict:
    if not head["meta_len"]:
        return {}
    fh.seek(head["meta"])
    raw = fh.read(head["meta_len"])
    if len(raw) != head["meta_len"] or zlib.crc32(raw) != head["meta_crc32"]:
        raise IndexFormatError(f"{path} is corrupted: the metadata checksum does not match")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"{path} has an unreadable metadata block ({exc})") from exc
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{path}: the metadata block is not a JSON object")
    return meta


def read_index(path: str | os.PathLike, mmap: bool = False, verify: bool = True) -> IndexFile:
    """Read an index file (version 1 or 2).

    mmap=True maps the codes and the ids read-only instead of reading them. verify=False skips the
    payload CRC (which reads every byte); the header, the size and the metadata are always checked.
    """
    head = read_header(path)
    n, bits, flags = head["count"], head["bits"], head["flags"]
    nbytes = bits // 8

    def section(fh, key: str, dtype: str, count: int, shape: tuple) -> np.ndarray:
        if mmap and count:
            return np.memmap(path, dtype=dtype, mode="r", offset=head[key], shape=shape)
        fh.seek(head[key])
        arr = np.fromfile(fh, dtype=dtype, count=count)
        if arr.shape[0] != count:  # the file changed under us
            raise IndexFormatError(f"{path} is truncated: expected {n} items")
        return arr.reshape(shape)

    with open(path, "rb") as fh:
        meta = _read_meta(path, fh, head)
        codes = section(fh, "codes", "u1", n * nbytes, (n, nbytes))
        ids = section(fh, "ids", "<i8", n, (n,)) if flags & FLAG_IDS else None
        dead = None
        if flags & FLAG_DEAD:
            fh.seek(head["dead"])
            dead = np.fromfile(fh, dtype=np.uint8, count=(n + 7) // 8)  # small, and copied on write
            if dead.shape[0] != (n + 7) // 8:
                raise IndexFormatError(f"{path} is truncated: expected {n} items")
    if verify:
        parts = [ids, codes] if head["version"] == 1 else [codes, ids, dead]
        crc = 0
        for part in parts:
            if part is not None:
                crc = _crc(part, crc)
        if crc != head["payload_crc32"]:
            raise IndexFormatError(f"{path} is corrupted: the payload checksum (CRC-32) does not match; "
                                   f"{REBUILD}")
    if dead is not None and n % 8 and int(dead[-1]) >> (n % 8):
        raise IndexFormatError(f"{path} marks removed rows past its {n} items")
    if ids is not None:
        ids = ids.astype(np.int64, copy=False)  # a view on little-endian machines (mmaps stay mapped)
    return IndexFile(bits, codes, ids, dead, meta, head["version"])
