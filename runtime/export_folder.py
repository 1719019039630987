"""Read an export folder (`cmhash export onnx`) without torch: export.json, file checks, ONNX metadata.

The folder format is written by `cmhash.export` (export/manifest.py documents it). The runtime may not
import that package, so the few names it relies on are repeated here; tests/cli/test_encode_e2e.py
checks that they agree with the exporter's.

What the runtime trusts, in order:
- `export.json` says which files belong to the folder and their sha256; a file the encoder is about
  to use must match (a truncated download or a model swapped in by hand is refused);
- each ONNX file's own `metadata_props` say its bits, modality, input kind, preprocessing and
  tokenizer limits; they must agree with export.json, or the folder mixes two exports.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cmhash.errors import ExportFolderError
from cmhash.runtime.io import sha256_file

FORMAT = "cmhash-export/1"
MANIFEST_NAME = "export.json"
ENCODER_FORMAT = "cmhash-encoder/1"
INPUT_KINDS = ("pixels", "tokens", "bow")
_REEXPORT = "export the checkpoint again (cmhash export onnx CHECKPOINT --out DIR)"


@dataclass(frozen=True)
class EncoderEntry:
    """One modality's encoder as export.json describes it."""

    modality: str
    input_kind: str
    inputs: tuple[str, ...]
    files: dict[str, str]  # precision -> ONNX file name
    raw: dict[str, Any]

    @property
    def asset(self) -> str | None:
        """The tokenizer.json (token towers) or vocabulary.json (BoW towers) file name."""
        return self.raw.get("tokenizer") or self.raw.get("vocabulary")


class ExportFolder:
    """An export folder: its manifest, its encoders and checked access to its files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        self.bits = int(self.manifest["bits"])
        self.method = str(self.manifest.get("method", "?"))

    def __repr__(self) -> str:
        return f"ExportFolder({str(self.path)!r}, method={self.method}, bits={self.bits}, modalities={self.modalities})"

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["encoders"])

    def encoder(self, modality: str) -> EncoderEntry:
        encoders = self.manifest["encoders"]
        if modality not in encoders:
            raise ExportFolderError(
                f"{self.path} has no {modality!r} encoder; it has {', '.join(encoders) or 'none'} "
                f"(a {modality} query needs an export with a {modality} tower)"
            )
        raw = encoders[modality]
        if not isinstance(raw, dict) or raw.get("input_kind") not in INPUT_KINDS or "files" not in raw:
            raise ExportFolderError(f"{self.path / MANIFEST_NAME}: the {modality} entry is malformed; {_REEXPORT}")
        return EncoderEntry(modality, raw["input_kind"], tuple(raw.get("inputs", ())), dict(raw["files"]), raw)

    def model_path(self, modality: str, precision: str = "fp32", verify: bool = True) -> Path:
        entry = self.encoder(modality)
        if precision not in entry.files:
            raise ExportFolderError(
                f"{self.path} has no {precision} {modality} model (it has {', '.join(entry.files)}); "
                + ("make one with: cmhash export onnx CHECKPOINT --out DIR --fp16" if precision == "fp16" else _REEXPORT)
            )
        return self.file(entry.files[precision], verify=verify)

    def file(self, name: str, verify: bool = True) -> Path:
        """The path of a file listed in export.json; with `verify`, its sha256 must match."""
        entry = self.manifest["files"].get(name)
        path = self.path / name
        if entry is None:
            raise ExportFolderError(f"{name} is not listed in {self.path / MANIFEST_NAME}; {_REEXPORT}")
        if not path.is_file():
            raise ExportFolderError(f"{path} is missing (export.json lists it); copy the whole folder or {_REEXPORT}")
        if verify and sha256_file(path) != entry.get("sha256"):
            raise ExportFolderError(
                f"{path} does not match its sha256 in export.json (modified, truncated or from another export); "
                f"copy the folder again or {_REEXPORT}"
            )
        return path


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ExportFolderError(f"export folder {folder} does not exist; create one with: "
                                "cmhash export onnx CHECKPOINT --out DIR")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ExportFolderError(f"{folder} has no {MANIFEST_NAME}, so it is not a cmhash export folder; "
                                "create one with: cmhash export onnx CHECKPOINT --out DIR") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportFolderError(f"{path} is not valid JSON ({exc}); {_REEXPORT}") from exc
    if not isinstance(data, dict):
        raise ExportFolderError(f"{path} is not a JSON object; {_REEXPORT}")
    missing = [k for k in ("format", "bits", "encoders", "files") if k not in data]
    if missing:
        raise ExportFolderError(f"{path} lacks {', '.join(missing)}; {_REEXPORT}")
    if data["format"] != FORMAT:
        raise ExportFolderError(f"{path} has format {data['format']!r}; this cmhash reads {FORMAT!r} "
                                "(upgrade cmhash, or export with this version)")
    return data


def check_metadata(meta: Mapping[str, str], folder: ExportFolder, entry: EncoderEntry, source: str) -> dict[str, Any]:
    """Parse an encoder's ONNX metadata and check it against export.json; return the parsed fields."""
    def field(key: str) -> str:
        if key not in meta:
            raise ExportFolderError(f"{source} has no {key!r} metadata: not a cmhash encoder; {_REEXPORT}")
        return meta[key]

    if field("cmhash_format") != ENCODER_FORMAT:
        raise ExportFolderError(f"{source} has encoder format {meta['cmhash_format']!r}; this cmhash reads "
                                f"{ENCODER_FORMAT!r}")
    try:
        parsed: dict[str, Any] = {"bits": int(field("bits")), "modality": field("modality"),
                                  "input_kind": field("input_kind")}
        if parsed["input_kind"] == "pixels":
            parsed["preprocess"] = json.loads(field("preprocess"))
        elif parsed["input_kind"] == "tokens":
            parsed["max_length"] = int(field("max_length"))
    except ValueError as exc:
        raise ExportFolderError(f"{source}: unreadable metadata ({exc}); {_REEXPORT}") from exc
    expected = {"bits": folder.bits, "modality": entry.modality, "input_kind": entry.input_kind}
    if "preprocess" in parsed:
        expected["preprocess"] = entry.raw.get("preprocess")
    if "max_length" in parsed:
        expected["max_length"] = entry.raw.get("max_length")
    expected = json.loads(json.dumps(expected))  # tuples -> lists, as both sides are JSON on disk
    wrong = [f"{k}: model says {parsed[k]!r}, export.json says {v!r}" for k, v in expected.items() if parsed[k] != v]
    if wrong:
        raise ExportFolderError(f"{source} disagrees with export.json ({'; '.join(wrong)}): the folder mixes files "
                                f"of two exports; {_REEXPORT}")
    return parsed
