"""`index.json`: the manifest of a saved sharded index folder (spec: docs/formats/sharded-index.md).

The one writer is `write_shard_manifest`, the one reader `read_shard_manifest`; each shard is an
index file (index_file.py).

    {"format": "cmhash-sharded-index/1", "bits": 64, "generation": 3,
     "next_seq": 1200, "next_id": 1000,
     "shards": [{"index": "shard-0000.g3.cmhx", "seqs": "shard-0000.g3.seq.npy",
                 "count": 600, "seq_crc32": 123456789}, ...]}

Why a generation number in the file names: a save writes every shard's new files next to the old
ones, then replaces the manifest atomically, then deletes the old files. A crash at any moment
leaves a manifest whose files all exist and belong together; a reader never mixes two saves.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cmhash.errors import DataNotFoundError, IndexFormatError
from cmhash.runtime.io import atomic_write, read_json

FORMAT = "cmhash-sharded-index/1"
MANIFEST = "index.json"


@dataclass
class ShardEntry:
    index: str
    seqs: str
    count: int
    seq_crc32: int


@dataclass
class ShardManifest:
    bits: int
    generation: int
    next_seq: int
    next_id: int
    shards: list[ShardEntry] = field(default_factory=list)

    @staticmethod
    def file_names(number: int, generation: int) -> tuple[str, str]:
        stem = f"shard-{number:04d}.g{generation}"
        return f"{stem}.cmhx", f"{stem}.seq.npy"

    def files(self) -> set[str]:
        return {name for s in self.shards for name in (s.index, s.seqs)}


def is_sharded_index(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def write_shard_manifest(folder: str | os.PathLike, manifest: ShardManifest) -> Path:
    path = Path(folder) / MANIFEST
    with atomic_write(path, "w") as fh:
        json.dump({"format": FORMAT, **asdict(manifest)}, fh, indent=1)
    return path


def _int(raw: dict, key: str, path: Path) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IndexFormatError(f"{path}: {key!r} must be an integer >= 0, got {value!r}")
    return value


def _name(raw: dict, key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value.startswith("."):
        raise IndexFormatError(f"{path}: shard file name {value!r} must be a plain file name in the folder")
    return value


def read_shard_manifest(folder: str | os.PathLike) -> ShardManifest:
    """Parse and check `folder/index.json`; every problem is an IndexFormatError naming the file."""
    path = Path(folder) / MANIFEST
    try:
        raw = read_json(path)
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{folder} is not a sharded index folder (no {MANIFEST}); build one with: "
                                "cmhash index build CODES --out FOLDER --shards N") from exc
    except ValueError as exc:
        raise IndexFormatError(f"{path} is not valid JSON ({exc}); save the index again") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise IndexFormatError(f"{path} has format {got!r}, not {FORMAT!r}: upgrade cmhash or save the index again")
    shards = raw.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, dict) for s in shards):
        raise IndexFormatError(f"{path}: 'shards' must be a non-empty list of shard entries")
    bits = _int(raw, "bits", path)
    if bits == 0 or bits % 8:
        raise IndexFormatError(f"{path}: bits must be a positive multiple of 8, got {bits}")
    entries = [ShardEntry(_name(s, "index", path), _name(s, "seqs", path), _int(s, "count", path),
                          _int(s, "seq_crc32", path)) for s in shards]
    return ShardManifest(bits, _int(raw, "generation", path), _int(raw, "next_seq", path),
                         _int(raw, "next_id", path), entries)
