"""`export.json`: what makes an export folder self-describing (spec: docs/formats/export-manifest.md).

An export folder holds `image.onnx` / `text.onnx` (and `*.fp16.onnx`), the text tower's
`tokenizer.json` or BoW `vocabulary.json`, `validation.json`, TensorRT engines with their sidecars,
and `export.json`: the exporter and library versions, the part of the checkpoint config a runtime
needs (bits, modalities, per-encoder input kind, preprocessing, tokenizer max_length, input and
output names), the source checkpoint's sha256s, and a `files` section in the file-integrity scheme of
runtime/formats/manifest.py. It is plain JSON: a runtime reads it with `json.load`.

One writer API: `write_export_manifest` writes the whole object (the exporter, once), and the later
stages add typed sections with `add_sections` (`Validation`, `Variant`, `VariantCheck`, `Engine`).
One reader: `read_export_manifest`, which checks every field's type, upgrades version 1 (cmhash
0.1.0: file entries `{"sha256", "bytes"}`) in memory and returns a typed `ExportManifest`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cmhash.errors import ExportFolderError
from cmhash.runtime.formats import manifest as integrity
from cmhash.runtime.formats.manifest import short
from cmhash.runtime.formats.model_id import model_id
from cmhash.runtime.io import atomic_write, read_json

FORMAT = "cmhash-export/2"
V1 = "cmhash-export/1"
MANIFEST_NAME = "export.json"
ENCODER_FORMAT = "cmhash-encoder/1"  # the ONNX metadata_props of each encoder (runtime/export_folder.py)
TOKENIZER_NAME = "tokenizer.json"
VOCABULARY_NAME = "vocabulary.json"
CHECKPOINT_WEIGHTS = "model.safetensors"  # the source file whose sha256 identifies the model
REPORT_NAME = "validation.json"
INPUT_KINDS = ("pixels", "tokens", "bow")
MODALITIES = ("image", "text")
REQUIRED = ("format", "bits", "modalities", "encoders", "files")
ASSET_KEY = {"tokens": "tokenizer", "bow": "vocabulary"}  # the text asset each input kind needs
REEXPORT = "export the checkpoint again (cmhash export onnx CHECKPOINT --out DIR)"
CREATE = "create one with: cmhash export onnx CHECKPOINT --out DIR"


def model_file(modality: str, precision: str = "fp32") -> str:
    """The ONNX file name of one encoder at one precision."""
    return f"{modality}.onnx" if precision == "fp32" else f"{modality}.{precision}.onnx"


def variant_command(folder: str | os.PathLike, precision: str) -> str:
    """The command that adds a reduced-precision variant to an export folder."""
    if precision == "int8":
        return f"cmhash export int8 {folder}"
    return "cmhash export onnx CHECKPOINT --out DIR --fp16"


def report_name(precision: str) -> str:
    """The validation report of a variant: validation.fp16.json, validation.int8.json."""
    return f"validation.{precision}.json"


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class Validation:
    """The fp32 validation summary (`export/validate.py`); the full report is validation.json."""

    passed: bool
    atol: float | None
    data: Mapping[str, Any]
    encoders: Mapping[str, Any]
    failures: list[str]
    report: str = REPORT_NAME

    def apply(self, manifest: dict[str, Any]) -> list[str]:
        manifest["validation"] = asdict(self)
        return []


@dataclass(frozen=True)
class VariantCheck:
    """A reduced-precision variant's check against fp32 (`export/variant_check.py`): export.json's
    `fp16` or `int8` section; the full report is validation.<precision>.json."""

    precision: str
    passed: bool
    thresholds: Mapping[str, float]
    bit_agreement: float
    bits_flipped: int
    bits_total: int
    map: Mapping[str, Any]
    failures: list[str]

    def apply(self, manifest: dict[str, Any]) -> list[str]:
        manifest[self.precision] = {**{k: v for k, v in asdict(self).items() if k != "precision"},
                                    "report": report_name(self.precision)}
        return []


@dataclass(frozen=True)
class Variant:
    """One encoder's fp16 or int8 ONNX file (`export/fp16.py`, `export/int8.py`); its file entry is recorded."""

    modality: str
    precision: str
    file: str
    conversion: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, manifest: dict[str, Any]) -> list[str]:
        enc = manifest["encoders"][self.modality]
        enc["files"][self.precision] = self.file
        enc[f"{self.precision}_conversion"] = dict(self.conversion)
        return [self.file]


