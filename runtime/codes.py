"""Hash codes: the sign convention, FAISS-layout bit packing, and Hamming distances.

This module is the one definition of these facts; training, export and search import it.

- `sign(0) = +1`: a value of exactly zero becomes bit 1, everywhere.
- Packing follows FAISS: bit j of a code lives in byte j // 8, least significant bit first
  (`np.packbits(..., bitorder="little")`), so codes move to and from FAISS without conversion.
- Bit j is 1 when h_j >= 0 (code +1) and 0 when h_j < 0 (code -1).
"""

from __future__ import annotations

import numpy as np

from cmhash.errors import CodeFormatError, InvalidInputError


def check_bits(bits: int) -> int:
    """Return `bits` if it is a positive multiple of 8; packed codes need whole bytes."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
        raise CodeFormatError(
            f"the number of hash bits must be a positive multiple of 8 (16, 32, 64, 128), got {bits!r}"
        )
    return int(bits)


def _as_float_matrix(h: np.ndarray, what: str) -> np.ndarray:
    h = np.asarray(h)
    if h.ndim != 2:
        raise CodeFormatError(f"{what} must be a 2-D array (n, bits), got shape {h.shape}")
    if not np.issubdtype(h.dtype, np.floating) and not np.issubdtype(h.dtype, np.integer):
        raise CodeFormatError(f"{what} must hold real numbers, got dtype {h.dtype}")
    if np.issubdtype(h.dtype, np.floating) and not np.isfinite(h).all():
        bad = int((~np.isfinite(h)).sum())
        raise InvalidInputError(f"{what} holds {bad} NaN or infinite value(s); codes need finite inputs")
    return h


def sign(h: np.ndarray) -> np.ndarray:
    """±1 codes as int8, with sign(0) = +1."""
    h = _as_float_matrix(h, "hash values")
    return np.where(h >= 0, 1, -1).astype(np.int8)


def pack(h: np.ndarray) -> np.ndarray:
    """Pack continuous hash values (or ±1 codes) into uint8 codes of shape (n, bits // 8)."""
    h = _as_float_matrix(h, "hash values")
    check_bits(h.shape[1])
    return np.packbits(h >= 0, axis=1, bitorder="little")


def unpack(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Unpack uint8 codes into ±1 int8 codes of shape (n, bits)."""
    codes = check_codes(codes, bits)
    bits01 = np.unpackbits(codes, axis=1, bitorder="little")
    return (bits01.astype(np.int8) * 2 - 1).astype(np.int8)


def check_codes(codes: np.ndarray, bits: int | None = None, what: str = "codes") -> np.ndarray:
    """Validate packed codes: 2-D uint8, and `bits // 8` bytes wide when `bits` is given."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise CodeFormatError(
            f"{what} must be packed uint8 (use cmhash.runtime.codes.pack on float hash values), "
            f"got dtype {codes.dtype}"
        )
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise CodeFormatError(f"{what} must have shape (n, bits // 8), got {codes.shape}")
    if bits is not None and codes.shape[1] * 8 != check_bits(bits):
        raise CodeFormatError(
            f"{what} are {codes.shape[1] * 8}-bit ({codes.shape[1]} bytes) but {bits}-bit codes were expected"
        )
    return codes


def _words(codes: np.ndarray) -> np.ndarray:
    """View codes as the widest unsigned words that divide the row, so popcount does less work."""
    for dtype in (np.uint64, np.uint32, np.uint16):
        if codes.shape[1] % np.dtype(dtype).itemsize == 0:
            return np.ascontiguousarray(codes).view(dtype)
    return codes


def hamming_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Full Hamming distance matrix (n_queries, n_database) as uint16.

    Memory is n_queries × n_database × bytes-per-code during the XOR; callers chunk the queries.
    """
    queries = check_codes(queries, what="query codes")
    database = check_codes(database, bits=queries.shape[1] * 8, what="database codes")
    q, db = _words(queries), _words(database)
    xor = q[:, None, :] ^ db[None, :, :]
    return np.bitwise_count(xor).sum(axis=2, dtype=np.uint16)
