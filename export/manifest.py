"""`export.json`: what makes an export folder self-describing.

A folder holds `image.onnx` / `text.onnx` (and `*.fp16.onnx`), the text tower's `tokenizer.json` or
BoW `vocabulary.json`, `export.json` and `validation.json`. `export.json` records the exporter and
library versions, the sha256 of every model and tokenizer file, the checkpoint's sha256s, the part of
the checkpoint config a runtime needs (bits, modalities, preprocessing, tokenizer max_length,
backbone names, input and output names) and the validation summary. It is plain JSON: a runtime reads
it with `json.load`, without torch or cmhash.zoo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cmhash.errors import ExportError
from cmhash.runtime.export_folder import FORMAT, MANIFEST_NAME  # defined once, where the runtime reads them
from cmhash.runtime.io import atomic_write, read_json, sha256_file
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
    """The folder's `export.json`, checked for the fields (and their types) every reader relies on."""
    path = Path(folder) / MANIFEST_NAME
    again = "export the checkpoint again (cmhash export onnx CHECKPOINT --out DIR)"
    try:
        data = read_json(path)
    except FileNotFoundError as exc:
        raise ExportError(f"{folder} has no {MANIFEST_NAME}: not a cmhash export folder "
                          "(create one with: cmhash export onnx CHECKPOINT --out DIR)") from exc
    except (ValueError, OSError) as exc:
        raise ExportError(f"{path} is not valid JSON ({exc}); {again}") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object, got {type(data).__name__}; {again}")
    missing = [k for k in ("format", "bits", "modalities", "encoders", "files") if k not in data]
    if missing:
        raise ExportError(f"{path} lacks {', '.join(missing)}; {again}")
    if data["format"] != FORMAT:
        raise ExportError(f"{path} has format {data['format']!r}; this cmhash reads {FORMAT!r}")
    problems = _field_problems(data)
    if problems:
        raise ExportError(f"{path} is damaged: {'; '.join(problems)}; {again}")
    return data


def _field_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong with the types of export.json's required fields (empty when nothing)."""
    problems = []
    bits = data["bits"]
    if type(bits) is not int or bits <= 0 or bits % 8:
        problems.append(f"bits must be a positive multiple of 8, got {bits!r}")
    modalities, encoders = data["modalities"], data["encoders"]
    if (not isinstance(modalities, list) or not modalities
            or any(m not in ("image", "text") for m in modalities) or len(set(modalities)) != len(modalities)):
        problems.append(f"modalities must list 'image' and/or 'text' once each, got {str(modalities)[:80]}")
    elif not isinstance(encoders, dict) or any(not isinstance(encoders.get(m), dict) for m in modalities):
        problems.append(f"encoders must hold an object per modality ({', '.join(modalities)})")
    files = data["files"]
    if not isinstance(files, dict):
        problems.append("files must map file names to {sha256, bytes}")
    else:
        for name, entry in files.items():
            if not _inside(name):
                problems.append(f"files lists {name!r}, which is not a file name inside the folder")
            elif (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                  or type(entry.get("bytes")) is not int):
                problems.append(f"the entry of {name!r} in files must be {{\"sha256\": HEX, \"bytes\": N}}")
    return problems


def _inside(name: str) -> bool:
    """A relative path that stays inside the export folder (no absolute path, no `..`, no NUL)."""
    return bool(name) and "\x00" not in name and not Path(name).is_absolute() and ".." not in Path(name).parts


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
        if not _inside(name) or not isinstance(entry, dict):
            problems.append(f"{name!r} in {MANIFEST_NAME} is not a file entry inside the folder")
            continue
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"{name} is listed in {MANIFEST_NAME} but missing")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{name} does not match its sha256 in {MANIFEST_NAME} (modified or truncated)")
    return problems
