"""Read an export folder (`cmhash export onnx`) without torch: export.json, file checks, ONNX metadata.

The folder format is written by `cmhash.export` (export/manifest.py documents it). The runtime may not
import that package, so the format names and the one reader of export.json (`read_manifest`, which
checks every field's type) live here, and `cmhash.export.manifest` uses them.

What the runtime trusts, in order:
- `export.json` says which files belong to the folder and their sha256; a file the encoder is about
  to use must match (a truncated download or a model swapped in by hand is refused);
- each ONNX file's own `metadata_props` say its bits, modality, input kind, preprocessing and
  tokenizer limits; they must agree with export.json, or the folder mixes two exports.
"""

from __future__ import annotations

import json
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cmhash.errors import DataFormatError, ExportFolderError
from cmhash.runtime.io import read_json, sha256_file

FORMAT = "cmhash-export/1"
MANIFEST_NAME = "export.json"
ENCODER_FORMAT = "cmhash-encoder/1"
INPUT_KINDS = ("pixels", "tokens", "bow")
MODALITIES = ("image", "text")
REQUIRED = ("format", "bits", "modalities", "encoders", "files")
ASSET_KEY = {"tokens": "tokenizer", "bow": "vocabulary"}  # the text asset each input kind needs
_REEXPORT = "export the checkpoint again (cmhash export onnx CHECKPOINT --out DIR)"
_CREATE = "create one with: cmhash export onnx CHECKPOINT --out DIR"


@dataclass(frozen=True)
class EncoderEntry:
    """One modality's encoder as export.json describes it (checked by `read_manifest`)."""

    modality: str
    input_kind: str
    inputs: tuple[str, ...]
    files: dict[str, str]  # precision -> ONNX file name
    raw: dict[str, Any]

    @property
    def asset(self) -> str | None:
        """The tokenizer.json (token towers) or vocabulary.json (BoW towers) file name."""
        key = ASSET_KEY.get(self.input_kind)
        return self.raw.get(key) if key else None


class ExportFolder:
    """An export folder: its manifest, its encoders and checked access to its files."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.bits: int = self.manifest["bits"]
        self.method: str = self.manifest.get("method", "?")

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
            raise ExportFolderError(f"{_short(name)} is not listed in {self.path / MANIFEST_NAME}; {_REEXPORT}")
        try:
            present = path.is_file()
            matches = present and (not verify or sha256_file(path) == entry["sha256"])
        except OSError as exc:  # e.g. a name too long for the file system, no permission
            raise ExportFolderError(f"cannot read {_short(str(path))} ({exc.strerror or exc}); "
                                    f"copy the folder again or {_REEXPORT}") from exc
        if not present:
            raise ExportFolderError(f"{path} is missing (export.json lists it); copy the whole folder or {_REEXPORT}")
        if not matches:
            raise ExportFolderError(
                f"{path} does not match its sha256 in export.json (modified, truncated or from another export); "
                f"copy the folder again or {_REEXPORT}"
            )
        return path


# ------------------------------------------------------------------------------------ export.json
def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """`folder`'s export.json, with every field a reader uses checked for presence and type.

    The one reader of export.json: `cmhash.export.manifest.read_manifest` calls it. Any problem raises
    ExportFolderError (an ExportError too) naming the file, the bad value and the fix.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFolderError(f"export folder {folder} does not exist; {_CREATE}")
    path = folder / MANIFEST_NAME
    data = _parse(path, folder)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ExportFolderError(f"{path} lacks {', '.join(missing)}; {_REEXPORT}")
    if data["format"] != FORMAT:
        raise ExportFolderError(f"{path} has format {_short(data['format'])}; this cmhash reads {FORMAT!r} "
                                "(upgrade cmhash, or export with this version)")
    problems = manifest_problems(data)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ExportFolderError(f"{path} is damaged: {'; '.join(problems[:3])}{more}; {_REEXPORT}")
    return data


