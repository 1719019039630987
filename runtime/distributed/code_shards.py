"""A codes folder: what `cmhash encode ... --ray` writes, as Parquet parts plus a manifest.

    OUT/codes.json          {"format": "cmhash-code-shards/1", "bits", "modality", "method", "model",
                             "count", "parts": ["run-<uuid>/<file>.parquet", ...]}
    OUT/run-<uuid>/*.parquet  columns: id int64, item string, code fixed_size_binary(bits // 8),
                             truncated bool, no_known_words bool

Why Parquet: Ray Data's workers write their blocks in parallel, and any Arrow tool reads them.
The codes are fixed-size binary values in the FAISS bit layout (runtime.codes), byte for byte.
Why a manifest: Ray writes part files one by one; the manifest, replaced atomically after every
part is written, says which parts form the result, so a crashed or concurrent run is never read
half-written. A new run writes a new run-<uuid> folder and removes the old one after the switch.

Reading (`read_code_shards`) returns the rows in id order: ids are assigned in input order
(0..n-1 for images, line numbers for texts), so that is the order single-node `cmhash encode`
writes, and an index built from either gets the same insertion (tie) order. Reading needs pyarrow
(installed with the [ray] extra), not Ray.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmhash.errors import DataFormatError, DataNotFoundError, require
from cmhash.runtime.codes import check_bits
from cmhash.runtime.formats.codes_file import CodesFile
from cmhash.runtime.io import atomic_write, read_json

FORMAT = "cmhash-code-shards/1"
MANIFEST = "codes.json"


@dataclass
class CodeShardsInfo:
    folder: Path
    bits: int
    modality: str
    method: str
    model: str
    count: int
    parts: list[str]
    model_id: str = ""  # the encoding export's identity (runtime/formats/model_id.py)


def is_code_shards(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def pyarrow_module(feature: str) -> Any:
    return require("pyarrow", "ray", feature)


def codes_to_arrow(codes: np.ndarray) -> Any:
    """(n, B) uint8 codes as an Arrow fixed_size_binary(B) array, without copying per row."""
    pa = pyarrow_module("writing codes to Parquet")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, width = codes.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(codes.tobytes())])


def codes_from_arrow(column: Any, width: int) -> np.ndarray:
    """The inverse of `codes_to_arrow` for a (chunked) fixed_size_binary column."""
    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if arr.null_count:
        raise DataFormatError("a codes column holds nulls; encode again")
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8) if len(arr) else np.empty(0, np.uint8)
    return raw[arr.offset * width:(arr.offset + len(arr)) * width].reshape(len(arr), width).copy()


def write_code_shards_manifest(info: CodeShardsInfo) -> Path:
    """Point the folder at `info.parts` (atomically), then remove the run folders no longer listed."""
    path = info.folder / MANIFEST
    old = read_info(info.folder).parts if is_code_shards(info.folder) else []
    body = {"format": FORMAT, "bits": info.bits, "modality": info.modality, "method": info.method,
            "model": info.model, "model_id": info.model_id, "count": info.count, "parts": info.parts}
    with atomic_write(path, "w") as fh:
        json.dump(body, fh, indent=1)
    keep = {Path(p).parts[0] for p in info.parts}
    for run in {Path(p).parts[0] for p in old} - keep:
        shutil.rmtree(info.folder / run, ignore_errors=True)
    return path


def read_info(folder: str | os.PathLike) -> CodeShardsInfo:
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        raw = read_json(path)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{folder} is not a codes folder (no {MANIFEST}); make one with: "
                                f"cmhash encode images|texts ... --out {folder} --ray") from exc
    except ValueError as exc:
        raise DataFormatError(f"{path} is not valid JSON ({exc}); encode again with --ray") from exc
    try:
        if raw["format"] != FORMAT:
            raise ValueError(f"format {raw['format']!r} is not {FORMAT!r}")
        parts = [str(p) for p in raw["parts"]]
        if any(Path(p).is_absolute() or ".." in Path(p).parts for p in parts):
            raise ValueError("a part path leaves the folder")
        return CodeShardsInfo(folder, check_bits(int(raw["bits"])), str(raw["modality"]), str(raw.get("method", "")),
                              str(raw.get("model", "")), int(raw["count"]), parts, str(raw.get("model_id", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{path} is not a cmhash codes manifest ({exc}); encode again with --ray") from exc


def read_table(info: CodeShardsInfo, columns: list[str] | None = None, filters: Any = None) -> Any:
    """The parts as one Arrow table (not yet in id order)."""
    pa = pyarrow_module("reading a codes folder")
    import pyarrow.parquet as pq

    missing = [p for p in info.parts if not (info.folder / p).is_file()]
    if missing:
        raise DataFormatError(f"{info.folder}: parts listed in {MANIFEST} are missing ({missing[:3]}); encode again")
    tables = [pq.read_table(info.folder / p, columns=columns, filters=filters) for p in info.parts]
    return pa.concat_tables(tables) if tables else None


def read_code_shards(folder: str | os.PathLike) -> CodesFile:
    """Every row of a codes folder, in id order, as a CodesFile (what `load_codes` gives for a .npz)."""
    info = read_info(folder)
    table = read_table(info, columns=["id", "item", "code", "truncated"])
    if table is None or table.num_rows != info.count:
        got = 0 if table is None else table.num_rows
        raise DataFormatError(f"{info.folder} holds {got} rows but {MANIFEST} says {info.count}; encode again")
    ids = table.column("id").to_numpy().astype(np.int64, copy=False)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if ids.size > 1 and bool((ids[1:] == ids[:-1]).any()):
        raise DataFormatError(f"{info.folder} repeats ids; encode again")
    codes = codes_from_arrow(table.column("code"), info.bits // 8)[order]
    items = table.column("item").to_pylist()
    truncated = table.column("truncated").to_numpy(zero_copy_only=False).astype(bool)[order]
    return CodesFile(codes, ids, [items[i] for i in order], info.bits, info.modality, info.method, info.model,
                     truncated, model_id=info.model_id)
