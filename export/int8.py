"""int8 variants of exported encoders (float32 inputs and outputs), made with onnxruntime.quantization.

- Text towers (MiniLM, the BoW MLP): **dynamic** quantization of the MatMul/Gemm weights (QInt8). No
  calibration: activations are quantized per batch at run time, which suits token inputs.
- Image towers (CNNs): **static** quantization in QDQ form (QuantizeLinear/DequantizeLinear pairs
  around each quantized op), calibrated on real images: the checkpoint's own training images by
  default, or the user's. Weights QInt8 per channel. Activations depend on the target:
  - `cpu` (default): uint8 with a zero point, onnxruntime's fast U8S8 kernels (bench/int8_targets.py
    on EfficientNet-Lite0, batch 32, 1 thread: 127.5 ms against 284.5 ms fp32);
  - `tensorrt`: int8 symmetric (zero point 0), what TensorRT's explicit quantization accepts
    (`cmhash export trt --precision int8`); onnxruntime runs it too but slower than fp32 on a CPU
    (425.0 ms in the same measurement).

In both, the hash layer (the last MatMul/Gemm before `hash`) and the code packing (`hash` -> `codes`)
are excluded from quantization and stay in float, so `codes == pack(hash)` still holds for the int8
model's own `hash`. The check against fp32
(`validate_int8`, export/variant_check.py) fails a variant below 99% bit agreement or beyond
|ΔmAP| 0.01, on the same real data as the fp32 validation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cmhash.errors import ConfigError, ExportError, require
from cmhash.runtime.formats.export_manifest import ExportManifest, Variant, add_sections, model_file, read_export_manifest
from cmhash.runtime.io import sha256_file
from cmhash.runtime.preprocess import ImagePreprocess

from .fp16 import _split_packing
from .protos import save_proto, set_metadata
from .variant_check import validate_variant

MIN_AGREEMENT = 0.99
MAX_MAP_CHANGE = 0.01
CALIBRATION_BATCH = 8
CALIBRATION_METHOD = "MinMax"
TARGETS = ("cpu", "tensorrt")


def _pack_node_names(model: Any) -> list[str]:
    """Names of the nodes that turn `hash` into `codes` (named first where the exporter left them blank)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"cmhash_node_{i}"
    _, pack_nodes, _ = _split_packing(model)
    return [n.name for n in pack_nodes]


def _hash_layer_names(model: Any) -> list[str]:
    """The MatMul/Gemm nodes nearest to `hash` (the hash layer): kept in float. Its outputs sit close to
    0 before the tanh for many bits, so quantizing its weights flips codes for little gain in size."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found, stack, seen = [], ["hash"], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node.name)
        else:
            stack.extend(node.input)
    return found


@contextlib.contextmanager
def _quiet() -> Any:
    """onnxruntime.quantization logs hints at WARNING through the root logger; keep them off the user's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Images:
    """An onnxruntime `CalibrationDataReader` over image files, preprocessed as the encoder's input."""

    def __init__(self, paths: Sequence[Path], preprocess: ImagePreprocess, input_name: str) -> None:
        self._batches = iter([paths[i:i + CALIBRATION_BATCH] for i in range(0, len(paths), CALIBRATION_BATCH)])
        self._pre, self._name = preprocess, input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: self._pre(list(batch))}


