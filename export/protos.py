"""ONNX files on disk: metadata_props edits and atomic writes (the exporter and the fp16 converter)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from cmhash.runtime.io import atomic_write


def set_metadata(proto: Any, meta: Mapping[str, str]) -> None:
    """Replace the keys of `meta` in a ModelProto's metadata_props, keeping the others."""
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def save_proto(proto: Any, path: str | Path) -> Path:
    """Serialize a (< 2 GB) ModelProto into one file, atomically."""
    with atomic_write(path) as fh:
        fh.write(proto.SerializeToString())
    return Path(path)


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    with open(src, "rb") as fin, atomic_write(dst) as fout:
        shutil.copyfileobj(fin, fout)
    return Path(dst)
