"""The on-disk format of a HammingIndex (`.cmhx`), version 1.

All integers are little-endian. The file is three regions: a 64-byte header, the ids, the codes.

    offset  size  field
    0       8     magic          b"CMHASHIX"
    8       4     version        u32, 1 (a reader refuses a higher version: upgrade cmhash)
    12      4     header_size    u32, 64
    16      4     bits           u32, a positive multiple of 8
    20      4     code_bytes     u32, bits // 8 (checked against bits)
    24      8     count          u64, number of items n
    32      8     ids_offset     u64, 64
    40      8     codes_offset   u64, align64(64 + 8 n)
    48      4     payload_crc32  u32, CRC-32 (zlib) of the ids bytes followed by the codes bytes
    52      4     header_crc32   u32, CRC-32 of header bytes 0..51
    56      8     reserved       zeros
    64      8 n   ids            int64, in insertion (= search tie-break) order
    ...           padding        zeros up to codes_offset
    codes   n*B   codes          uint8 (n, code_bytes), FAISS bit layout (see runtime.codes)

The file size is exactly `codes_offset + n * code_bytes`.

Reading checks, in order, before it allocates anything sized by the header: the magic, the version,
the header CRC, the fields' consistency (bits, code_bytes, offsets derived from count), and that the
file size equals the size the count implies; so a forged or corrupted count is refused, never
allocated. Then it reads the ids and codes (codes optionally memory-mapped) and checks the payload
CRC. Every failure is an `IndexFormatError`. Files are written through `runtime.io.atomic_write`,
so a reader sees the old file or the whole new one.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from cmhash.errors import DataNotFoundError, IndexFormatError
from cmhash.runtime.io import atomic_write

MAGIC = b"CMHASHIX"
VERSION = 1
HEADER_SIZE = 64
_HEAD = struct.Struct("<8sIIIIQQQI")  # through payload_crc32: 52 bytes
_CRC = struct.Struct("<I")
_CHUNK = 16 << 20  # bytes per CRC / write step


def _align64(x: int) -> int:
    return (x + 63) // 64 * 64


def layout(bits: int, count: int) -> tuple[int, int, int]:
    """(ids_offset, codes_offset, file_size) of an index of `count` codes of `bits` bits."""
    ids_offset = HEADER_SIZE
    codes_offset = _align64(ids_offset + 8 * count)
    return ids_offset, codes_offset, codes_offset + count * (bits // 8)


def _bytes(arr: np.ndarray) -> memoryview:
    """A flat byte view of a C-contiguous array (also empty ones and memmaps), without copying."""
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def _crc(buf, crc: int = 0) -> int:
    mv = _bytes(buf)
    for s in range(0, len(mv), _CHUNK):
        crc = zlib.crc32(mv[s:s + _CHUNK], crc)
    return crc


def write_index(path: str | os.PathLike, bits: int, ids: np.ndarray, codes: np.ndarray) -> None:
    """Write ids (n,) int64 and codes (n, bits // 8) uint8 atomically in format version 1."""
    ids = np.ascontiguousarray(ids, dtype="<i8")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n = ids.shape[0]
    ids_offset, codes_offset, _ = layout(bits, n)
    payload_crc = _crc(codes, _crc(ids))
    head = _HEAD.pack(MAGIC, VERSION, HEADER_SIZE, bits, bits // 8, n, ids_offset, codes_offset,
                      payload_crc)
    header = head + _CRC.pack(zlib.crc32(head)) + bytes(HEADER_SIZE - _HEAD.size - _CRC.size)
    with atomic_write(path, "wb") as fh:
        fh.write(header)
        _write(fh, ids)
        fh.write(bytes(codes_offset - ids_offset - 8 * n))
        _write(fh, codes)


def _write(fh, arr: np.ndarray) -> None:
    mv = _bytes(arr)
    for s in range(0, len(mv), _CHUNK):
        fh.write(mv[s:s + _CHUNK])


def read_header(path: str | os.PathLike) -> dict:
    """Parse and validate the header (and the file size); allocates nothing sized by it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_SIZE)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"no index file at {path}") from exc
    if len(raw) < 8 or raw[:8] != MAGIC:
        raise IndexFormatError(f"{path} is not a cmhash index file (bad magic bytes {raw[:8]!r})")
    if len(raw) < HEADER_SIZE:
        raise IndexFormatError(f"{path} is truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, header_size, bits, code_bytes, count, ids_offset, codes_offset, payload_crc = \
        _HEAD.unpack_from(raw)
    if version > VERSION:
        raise IndexFormatError(
            f"{path} uses index format version {version}, but this cmhash reads up to version "
            f"{VERSION}: upgrade cmhash (pip install -U cmhash) to load it"
        )
    if version < 1:
        raise IndexFormatError(f"{path} has an invalid format version {version}")
    (header_crc,) = _CRC.unpack_from(raw, _HEAD.size)
    if zlib.crc32(raw[:_HEAD.size]) != header_crc:
        raise IndexFormatError(f"{path} is corrupted: the header checksum does not match")
    if header_size != HEADER_SIZE or bits <= 0 or bits % 8 or code_bytes * 8 != bits:
        raise IndexFormatError(
            f"{path} has an inconsistent header (header_size={header_size}, bits={bits}, code_bytes={code_bytes})"
        )
    exp_ids, exp_codes, exp_size = layout(bits, count)  # Python ints: no overflow
    if (ids_offset, codes_offset) != (exp_ids, exp_codes):
        raise IndexFormatError(f"{path} has inconsistent offsets for {count} items")
    if size != exp_size:
        what = "truncated" if size < exp_size else "longer than its header says"
        raise IndexFormatError(
            f"{path} is {what}: the header declares {count} items of {bits} bits "
            f"({exp_size} bytes) but the file has {size} bytes"
        )
    return {"version": version, "bits": bits, "count": count, "ids_offset": ids_offset,
            "codes_offset": codes_offset, "payload_crc32": payload_crc, "size": size}


def read_index(path: str | os.PathLike, mmap: bool = False, verify: bool = True):
    """Return (header dict, ids int64 (n,), codes uint8 (n, bits // 8)).

    mmap=True maps the codes read-only instead of reading them. verify=False skips the payload CRC
    (reading every byte); the header and the size are always checked.
    """
    head = read_header(path)
    n, bits = head["count"], head["bits"]
    nbytes = bits // 8
    with open(path, "rb") as fh:
        fh.seek(head["ids_offset"])
        ids = np.fromfile(fh, dtype="<i8", count=n)
        if mmap and n:
            codes = np.memmap(path, dtype=np.uint8, mode="r", offset=head["codes_offset"], shape=(n, nbytes))
        else:
            fh.seek(head["codes_offset"])
            codes = np.fromfile(fh, dtype=np.uint8, count=n * nbytes).reshape(n, nbytes)
    if ids.shape[0] != n or codes.shape[0] != n:  # the file changed under us
        raise IndexFormatError(f"{path} is truncated: expected {n} items")
    if verify and _crc(codes, _crc(ids)) != head["payload_crc32"]:
        raise IndexFormatError(f"{path} is corrupted: the payload checksum (CRC-32) does not match")
    return head, ids.astype(np.int64, copy=False), codes