def _parse(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except FileNotFoundError as exc:
        raise ExportFolderError(f"{folder} has no {MANIFEST_NAME}, so it is not a cmhash export folder; "
                                f"{_CREATE}") from exc
    except ValueError as exc:  # read_json: bad UTF-8, bad JSON, nesting too deep
        raise ExportFolderError(f"{path} is not valid JSON ({exc}); {_REEXPORT}") from exc
    except OSError as exc:
        raise ExportFolderError(f"cannot read {path} ({exc}); copy the folder again or {_REEXPORT}") from exc
    if not isinstance(data, dict):
        raise ExportFolderError(f"{path} must hold a JSON object, got {type(data).__name__}; {_REEXPORT}")
    return data


def manifest_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong with the fields of a parsed export.json (empty when nothing)."""
    problems = []
    bits = data["bits"]
    if type(bits) is not int or bits <= 0 or bits % 8:
        problems.append(f"bits must be a positive multiple of 8, got {_short(bits)}")
    if not isinstance(data.get("method", ""), str):
        problems.append(f"method must be a string, got {_short(data['method'])}")
    problems += _encoders_problems(data["modalities"], data["encoders"])
    problems += _files_problems(data["files"])
    problems += _engines_problems(data.get("engines", {}))
    return problems


def _encoders_problems(modalities: Any, encoders: Any) -> list[str]:
    if (not isinstance(modalities, list) or not modalities or any(m not in MODALITIES for m in modalities)
            or len(set(modalities)) != len(modalities)):
        return [f"modalities must list 'image' and/or 'text' once each, got {_short(modalities)}"]
    if not isinstance(encoders, dict) or sorted(encoders) != sorted(modalities):
        return [f"encoders must hold one object per modality ({', '.join(modalities)}), got {_short(encoders)}"]
    return [p for m in modalities for p in _encoder_problems(f"encoders.{m}", encoders[m])]


def _encoder_problems(where: str, raw: Any) -> list[str]:
    """The entry of one modality: its input kind, model files, input names and what the kind needs."""
    if not isinstance(raw, dict):
        return [f"{where} must be an object, got {_short(raw)}"]
    kind = raw.get("input_kind")
    if kind not in INPUT_KINDS:
        return [f"{where}.input_kind must be one of {', '.join(INPUT_KINDS)}, got {_short(kind)}"]
    problems = []
    files = raw.get("files")
    if not isinstance(files, dict) or not isinstance(files.get("fp32"), str) or not _all_str(files.values()):
        problems.append(f"{where}.files must map precisions to file names, fp32 included, got {_short(files)}")
    if not isinstance(raw.get("inputs", []), list) or not _all_str(raw.get("inputs", [])):
        problems.append(f"{where}.inputs must be a list of input names, got {_short(raw['inputs'])}")
    if kind == "pixels":
        problems += _preprocess_problems(where, raw.get("preprocess"))
    else:
        key = ASSET_KEY[kind]
        if not isinstance(raw.get(key), str):
            problems.append(f"{where}.{key} must name the {key} file that input_kind {kind!r} needs, "
                            f"got {_short(raw.get(key))}")
    if kind == "tokens" and (type(raw.get("max_length")) is not int or raw["max_length"] < 1):
        problems.append(f"{where}.max_length must be a positive integer, got {_short(raw.get('max_length'))}")
    return problems


def _preprocess_problems(where: str, value: Any) -> list[str]:
    """The image preprocessing: an object of numbers, strings and flat lists that ImagePreprocess takes."""
    from cmhash.runtime.preprocess import ImagePreprocess

    flat = isinstance(value, dict) and all(
        isinstance(v, (str, int, float)) or (isinstance(v, list) and all(isinstance(x, (int, float)) for x in v))
        for v in value.values())
    if not flat:
        return [f"{where}.preprocess must be an object of numbers, strings and lists of numbers, got {_short(value)}"]
    try:
        ImagePreprocess.from_dict(value)
    except DataFormatError as exc:
        return [f"{where}.preprocess: {exc}"]
    return []


def _files_problems(files: Any) -> list[str]:
    if not isinstance(files, dict):
        return [f'files must map file names to {{"sha256": HEX, "bytes": N}}, got {_short(files)}']
    problems = []
    for name, entry in files.items():
        if not inside(name):
            problems.append(f"files lists {_short(name)}, which is not a file name inside the folder")
        elif (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
              or type(entry.get("bytes")) is not int):
            problems.append(f'the entry of {_short(name)} in files must be {{"sha256": HEX, "bytes": N}}, '
                            f"got {_short(entry)}")
    return problems


def _engines_problems(engines: Any) -> list[str]:
    """The optional TensorRT engines (`cmhash export trt`): file names inside the folder."""
    wrong = f'engines must map modalities to {{"file": NAME, "source_onnx": NAME, ...}}, got {_short(engines)}'
    if not isinstance(engines, dict):
        return [wrong]
    for entry in engines.values():
        names = [entry.get("file"), entry.get("source_onnx", "x")] if isinstance(entry, dict) else [None]
        if not all(isinstance(n, str) and inside(n) for n in names):
            return [wrong]
    return []


def inside(name: Any) -> bool:
    """A relative path that stays inside the export folder (no absolute path, no `..`, no NUL)."""
    return (isinstance(name, str) and bool(name) and "\x00" not in name and not Path(name).is_absolute()
            and ".." not in Path(name).parts)


def _all_str(items: Any) -> bool:
    return all(isinstance(item, str) for item in items)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 60, 60, 3


def _short(value: Any) -> str:
    """A bounded repr for messages: a damaged file may hold 100,000-character strings or deep nesting."""
    return _REPR.repr(value)


def check_metadata(meta: Mapping[str, str], folder: ExportFolder, entry: EncoderEntry, source: str) -> dict[str, Any]:
    """Parse an encoder's ONNX metadata and check it against export.json; return the parsed fields."""
    def field(key: str) -> str:
        if key not in meta:
            raise ExportFolderError(f"{source} has no {key!r} metadata: not a cmhash encoder; {_REEXPORT}")
        return meta[key]

    if field("cmhash_format") != ENCODER_FORMAT:
        raise ExportFolderError(f"{source} has encoder format {_short(meta['cmhash_format'])}; this cmhash reads "
                                f"{ENCODER_FORMAT!r}; {_REEXPORT}")
    try:
        parsed: dict[str, Any] = {"bits": int(field("bits")), "modality": field("modality"),
                                  "input_kind": field("input_kind")}
        if parsed["input_kind"] == "pixels":
            parsed["preprocess"] = json.loads(field("preprocess"))
        elif parsed["input_kind"] == "tokens":
            parsed["max_length"] = int(field("max_length"))
    except (ValueError, RecursionError) as exc:  # a bad number, bad JSON, JSON nested too deeply
        raise ExportFolderError(f"{source}: unreadable metadata ({str(exc)[:200]}); {_REEXPORT}") from exc
    expected = {"bits": folder.bits, "modality": entry.modality, "input_kind": entry.input_kind}
    if "preprocess" in parsed:
        expected["preprocess"] = entry.raw.get("preprocess")
    if "max_length" in parsed:
        expected["max_length"] = entry.raw.get("max_length")
    expected = json.loads(json.dumps(expected))  # tuples -> lists, as both sides are JSON on disk
    wrong = [f"{k}: model says {_short(parsed[k])}, export.json says {_short(v)}"
             for k, v in expected.items() if parsed[k] != v]
    if wrong:
        raise ExportFolderError(f"{source} disagrees with export.json ({'; '.join(wrong)}): the folder mixes files "
                                f"of two exports; {_REEXPORT}")
    return parsed
