"""Export a checkpoint's image and text encoders to ONNX: one self-describing folder per checkpoint.

    from cmhash.export.onnx import export_checkpoint
    result = export_checkpoint("runs/dmsh64", "exports/dmsh64", fp16=True)   # exports, then validates

Each encoder is backbone + hash head + in-graph bit packing (`export.encoders`), exported with the
dynamo exporter (torch.onnx, opset >= 18, one file: `external_data=False`), with a dynamic batch
axis (and sequence axis for token inputs), inputs named `pixels` / `input_ids`, `attention_mask` /
`bow` and outputs `hash` (float32 tanh values) and `codes` (uint8, `runtime.codes.pack` layout).
The ONNX `metadata_props` carry the cmhash version, method, bits, modality, preprocessing, tokenizer
reference and the sha256 of the source checkpoint's files. The exporter's progress lines and
warnings are captured, not shown; on failure their tail goes into the error.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import cmhash
from cmhash.errors import ExportError
from cmhash.runtime.formats.export_manifest import (ENCODER_FORMAT, FORMAT, TOKENIZER_NAME, VOCABULARY_NAME, ExportManifest,
                                                    file_entries, model_file, write_export_manifest)

from .encoders import OUTPUT_NAMES, EncoderSpec, build_encoders
from .fp16 import add_fp16_variants, validate_fp16
from .int8 import add_int8_variants, validate_int8
from .protos import copy_atomic, save_proto, set_metadata
from .sources import check_out_folder, load_source_dataset, source_hashes
from .validate import run_checks, validate_export

MIN_OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True)"
CODE_LAYOUT = "bit j = (hash_j >= 0), so sign(0) = +1; bit j in byte j // 8, least significant bit first (FAISS)"
Step = Callable[[str], None]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript",
                  "onnx_ir", "torch._subclasses", "torch._utils_internal")


@contextlib.contextmanager
def quiet(buffer: io.StringIO | None = None) -> Iterator[io.StringIO]:
    """Capture stdout, stderr, warnings and torch/onnxscript log records of the exporter."""
    buffer = buffer if buffer is not None else io.StringIO()
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    handler = logging.StreamHandler(buffer)
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
            logging.getLogger(name).addHandler(handler)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).removeHandler(handler)


def library_versions() -> dict[str, str | None]:
    """Versions of the export stack, for export.json."""
    from importlib import metadata

    out: dict[str, str | None] = {"cmhash": cmhash.__version__}
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def encoder_entry(spec: EncoderSpec, precision_files: dict[str, str]) -> dict[str, Any]:
    """The runtime's view of one encoder in export.json."""
    c = spec.config
    entry: dict[str, Any] = {
        "files": precision_files,
        "backbone": c.name,
        "input_kind": c.input_kind,
        "inputs": list(spec.input_names),
        "outputs": {"hash": {"dtype": "float32", "shape": ["batch", spec.bits]},
                    "codes": {"dtype": "uint8", "shape": ["batch", spec.bits // 8], "layout": CODE_LAYOUT}},
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes().items()},
    }
    if c.input_kind == "pixels":
        entry["preprocess"] = c.preprocess.to_dict()
    elif c.input_kind == "tokens":
        entry.update(tokenizer=TOKENIZER_NAME, tokenizer_source=c.tokenizer, max_length=c.max_length)
    else:
        entry.update(vocabulary=VOCABULARY_NAME, input_dim=c.input_dim)
    return entry


def onnx_metadata(spec: EncoderSpec, method: str, hashes: Mapping[str, str],
                  precision: str = "fp32") -> dict[str, str]:
    """`metadata_props` of one encoder: enough to use the file without export.json."""
    c = spec.config
    meta = {
        "cmhash_version": cmhash.__version__,
        "cmhash_format": ENCODER_FORMAT,
        "method": method,
        "bits": str(spec.bits),
        "modality": spec.modality,
        "precision": precision,
        "backbone": c.name,
        "input_kind": c.input_kind,
        "backbone_config": json.dumps(c.to_dict(), sort_keys=True),
        "preprocess": json.dumps(c.preprocess.to_dict(), sort_keys=True) if c.preprocess else "",
        "tokenizer": f"{TOKENIZER_NAME} (from {c.tokenizer})" if c.input_kind == "tokens" else "",
        "max_length": str(c.max_length or ""),
        "vocabulary": VOCABULARY_NAME if c.input_kind == "bow" else "",
        "outputs": json.dumps({"hash": "float32 tanh hash values (batch, bits)",
                               "codes": f"uint8 packed codes (batch, bits/8): {CODE_LAYOUT}"}),
        "dynamic_axes": json.dumps(spec.dynamic_axes()),
        "source_model_sha256": hashes.get("model.safetensors", ""),
        "source_config_sha256": hashes.get("config.json", ""),
    }
    return meta


def export_encoder(spec: EncoderSpec, path: str | Path, metadata: Mapping[str, str], opset: int = MIN_OPSET) -> Path:
    """Export one encoder with the dynamo exporter into a single ONNX file."""
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} requested; the dynamo exporter needs >= {MIN_OPSET} (it silently keeps 18)")
    log = io.StringIO()
    try:
        with quiet(log), torch.no_grad():
            program = torch.onnx.export(spec.module, spec.example_inputs(), dynamo=True, external_data=False,
                                        opset_version=opset, output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=spec.dynamic_shapes(), verbose=False)
            proto = program.model_proto
    except Exception as exc:  # the exporter raises many types; all mean the same to the user
        tail = "\n".join(log.getvalue().strip().splitlines()[-15:])
        message = _ANSI.sub("", f"{type(exc).__name__}: {str(exc)[:2000]}\nexporter log (tail):\n{tail}")
        raise ExportError(f"exporting the {spec.modality} encoder ({spec.config.name}) to ONNX failed: {message}") from exc
    set_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported {spec.modality} encoder is not a valid ONNX model: {exc}") from exc
    return save_proto(proto, path)


def write_text_assets(spec: EncoderSpec, folder: Path, *, tokenizer_file: str | Path | None = None,
                      vocabulary: Any = None) -> str:
    """Copy the tokenizer (token towers) or write the BoW vocabulary (BoW towers); return the file name."""
    c = spec.config
    if c.input_kind == "tokens":
        from cmhash.zoo.backbones import tokenizer_path

        src = Path(tokenizer_file) if tokenizer_file else tokenizer_path(c)
        copy_atomic(src, folder / TOKENIZER_NAME)
        return TOKENIZER_NAME
    if len(vocabulary) != c.input_dim:
        raise ExportError(f"the vocabulary has {len(vocabulary)} words, the text tower takes {c.input_dim}: "
                          "pass the vocabulary the checkpoint was trained with")
    vocabulary.save(folder / VOCABULARY_NAME)
    return VOCABULARY_NAME


def bow_vocabulary(model: Any, vocabulary: Any, dataset: Any, data_root: str | None) -> Any:
    """The BoW vocabulary to export: `vocabulary` (a BowVocabulary or its file), else the checkpoint's
    own (saved since checkpoint format 2), else, for a format-1 checkpoint, rebuilt from its training
    data by the training rule (`cmhash.zoo.inputs.bow_vocabulary`)."""
    from cmhash.zoo.data import BowVocabulary

    if vocabulary is not None:
        return vocabulary if isinstance(vocabulary, BowVocabulary) else BowVocabulary.load(vocabulary)
    if model.vocabulary is not None:
        return model.vocabulary
    from cmhash.zoo.inputs import bow_vocabulary as training_rule
    from cmhash.zoo.data import default_split

    text = model.backbone_configs["text"]
    dataset = dataset if dataset is not None else load_source_dataset(model.config.dataset, data_root)
    words = training_rule(dataset, default_split(dataset, model.config.split_seed).fit, text.input_dim)
    if words is None:
        raise ExportError(f"dataset {dataset.name!r} has a bag-of-words without column words, and the checkpoint "
                          "saved no vocabulary.json; pass vocabulary=FILE (a cmhash vocabulary.json)")
    return words


@dataclass
class ExportResult:
    folder: Path
    manifest: ExportManifest
    validation: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None
    int8: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fp16: bool = False, validate: bool = True,
                      dataset: Any = None, data_root: str | None = None, opset: int = MIN_OPSET,
                      backbone_weights: Mapping[str, str] | None = None, tokenizer_file: str | None = None,
                      vocabulary: Any = None, on_step: Step | None = None, overwrite: bool = False,
                      int8: bool = False, calibration: str | Path | None = None,
                      int8_target: str = "cpu") -> ExportResult:
    """Export every encoder of a checkpoint into `out`, write export.json, then validate (and fp16).

    `dataset` (default: the dataset the checkpoint trained on, e.g. coco-mini) supplies the real
    inputs of the checks and, for BoW towers without `vocabulary`, the training captions the
    vocabulary is rebuilt from. Raises `ExportValidationError` (after writing every file and the
    report) when a check fails. A non-empty `out` must hold an export of the same checkpoint, unless
    `overwrite`. `int8` adds int8 variants (export/int8.py): the image tower calibrated on the files of
    `calibration`, else on the training images of the checkpoint's dataset.
    """
    from cmhash.zoo.model import CrossModalHasher

    step = on_step or (lambda _msg: None)
    checkpoint, out = Path(checkpoint), Path(out)
    check_out_folder(out, source_hashes(checkpoint), overwrite)
    step("loading the checkpoint")
    model = CrossModalHasher.from_pretrained(checkpoint, backbone_weights)
    config = model.config
    hashes = source_hashes(checkpoint)
    specs = build_encoders(model, dict(backbone_weights or {}))
    if dataset is None and validate:
        dataset = load_source_dataset(config.dataset, data_root)
    out.mkdir(parents=True, exist_ok=True)
    encoders, written = {}, []
    for modality, spec in specs.items():
        step(f"exporting the {modality} encoder ({spec.config.name})")
        name = model_file(modality)
        export_encoder(spec, out / name, onnx_metadata(spec, config.method, hashes), opset)
        written.append(name)
        encoders[modality] = encoder_entry(spec, {"fp32": name})
        if spec.modality == "text":
            words = bow_vocabulary(model, vocabulary, dataset, data_root) if spec.input_kind == "bow" else None
            written.append(write_text_assets(spec, out, tokenizer_file=tokenizer_file, vocabulary=words))
    data = {
        "format": FORMAT,
        "cmhash_version": cmhash.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exporter": {"name": EXPORTER, "opset": opset, "external_data": False, "versions": library_versions()},
        "method": config.method,
        "bits": model.bits,
        "modalities": list(specs),
        "encoders": encoders,
        "source": {"checkpoint": str(checkpoint.resolve()), "sha256": hashes,
                   "backbones_trained": model.backbones_trained,
                   "data": {"dataset": config.dataset, "split_seed": config.split_seed},
                   "metrics": (config.metrics or {}).get("test")},
        "files": {},
        "validation": None,
        "fp16": None,
        "int8": None,
    }
    data["files"] = file_entries(out, written)
    result = ExportResult(out, write_export_manifest(out, data), files=written)
    if fp16:
        step("converting to fp16")
        result.manifest = add_fp16_variants(out, result.manifest)
        result.files += [e.files["fp16"] for e in result.manifest.encoders.values()]
    if int8:
        result.manifest = add_int8_variants(out, result.manifest, calibration=calibration, dataset=dataset,
                                            data_root=data_root, target=int8_target, on_step=step)
        result.files += [e.files["int8"] for e in result.manifest.encoders.values()]
    if not validate:
        return result

    checks = [("validation", lambda: validate_export(out, encoders=specs, dataset=dataset, on_step=step))]
    checks += [(name, lambda check=check: check(out, dataset=dataset, on_step=step))
               for name, check, wanted in (("fp16", validate_fp16, fp16), ("int8", validate_int8, int8)) if wanted]
    reports, failure = run_checks(checks)
    for name, report in reports.items():
        setattr(result, name, report)
    if failure is not None:
        failure.result = result  # every report, for callers that print them
        raise failure
    return result
