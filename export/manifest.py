"""`export.json`: what makes an export folder self-describing.

A folder holds `image.onnx` / `text.onnx` (and `*.fp16.onnx`), the text tower's `tokenizer.json` or
BoW `vocabulary.json`, `export.json` and `validation.json`. `export.json` records the exporter and
library versions, the sha256 of every model and tokenizer file, the checkpoint's sha256s, the part of
the checkpoint config a runtime needs (bits, modalities, preprocessing, tokenizer max_length,
backbone names, input and output names) and the validation summary. It is plain JSON: a runtime reads
it with `json.load`, without torch or cmhash.zoo; cmhash's own reader is `cmhash.runtime.export_folder`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cmhash.runtime.export_folder import FORMAT, MANIFEST_NAME, inside  # noqa: F401 - defined once, in the runtime
from cmhash.runtime.export_folder import read_manifest as runtime_read_manifest
from cmhash.runtime.io import atomic_write, sha256_file

REPORT_NAME = "validation.json"
TOKENIZER_NAME = "tokenizer.json"
VOCABULARY_NAME = "vocabulary.json"


def model_file(modality: str, precision: str = "fp32") -> str:
    return f"{modality}.onnx" if precision == "fp32" else f"{modality}.{precision}.onnx"


def file_entry(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Pretty JSON, written atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return Path(path)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's `export.json`, checked for the fields (and their types) every reader relies on.

    The runtime's reader (`cmhash.runtime.export_folder.read_manifest`): one implementation. It raises
    `ExportFolderError`, a subclass of `ExportError`.
    """
    return runtime_read_manifest(folder)


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    return write_json(Path(folder) / MANIFEST_NAME, manifest)


def refresh_files(folder: str | os.PathLike, manifest: dict[str, Any], names: list[str]) -> None:
    """Record (or update) the sha256 and size of `names` in `manifest["files"]`."""
    files = manifest.setdefault("files", {})
    for name in names:
        files[name] = file_entry(Path(folder) / name)


def check_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """One message per file that is missing or whose sha256 differs from `export.json`."""
    problems = []
    for name, entry in manifest.get("files", {}).items():
        if not inside(name) or not isinstance(entry, dict):
            problems.append(f"{name!r} in {MANIFEST_NAME} is not a file entry inside the folder")
            continue
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"{name} is listed in {MANIFEST_NAME} but missing")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{name} does not match its sha256 in {MANIFEST_NAME} (modified or truncated)")
    return problems