def quantize_int8(src: str | Path, dst: str | Path, input_kind: str, *,
                  calibration: Sequence[Path] = (), preprocess: ImagePreprocess | None = None,
                  input_name: str = "pixels", target: str = "cpu") -> dict[str, Any]:
    """Write an int8 copy of the ONNX encoder `src` to `dst`; returns what was done (recorded in export.json)."""
    import onnx

    if target not in TARGETS:
        raise ConfigError(f"int8 target must be one of {', '.join(TARGETS)}, got {target!r}")
    quant = require("onnxruntime.quantization", "cpu", "The int8 ONNX variant")
    model = onnx.load(str(src))
    if [o.name for o in model.graph.output] != ["hash", "codes"]:
        raise ExportError(f"{src} does not have the outputs (hash, codes) of a cmhash encoder")
    excluded = _pack_node_names(model) + _hash_layer_names(model)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        out = Path(tmp) / "int8.onnx"
        if input_kind == "pixels":
            if not calibration or preprocess is None:
                raise ExportError("static int8 quantization of an image tower needs calibration images: "
                                  "pass --calibration DIR (a folder of photos)")
            trt = target == "tensorrt"
            quant.quantize_static(str(named), str(out), _Images(list(calibration), preprocess, input_name),
                                  quant_format=quant.QuantFormat.QDQ, per_channel=True,
                                  activation_type=quant.QuantType.QInt8 if trt else quant.QuantType.QUInt8,
                                  weight_type=quant.QuantType.QInt8, nodes_to_exclude=excluded,
                                  calibrate_method=quant.CalibrationMethod.MinMax,
                                  extra_options={"ActivationSymmetric": trt, "WeightSymmetric": True})
            info = {"method": "static", "format": "QDQ", "target": target, "calibration_method": CALIBRATION_METHOD,
                    "calibration_images": len(calibration),
                    "activations": "int8 symmetric" if trt else "uint8 with zero point",
                    "weights": "int8 symmetric, per channel"}
        else:
            quant.quantize_dynamic(str(named), str(out), weight_type=quant.QuantType.QInt8, per_channel=True,
                                   nodes_to_exclude=excluded)
            info = {"method": "dynamic", "target": target,
                    "weights": "int8 per channel (onnxruntime's default ops: MatMul, Gather, ...)",
                    "activations": "quantized per batch at run time"}
        int8 = onnx.load(str(out))
    set_metadata(int8, {"precision": "int8", "int8_quantization": info["method"], "fp32_source_sha256": sha256_file(src)})
    save_proto(int8, dst)
    return {"file": Path(dst).name, "quantizer": f"onnxruntime.quantization {_ort_version()}",
            "kept_in_float": "the hash layer and the code packing", **info}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def calibration_images(dataset: Any = None, folder: str | os.PathLike | None = None, split_seed: int = 0) -> list[Path]:
    """The images static quantization calibrates on: the files of `folder` (`--calibration DIR`), else
    the training images of `dataset` (the checkpoint's own split)."""
    if folder is not None:
        from cmhash.runtime.input_files import image_folder

        return image_folder(folder)
    if dataset is None or dataset.images is None or isinstance(dataset.images, np.ndarray):
        raise ExportError("int8 calibration needs image files: pass --calibration DIR (a folder of photos) "
                          "or a dataset with images (--data NAME)")
    from cmhash.zoo.data import default_split

    split = default_split(dataset, split_seed)
    return [Path(dataset.images[i]) for i in split.train]


def add_int8_variants(folder: str | Path, manifest: ExportManifest | None = None, *,
                      calibration: str | os.PathLike | None = None, dataset: Any = None, data_root: str | None = None,
                      target: str = "cpu", on_step: Callable[[str], None] | None = None) -> ExportManifest:
    """`<modality>.int8.onnx` for every encoder of an export folder; export.json gets `Variant`s.

    An image tower is calibrated on the photos of the folder `calibration`, else on the training images
    of `dataset` (default: the export's source dataset, from `data_root`)."""
    from .sources import load_source_dataset

    step = on_step or (lambda _msg: None)
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_export_manifest(folder)
    images: list[Path] = []
    if "image" in manifest.encoders:
        if calibration is None and dataset is None:
            dataset = load_source_dataset(manifest.source.dataset, data_root)
        images = calibration_images(dataset, calibration, manifest.source.split_seed)
    variants = []
    for modality, enc in manifest.encoders.items():
        name = model_file(modality, "int8")
        pre = ImagePreprocess.from_dict(enc.preprocess) if enc.input_kind == "pixels" else None
        step(f"quantizing the {modality} encoder to int8"
             + (f" (calibrated on {len(images)} images)" if pre is not None else ""))
        info = quantize_int8(folder / enc.files["fp32"], folder / name, enc.input_kind, calibration=images,
                             preprocess=pre, input_name=enc.inputs[0] if enc.inputs else "pixels", target=target)
        variants.append(Variant(modality, "int8", name, info))
    return add_sections(folder, *variants, manifest=manifest)


def validate_int8(folder: str | Path, *, min_agreement: float = MIN_AGREEMENT, max_map_change: float = MAX_MAP_CHANGE,
                  **options: Any) -> dict[str, Any]:
    """The int8 variants against fp32 (`validate_variant`), with the int8 limits."""
    return validate_variant(folder, "int8", min_agreement=min_agreement, max_map_change=max_map_change, **options)
