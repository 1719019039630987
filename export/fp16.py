"""Half-precision variants of exported encoders (float32 inputs and outputs), and their check.

TensorRT 11 removed the FP16 builder flag: half precision now means a mixed-precision ONNX model.
`convert_float_to_float16(keep_io_types=True)` makes one. We use onnxruntime's copy of that converter
(`onnxruntime.transformers.float16`, already installed with onnxruntime) and not onnxconverter-common
1.16's: the latter leaves `Cast(to=float)` nodes as they are (MiniLM casts its attention mask), so
their float32 outputs meet float16 tensors and onnxruntime refuses the model.

Two more fixes around the converter. When a graph output is also consumed inside the graph (here
`hash` feeds the bit packing), the converter casts the output back to float32 but leaves its consumers
expecting float16; so the packing subgraph is cut off first, the encoder body converted, and the
packing re-attached in float32 on the float32 `hash` output (so `codes` is always exactly
`pack(hash)` of the half-precision model's own output). And the converter appends its Cast nodes at
the end of the node list, which the ONNX checker rejects; the nodes are sorted again.

The check (`validate_fp16`, export/variant_check.py) compares with the float32 model on the dataset:
bit agreement of the codes (every flip with its |h|), and the change of mAP in both directions.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cmhash.errors import ExportError, require
from cmhash.runtime.formats.export_manifest import ExportManifest, Variant, add_sections, model_file, read_export_manifest
from cmhash.runtime.io import sha256_file

from .protos import save_proto, set_metadata
from .variant_check import validate_variant

MIN_AGREEMENT = 0.995
MAX_MAP_CHANGE = 0.005
PACK_PREFIX = "cmhash_pack/"


def _split_packing(model: Any) -> tuple[Any, list[Any], dict[str, Any]]:
    """(body model with output `hash` only, packing nodes, initializers the packing reads)."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needed, stack = set(), ["hash"]
    while stack:
        name = stack.pop()
        if name in producer and producer[name] not in needed:
            needed.add(producer[name])
            stack.extend(graph.node[producer[name]].input)
    body_nodes = [n for i, n in enumerate(graph.node) if i in needed]
    pack_nodes = [copy.deepcopy(n) for i, n in enumerate(graph.node) if i not in needed]
    inits = {init.name: init for init in graph.initializer}
    body_outputs = {o for n in body_nodes for o in n.output}
    pack_inits = {}
    for node in pack_nodes:
        for j, name in enumerate(node.input):
            if name in inits:
                pack_inits[name] = inits[name]
                node.input[j] = PACK_PREFIX + name
            elif name in body_outputs and name != "hash":
                raise ExportError(f"the code packing reads the internal tensor {name!r}; expected only 'hash'")
    body = copy.deepcopy(model)
    del body.graph.node[:]
    body.graph.node.extend(body_nodes)
    used = {i for n in body_nodes for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del body.graph.initializer[:]
    body.graph.initializer.extend(kept)
    outputs = [o for o in graph.output if o.name == "hash"]
    del body.graph.output[:]
    body.graph.output.extend(outputs)
    # The converter retypes Cast nodes but not always their value_info entries (onnxruntime then
    # refuses the model): drop the intermediate shape info; onnxruntime infers it again.
    del body.graph.value_info[:]
    return body, pack_nodes, pack_inits


def _topological_sort(graph: Any) -> None:
    """Reorder nodes so each comes after its inputs' producers (the converter appends its Casts last)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError(f"the fp16 graph has a cycle or a dangling input near node {pending[0].name!r}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            ordered.append(n)
            available.update(n.output)
    nodes = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(nodes)


def _out_of_fp16_range(model: Any) -> int:
    """How many non-zero float32 weights the converter clamps (|w| < 5.96e-8 or > 65504)."""
    from onnx import TensorProto, numpy_helper

    count = 0
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            w = np.abs(numpy_helper.to_array(init))
            count += int(((w > 0) & (w < 5.96e-8)).sum() + (w > 65504.0).sum())
    return count


def convert_fp16(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write a float16 copy of the ONNX encoder `src` to `dst`, keeping float32 inputs and outputs."""
    import onnx

    float16 = require("onnxruntime.transformers.float16", "cpu", "The fp16 ONNX variant")

    model = onnx.load(str(src))
    if [o.name for o in model.graph.output] != ["hash", "codes"]:
        raise ExportError(f"{src} does not have the outputs (hash, codes) of a cmhash encoder")
    codes_output = next(o for o in model.graph.output if o.name == "codes")
    body, pack_nodes, pack_inits = _split_packing(model)
    clamped = _out_of_fp16_range(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(body, keep_io_types=True)
    for name, init in pack_inits.items():
        clone = copy.deepcopy(init)
        clone.name = PACK_PREFIX + name
        half.graph.initializer.append(clone)
    half.graph.node.extend(pack_nodes)
    half.graph.output.append(codes_output)
    _topological_sort(half.graph)
    set_metadata(half, {"precision": "fp16", "fp16_converter": "onnxruntime.transformers.float16 (keep_io_types=True)",
                        "fp32_source_sha256": sha256_file(src)})
    try:
        onnx.checker.check_model(half)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the fp16 variant of {Path(src).name} is not a valid ONNX model: {exc}") from exc
    save_proto(half, dst)
    return {"file": Path(dst).name, "converter": "onnxruntime.transformers.float16",
            "weights_clamped_to_fp16_range": clamped}


def add_fp16_variants(folder: str | Path, manifest: ExportManifest | None = None) -> ExportManifest:
    """`<modality>.fp16.onnx` for every encoder of an export folder; export.json gets `Variant`s.
    Returns the new manifest."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_export_manifest(folder)
    variants = []
    for modality, enc in manifest.encoders.items():
        name = model_file(modality, "fp16")
        variants.append(Variant(modality, "fp16", name, convert_fp16(folder / enc.files["fp32"], folder / name)))
    return add_sections(folder, *variants, manifest=manifest)


def validate_fp16(folder: str | Path, *, min_agreement: float = MIN_AGREEMENT, max_map_change: float = MAX_MAP_CHANGE,
                  **options: Any) -> dict[str, Any]:
    """The fp16 variants against fp32 (`validate_variant`), with the fp16 limits."""
    return validate_variant(folder, "fp16", min_agreement=min_agreement, max_map_change=max_map_change, **options)
