"""`codes.npz`: encoded items on disk, between `cmhash encode` and `cmhash index build` (spec:
docs/formats/codes-file.md). The one writer is `save_codes`, the one reader `load_codes`.

An uncompressed numpy .npz (read without pickles, each array's size checked against its zip entry
before numpy allocates for it) holding:

    format      "cmhash-codes/1"
    codes       uint8 (n, bits // 8), FAISS bit layout (runtime.codes)
    ids         int64 (n,), unique and >= 0: the ids the index will return
    items_utf8, items_offsets
                uint8 blob and int64 (n + 1,) offsets: item i (what id i stands for: an image path,
                a text) is blob[offsets[i]:offsets[i + 1]] in UTF-8. Not a numpy str array: that
                pads every item to the longest one (4 bytes per character), so one long text among
                a million would cost gigabytes.
    bits        int; modality "image" | "text"; method; model (the export folder)
    model_id    optional: the identity of the encoding export (runtime/formats/model_id.py); "" or
                absent for codes from outside cmhash. Readers that predate it ignore it.
    truncated   bool (n,): texts cut to the tokenizer's max_length (all False for images)

Written atomically (runtime.io.atomic_write): a reader sees the old file or the new one.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmhash.errors import CodeFormatError, DataFormatError, DataNotFoundError, InvalidInputError
from cmhash.runtime.codes import check_bits, check_codes
from cmhash.runtime.io import atomic_write

CODES_FORMAT = "cmhash-codes/1"


@dataclass
class CodesFile:
    codes: np.ndarray
    ids: np.ndarray
    items: list[str]
    bits: int
    modality: str
    method: str = ""
    model: str = ""
    truncated: np.ndarray | None = None
    no_known_words: np.ndarray | None = None  # BoW texts with no vocabulary word (reported, not saved)
    model_id: str = ""
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable inputs left out (not saved)


def save_codes(path: str | os.PathLike, data: CodesFile) -> Path:
    """Check `data` and write it to `path` atomically."""
    bits = check_bits(data.bits)
    codes = check_codes(data.codes, bits)
    n = codes.shape[0]
    ids = np.asarray(data.ids, dtype=np.int64)
    if ids.shape != (n,) or len(data.items) != n:
        raise CodeFormatError(f"{n} codes need {n} ids and items, got {ids.shape[0]} ids and {len(data.items)} items")
    truncated = np.zeros(n, bool) if data.truncated is None else np.asarray(data.truncated, bool)
    encoded = [str(item).encode("utf-8") for item in data.items]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"--out {path} is a folder; give a file name such as {path / 'codes.npz'}")
    arrays = {"format": np.array(CODES_FORMAT), "codes": codes, "ids": ids, "items_utf8": blob, "items_offsets": offsets,
              "bits": np.array(bits), "modality": np.array(data.modality), "method": np.array(data.method),
              "model": np.array(data.model), "model_id": np.array(data.model_id), "truncated": truncated}
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)
    return path


def load_codes(path: str | os.PathLike) -> CodesFile:
    """Read a file written by `save_codes`; anything else is a typed error naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"codes file {path} not found; make one with: cmhash encode images|texts ... --out {path}")
    try:
        arrays = _read_arrays(path)
    except DataFormatError:
        raise
    except _READ_ERRORS as exc:
        raise DataFormatError(f"{path} is not a readable .npz file ({type(exc).__name__}: {str(exc)[:200]}); "
                              f"{_AGAIN}") from exc
    fmt = arrays.get("format")
    if fmt is None or fmt.ndim != 0 or fmt.dtype.kind != "U" or str(fmt) != CODES_FORMAT:
        raise DataFormatError(f"{path} is not a cmhash codes file (format {CODES_FORMAT!r}); "
                              "make one with: cmhash encode images|texts ...")
    missing = [k for k in ("codes", "ids", "items_utf8", "items_offsets", "bits", "modality") if k not in arrays]
    if missing:
        raise DataFormatError(f"{path} lacks {', '.join(missing)}; {_AGAIN}")
    bits = _bits(arrays["bits"], path)
    codes = check_codes(arrays["codes"], bits, what=f"the codes in {path}")
    n = codes.shape[0]
    ids = arrays["ids"]
    if ids.dtype != np.int64 or ids.shape != (n,):
        raise DataFormatError(f"{path}: ids {ids.dtype}{ids.shape} do not match {n} codes; {_AGAIN}")
    truncated = arrays.get("truncated")
    if truncated is not None and (truncated.dtype != np.bool_ or truncated.shape != (n,)):
        raise DataFormatError(f"{path}: truncated {truncated.dtype}{truncated.shape} must be bool ({n},); {_AGAIN}")
    items = _decode_items(arrays["items_utf8"], arrays["items_offsets"], n, path)
    return CodesFile(codes, ids, items, bits, _text(arrays, "modality", path), _text(arrays, "method", path),
                     _text(arrays, "model", path), truncated, model_id=_text(arrays, "model_id", path))