@dataclass(frozen=True)
class Engine:
    """One encoder's TensorRT engine (`export/tensorrt.py`); its sidecar says where it runs."""

    modality: str
    file: str
    sidecar: str
    precision_path: str
    tensorrt_version: str | None
    source_onnx: str

    def apply(self, manifest: dict[str, Any]) -> list[str]:
        manifest.setdefault("engines", {})[self.modality] = {k: v for k, v in asdict(self).items() if k != "modality"}
        return []


Section = Validation | VariantCheck | Variant | Engine


# ------------------------------------------------------------------------------ the typed view
@dataclass(frozen=True)
class EncoderEntry:
    """One modality's encoder: what a runtime needs to feed it (fields checked by the reader)."""

    modality: str
    input_kind: str  # one of INPUT_KINDS
    inputs: tuple[str, ...]
    files: Mapping[str, str]  # precision -> ONNX file name
    fields: Mapping[str, Any]  # the entry as written, for comparing with each ONNX file's metadata

    @property
    def asset(self) -> str | None:
        """The tokenizer.json (token towers) or vocabulary.json (BoW towers) file name."""
        key = ASSET_KEY.get(self.input_kind)
        return self.fields[key] if key else None

    @property
    def preprocess(self) -> Mapping[str, Any] | None:
        return self.fields.get("preprocess")

    @property
    def max_length(self) -> int | None:
        return self.fields.get("max_length")

    @property
    def dynamic_axes(self) -> Mapping[str, Mapping[str, str]]:
        return self.fields.get("dynamic_axes", {})


@dataclass(frozen=True)
class EngineEntry:
    """A TensorRT engine of one modality (`cmhash export trt`)."""

    file: str
    source_onnx: str | None


@dataclass(frozen=True)
class Source:
    """Where the export came from: the checkpoint, its files' sha256 and its dataset and split."""

    checkpoint: str | None
    sha256: Mapping[str, str]
    dataset: str | None
    split_seed: int


@dataclass(frozen=True)
class ExportManifest:
    """A read export.json. `data` is the object itself (what `add_sections` extends)."""

    bits: int
    method: str
    encoders: Mapping[str, EncoderEntry]
    files: Mapping[str, integrity.FileEntry]
    source: Source
    engines: Mapping[str, EngineEntry]
    data: Mapping[str, Any]

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    @property
    def model_id(self) -> str:
        """The identity every code this export makes carries (runtime/formats/model_id.py)."""
        return model_id(self.method, self.bits, self.source.sha256.get(CHECKPOINT_WEIGHTS))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExportManifest":
        """The typed view of an object that `manifest_problems` found nothing wrong with."""
        source = data.get("source") or {}
        origin = source.get("data") or {}
        encoders = {m: EncoderEntry(m, e["input_kind"], tuple(e.get("inputs", ())), dict(e["files"]), e)
                    for m, e in data["encoders"].items()}
        engines = {m: EngineEntry(e["file"], e.get("source_onnx")) for m, e in data.get("engines", {}).items()}
        return cls(data["bits"], data.get("method", ""), encoders, integrity.parse_files(data["files"]),
                   Source(source.get("checkpoint"), dict(source.get("sha256") or {}), origin.get("dataset"),
                          origin.get("split_seed") or 0), engines, data)


# ------------------------------------------------------------------------------------- writing
def file_entries(folder: str | os.PathLike, names: list[str]) -> dict[str, dict[str, Any]]:
    """The `files` section for `names` as they are now."""
    return {n: e.to_dict() for n, e in integrity.entries(folder, names).items()}


