"""`codes.npz`: encoded items on disk, between `cmhash encode` and `cmhash index build`.

An uncompressed numpy .npz (read with allow_pickle=False) holding:

    format      "cmhash-codes/1"
    codes       uint8 (n, bits // 8), FAISS bit layout (runtime.codes)
    ids         int64 (n,), unique and >= 0: the ids the index will return
    items_utf8, items_offsets
                uint8 blob and int64 (n + 1,) offsets: item i (what id i stands for: an image path,
                a text) is blob[offsets[i]:offsets[i + 1]] in UTF-8. Not a numpy str array: that
                pads every item to the longest one (4 bytes per character), so one long text among
                a million would cost gigabytes.
    bits        int; modality "image" | "text"; method; model (the export folder)
    truncated   bool (n,): texts cut to the tokenizer's max_length (all False for images)

Written atomically (runtime.io.atomic_write): a reader sees the old file or the new one.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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
              "model": np.array(data.model), "truncated": truncated}
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)
    return path


def load_codes(path: str | os.PathLike) -> CodesFile:
    """Read a file written by `save_codes`; anything else is a typed error naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"codes file {path} not found; make one with: cmhash encode images|texts ... --out {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"{path} is not a readable .npz file ({exc}); encode again with cmhash encode") from exc
    if str(arrays.get("format", "")) != CODES_FORMAT:
        raise DataFormatError(f"{path} is not a cmhash codes file (format {CODES_FORMAT!r}); "
                              "make one with: cmhash encode images|texts ...")
    missing = [k for k in ("codes", "ids", "items_utf8", "items_offsets", "bits", "modality") if k not in arrays]
    if missing:
        raise DataFormatError(f"{path} lacks {', '.join(missing)}; encode again with cmhash encode")
    bits = int(arrays["bits"])
    codes = check_codes(arrays["codes"], bits, what=f"the codes in {path}")
    ids = arrays["ids"]
    if ids.dtype != np.int64 or ids.shape != (codes.shape[0],):
        raise DataFormatError(f"{path}: ids {ids.dtype}{ids.shape} do not match {codes.shape[0]} codes; "
                              "encode again with cmhash encode")
    items = _decode_items(arrays["items_utf8"], arrays["items_offsets"], codes.shape[0], path)
    return CodesFile(codes, ids, items, bits, str(arrays["modality"]),
                     str(arrays.get("method", "")), str(arrays.get("model", "")), arrays.get("truncated"))


def _decode_items(blob: np.ndarray, offsets: np.ndarray, n: int, path: Path) -> list[str]:
    ok = (blob.dtype == np.uint8 and blob.ndim == 1 and offsets.dtype == np.int64 and offsets.shape == (n + 1,)
          and offsets[0] == 0 and offsets[-1] == blob.size and bool((np.diff(offsets) >= 0).all()))
    if not ok:
        raise DataFormatError(f"{path}: the item table is damaged; encode again with cmhash encode")
    raw = blob.tobytes()
    try:
        return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: an item is not UTF-8 ({exc}); encode again with cmhash encode") from exc


def texts_from_file(path: str | os.PathLike, lines: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Non-blank lines of a UTF-8 text file and their 0-based line numbers (the ids they get)."""
    path = Path(path)
    if lines is None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"text file {path} not found (one text per line)") from exc
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{path} is not UTF-8 text ({exc}); convert it, e.g. iconv -t utf-8") from exc
        except OSError as exc:
            raise DataFormatError(f"cannot read {path}: {exc}") from exc
    keep = [(i, line.strip()) for i, line in enumerate(lines) if line.strip()]
    return [t for _, t in keep], np.array([i for i, _ in keep], dtype=np.int64)