_AGAIN = "encode again with cmhash encode"
KEYS = ("format", "codes", "ids", "items_utf8", "items_offsets", "bits", "modality", "method", "model", "model_id",
        "truncated")
# What reading a damaged zip / .npy raises: zipfile's BadZipFile, NotImplementedError (an unknown compression
# method) and RuntimeError (an encrypted entry), zlib.error, struct.error, EOFError, OSError, and numpy's
# ValueError (bad header, pickled objects refused, a short read); OverflowError from forged sizes.
_READ_ERRORS = (zipfile.BadZipFile, RuntimeError, zlib.error, struct.error, EOFError, OSError, ValueError,
                OverflowError)
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this: a larger claimed size is forged


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The codes file's arrays (without pickles), each size checked before numpy allocates for it."""
    arrays = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if key in KEYS:
                arrays[key] = _read_member(zf, info, path)
    return arrays


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One .npy entry. numpy allocates the whole array from the header's shape before reading the data, so
    the shape must fit in the entry, and the entry's size in the bytes on disk."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataFormatError(f"{path}: the entry {info.filename!r} uses zip compression method {info.compress_type}, "
                              f"which cmhash does not read (codes files are uncompressed .npz); {_AGAIN}")
    with zf.open(info) as fh:
        shape, dtype = _npy_header(fh)
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
    claimed = math.prod(shape) * dtype.itemsize
    if (info.compress_size > path.stat().st_size or info.file_size > info.compress_size * ratio
            or claimed > info.file_size):
        raise DataFormatError(f"{path}: the entry {info.filename!r} claims a {dtype}{shape} array ({claimed:,} bytes) "
                              f"in {info.file_size:,} bytes, {info.compress_size:,} stored: forged sizes; {_AGAIN}")
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]} (numpy.save writes 1.0 or 2.0 "
                         "for these arrays)")
    return shape, dtype


def _bits(value: np.ndarray, path: Path) -> int:
    if value.ndim != 0 or value.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: bits must be one integer, got {value.dtype}{value.shape}; {_AGAIN}")
    try:
        return check_bits(int(value))
    except CodeFormatError as exc:
        raise DataFormatError(f"{path}: {exc}; {_AGAIN}") from exc


def _text(arrays: dict[str, np.ndarray], key: str, path: Path) -> str:
    """A string field; the optional ones (method, model, model_id) default to ""."""
    value = arrays.get(key, np.array(""))
    if value.ndim != 0 or value.dtype.kind != "U":
        raise DataFormatError(f"{path}: {key} must be one string, got {value.dtype}{value.shape}; {_AGAIN}")
    return str(value)


def _decode_items(blob: np.ndarray, offsets: np.ndarray, n: int, path: Path) -> list[str]:
    ok = (blob.dtype == np.uint8 and blob.ndim == 1 and offsets.dtype == np.int64 and offsets.shape == (n + 1,)
          and offsets[0] == 0 and offsets[-1] == blob.size and bool((np.diff(offsets) >= 0).all()))
    if not ok:
        raise DataFormatError(f"{path}: the item table is damaged; {_AGAIN}")
    raw = blob.tobytes()
    try:
        return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: an item is not UTF-8 ({exc}); {_AGAIN}") from exc