def write_export_manifest(folder: str | os.PathLike, data: Mapping[str, Any]) -> ExportManifest:
    """Write `export.json` (format FORMAT), atomically, after checking it as the reader would."""
    data = json.loads(json.dumps({"format": FORMAT, **{k: v for k, v in data.items() if k != "format"}}))  # tuples -> lists
    problems = [f"lacks {k}" for k in REQUIRED if k not in data] or manifest_problems(data)
    if problems:
        raise ExportFolderError(f"refusing to write {Path(folder) / MANIFEST_NAME}: {'; '.join(problems[:3])}")
    with atomic_write(Path(folder) / MANIFEST_NAME, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return ExportManifest.from_dict(data)


def add_sections(folder: str | os.PathLike, *sections: Section,
                 manifest: ExportManifest | None = None) -> ExportManifest:
    """Add typed sections to `export.json` (read from `folder` unless given) and write it once.

    The files a section names (fp16 models) get their integrity entries. Returns the new manifest.
    """
    data = copy.deepcopy(dict((manifest or read_export_manifest(folder)).data))
    names = [n for s in sections for n in s.apply(data)]
    data["files"].update(file_entries(folder, names))
    return write_export_manifest(folder, data)


def write_report(folder: str | os.PathLike, name: str, report: Mapping[str, Any]) -> Path:
    """A validation report (REPORT_NAME, `report_name(precision)`) as pretty JSON, atomically; read by people
    and tools, export.json keeps its summary."""
    with atomic_write(Path(folder) / name, "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")
    return Path(folder) / name


# ------------------------------------------------------------------------------------- reading
def read_export_manifest(folder: str | os.PathLike) -> ExportManifest:
    """`folder`'s export.json, with every field a reader uses checked for presence and type.

    The one reader of export.json (runtime and export alike). A version-1 file is upgraded in memory
    (its file entries' `bytes` becomes `size`). Any problem raises ExportFolderError (an ExportError
    too) naming the file, the bad value and the fix.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFolderError(f"export folder {folder} does not exist; {CREATE}")
    path = folder / MANIFEST_NAME
    data = _parse(path, folder)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ExportFolderError(f"{path} lacks {', '.join(missing)}; {REEXPORT}")
    if data["format"] == V1:
        data = _upgrade_v1(data)
    elif data["format"] != FORMAT:
        raise ExportFolderError(f"{path} has format {short(data['format'])}; this cmhash reads {V1!r} and {FORMAT!r} "
                                "(upgrade cmhash, or export with this version)")
    problems = manifest_problems(data)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ExportFolderError(f"{path} is damaged: {'; '.join(problems[:3])}{more}; {REEXPORT}")
    return ExportManifest.from_dict(data)


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: file entries `{"sha256", "bytes"}` become `{"sha256", "size"}`; nothing else changed."""
    files = data["files"]
    if isinstance(files, dict):
        files = {name: ({"sha256": e.get("sha256"), "size": e.get("bytes")} if isinstance(e, dict) and "bytes" in e
                        else e) for name, e in files.items()}
    return {**data, "format": FORMAT, "files": files}


def _parse(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except FileNotFoundError as exc:
        raise ExportFolderError(f"{folder} has no {MANIFEST_NAME}, so it is not a cmhash export folder; "
                                f"{CREATE}") from exc
    except ValueError as exc:  # read_json: bad UTF-8, bad JSON, nesting too deep
        raise ExportFolderError(f"{path} is not valid JSON ({exc}); {REEXPORT}") from exc
    except OSError as exc:
        raise ExportFolderError(f"cannot read {path} ({exc}); copy the folder again or {REEXPORT}") from exc
    if not isinstance(data, dict):
        raise ExportFolderError(f"{path} must hold a JSON object, got {type(data).__name__}; {REEXPORT}")
    return data


def manifest_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the fields of a parsed export.json (empty when nothing)."""
    problems = []
    bits = data["bits"]
    if type(bits) is not int or bits <= 0 or bits % 8:
        problems.append(f"bits must be a positive multiple of 8, got {short(bits)}")
    if not isinstance(data.get("method", ""), str):
        problems.append(f"method must be a string, got {short(data['method'])}")
    problems += _encoders_problems(data["modalities"], data["encoders"])
    try:
        integrity.parse_files(data["files"])
    except ValueError as exc:
        problems.append(str(exc))
    problems += _engines_problems(data.get("engines", {}))
    problems += _source_problems(data.get("source") or {})
    return problems


def _source_problems(source: Any) -> list[str]:
    """The optional `source` section: checkpoint path, file sha256s, dataset name and split seed."""
    origin = (source.get("data") or {}) if isinstance(source, dict) else None
    ok = (isinstance(source, dict) and isinstance(source.get("checkpoint", ""), (str, type(None)))
          and isinstance(source.get("sha256") or {}, dict) and _all_str((source.get("sha256") or {}).values())
          and isinstance(origin, dict) and isinstance(origin.get("dataset"), (str, type(None)))
          and type(origin.get("split_seed") or 0) is int)
    return [] if ok else [f"source must hold checkpoint, sha256 and data {{dataset, split_seed}}, got {short(source)}"]


def _encoders_problems(modalities: Any, encoders: Any) -> list[str]:
    if (not isinstance(modalities, list) or not modalities or any(m not in MODALITIES for m in modalities)
            or len(set(modalities)) != len(modalities)):
        return [f"modalities must list 'image' and/or 'text' once each, got {short(modalities)}"]
    if not isinstance(encoders, dict) or sorted(encoders) != sorted(modalities):
        return [f"encoders must hold one object per modality ({', '.join(modalities)}), got {short(encoders)}"]
    return [p for m in modalities for p in _encoder_problems(f"encoders.{m}", encoders[m])]


def _encoder_problems(where: str, raw: Any) -> list[str]:
    """The entry of one modality: its input kind, model files, input names and what the kind needs."""
    if not isinstance(raw, dict):
        return [f"{where} must be an object, got {short(raw)}"]
    kind = raw.get("input_kind")
    if kind not in INPUT_KINDS:
        return [f"{where}.input_kind must be one of {', '.join(INPUT_KINDS)}, got {short(kind)}"]
    problems = []
    files = raw.get("files")
    if not isinstance(files, dict) or not isinstance(files.get("fp32"), str) or not _all_str(files.values()):
        problems.append(f"{where}.files must map precisions to file names, fp32 included, got {short(files)}")
    if not isinstance(raw.get("inputs", []), list) or not _all_str(raw.get("inputs", [])):
        problems.append(f"{where}.inputs must be a list of input names, got {short(raw['inputs'])}")
    axes = raw.get("dynamic_axes", {})
    if not isinstance(axes, dict) or not all(isinstance(a, dict) for a in axes.values()):
        problems.append(f"{where}.dynamic_axes must map input names to {{axis: name}}, got {short(axes)}")
    if kind == "pixels":
        value = raw.get("preprocess")  # its values are checked by runtime.preprocess when it is used
        flat = isinstance(value, dict) and all(
            isinstance(v, (str, int, float)) or (isinstance(v, list) and all(isinstance(x, (int, float)) for x in v))
            for v in value.values())
        if not flat:
            problems.append(f"{where}.preprocess must be an object of numbers, strings and lists of numbers, "
                            f"got {short(value)}")
    else:
        key = ASSET_KEY[kind]
        if not isinstance(raw.get(key), str):
            problems.append(f"{where}.{key} must name the {key} file that input_kind {kind!r} needs, "
                            f"got {short(raw.get(key))}")
    if kind == "tokens" and (type(raw.get("max_length")) is not int or raw["max_length"] < 1):
        problems.append(f"{where}.max_length must be a positive integer, got {short(raw.get('max_length'))}")
    return problems


def _engines_problems(engines: Any) -> list[str]:
    """The optional TensorRT engines (`cmhash export trt`): file names inside the folder."""
    wrong = f'engines must map modalities to {{"file": NAME, "source_onnx": NAME, ...}}, got {short(engines)}'
    if not isinstance(engines, dict):
        return [wrong]
    for entry in engines.values():
        names = [entry.get("file"), entry.get("source_onnx", "x")] if isinstance(entry, dict) else [None]
        if not all(isinstance(n, str) and integrity.inside(n) for n in names):
            return [wrong]
    return []


def check_files(folder: str | os.PathLike, manifest: ExportManifest) -> list[str]:
    """One message per file listed in `files` that is missing or differs."""
    return integrity.verify_files(folder, manifest.files, MANIFEST_NAME)


def _all_str(items: Any) -> bool:
    return all(isinstance(item, str) for item in items)
