"""Open an export folder (`cmhash export onnx`) without torch: its export.json, checked file access
and each encoder's ONNX metadata.

The folder's format, export.json's one reader and its names live in runtime/formats/export_manifest.py
(docs/formats/export-manifest.md). What the runtime trusts, in order:
- `export.json` says which files belong to the folder and their sha256; a file the encoder is about
  to use must match (a truncated download or a model swapped in by hand is refused);
- each ONNX file's own `metadata_props` say its bits, modality, input kind, preprocessing and
  tokenizer limits; they must agree with export.json, or the folder mixes two exports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from cmhash.errors import DataFormatError, ExportFolderError
from cmhash.runtime.formats.export_manifest import (ENCODER_FORMAT, MANIFEST_NAME, REEXPORT, EncoderEntry,
                                                    read_export_manifest, variant_command)
from cmhash.runtime.formats.manifest import digest, short


class ExportFolder:
    """An export folder: its manifest, its encoders and checked access to its files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_export_manifest(self.path)
        self._check_preprocess()
        self.bits: int = self.manifest.bits
        self.method: str = self.manifest.method or "?"

    def __repr__(self) -> str:
        return f"ExportFolder({str(self.path)!r}, method={self.method}, bits={self.bits}, modalities={self.modalities})"

    def _check_preprocess(self) -> None:
        """The image preprocessing's values, as `ImagePreprocess` will use them (the reader checks types)."""
        from cmhash.runtime.preprocess import ImagePreprocess

        for modality, entry in self.manifest.encoders.items():
            if entry.input_kind == "pixels":
                try:
                    ImagePreprocess.from_dict(entry.preprocess)
                except DataFormatError as exc:
                    raise ExportFolderError(f"{self.path / MANIFEST_NAME} is damaged: encoders.{modality}.preprocess: "
                                            f"{exc}; {REEXPORT}") from exc

    @property
    def modalities(self) -> list[str]:
        return self.manifest.modalities

    def encoder(self, modality: str) -> EncoderEntry:
        encoders = self.manifest.encoders
        if modality not in encoders:
            raise ExportFolderError(
                f"{self.path} has no {modality!r} encoder; it has {', '.join(encoders) or 'none'} "
                f"(a {modality} query needs an export with a {modality} tower)"
            )
        return encoders[modality]

    def model_path(self, modality: str, precision: str = "fp32", verify: bool = True) -> Path:
        entry = self.encoder(modality)
        if precision not in entry.files:
            raise ExportFolderError(
                f"{self.path} has no {precision} {modality} model (it has {', '.join(entry.files)}); "
                + (f"make one with: {variant_command(self.path, precision)}" if precision != "fp32" else REEXPORT)
            )
        return self.file(entry.files[precision], verify=verify)

    def file(self, name: str, verify: bool = True) -> Path:
        """The path of a file listed in export.json; with `verify`, its sha256 must match."""
        entry = self.manifest.files.get(name)
        path = self.path / name
        if entry is None:
            raise ExportFolderError(f"{short(name)} is not listed in {self.path / MANIFEST_NAME}; {REEXPORT}")
        try:
            present = path.is_file()
            matches = present and (not verify or digest(path) == entry)
        except OSError as exc:  # e.g. a name too long for the file system, no permission
            raise ExportFolderError(f"cannot read {short(str(path))} ({exc.strerror or exc}); "
                                    f"copy the folder again or {REEXPORT}") from exc
        if not present:
            raise ExportFolderError(f"{path} is missing (export.json lists it); copy the whole folder or {REEXPORT}")
        if not matches:
            raise ExportFolderError(
                f"{path} does not match its sha256 in export.json (modified, truncated or from another export); "
                f"copy the folder again or {REEXPORT}"
            )
        return path


def check_metadata(meta: Mapping[str, str], folder: ExportFolder, entry: EncoderEntry, source: str) -> dict[str, Any]:
    """Parse an encoder's ONNX metadata and check it against export.json; return the parsed fields."""
    def field(key: str) -> str:
        if key not in meta:
            raise ExportFolderError(f"{source} has no {key!r} metadata: not a cmhash encoder; {REEXPORT}")
        return meta[key]

    if field("cmhash_format") != ENCODER_FORMAT:
        raise ExportFolderError(f"{source} has encoder format {short(meta['cmhash_format'])}; this cmhash reads "
                                f"{ENCODER_FORMAT!r}; {REEXPORT}")
    try:
        parsed: dict[str, Any] = {"bits": int(field("bits")), "modality": field("modality"),
                                  "input_kind": field("input_kind")}
        if parsed["input_kind"] == "pixels":
            parsed["preprocess"] = json.loads(field("preprocess"))
        elif parsed["input_kind"] == "tokens":
            parsed["max_length"] = int(field("max_length"))
    except (ValueError, RecursionError) as exc:  # a bad number, bad JSON, JSON nested too deeply
        raise ExportFolderError(f"{source}: unreadable metadata ({str(exc)[:200]}); {REEXPORT}") from exc
    expected = {"bits": folder.bits, "modality": entry.modality, "input_kind": entry.input_kind}
    if "preprocess" in parsed:
        expected["preprocess"] = entry.preprocess
    if "max_length" in parsed:
        expected["max_length"] = entry.max_length
    expected = json.loads(json.dumps(expected))  # tuples -> lists, as both sides are JSON on disk
    wrong = [f"{k}: model says {short(parsed[k])}, export.json says {short(v)}"
             for k, v in expected.items() if parsed[k] != v]
    if wrong:
        raise ExportFolderError(f"{source} disagrees with export.json ({'; '.join(wrong)}): the folder mixes files "
                                f"of two exports; {REEXPORT}")
    return parsed
