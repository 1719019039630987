"""Write the tiny export folders the runtime tests use (run once with the main environment's `onnx`).

    .venv/bin/python tests/runtime/data/make_tiny_exports.py

Why tiny hand-built graphs and not real exports: the runtime's tests must run in an environment without
torch (and without the `onnx` package), where nothing can be exported. These folders follow the format
of `cmhash export onnx` (export.json with sha256s, the ONNX metadata_props, tokenizer.json /
vocabulary.json) with graphs small enough that a test can recompute their outputs in numpy from
`tiny_weights.npz`. Real exports are covered by tests/cli/test_encode_e2e.py.

- tiny/       image tower (pixels 3x16x16 -> 4x4 average pool -> linear -> tanh) and token tower
              (token ids mod 97 -> embedding -> masked mean -> linear -> tanh), 16 bits,
              WordLevel tokenizer with max_length 8;
- tiny-bow/   a text-only BoW tower (12-word vocabulary -> linear -> tanh), 16 bits.
Every graph ends with the exporter's bit packing: (hash >= 0) -> float @ powers of two -> uint8.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cmhash.runtime.formats.export_manifest import file_entries, write_export_manifest

HERE = Path(__file__).resolve().parent
BITS = 16
OPSET = 18
PREPROCESS = {"crop": 16, "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406], "resize": 20,
              "std": [0.229, 0.224, 0.225]}
MAX_LENGTH = 8
WORDS = ["a", "dog", "cat", "on", "the", "sofa", "man", "riding", "horse", "street", "two", "people", "of", "with",
         "in", "sitting", "table", "pizza", "bus", "train", "red", "white", "is", "and"]
BOW_WORDS = ["a", "dog", "cat", "man", "horse", "street", "people", "pizza", "bus", "train", "red", "table"]
LAYOUT = "bit j = (hash_j >= 0), so sign(0) = +1; bit j in byte j // 8, least significant bit first (FAISS)"


def packing_nodes(inits: list) -> list:
    pack = np.zeros((BITS, BITS // 8), np.float32)
    for j in range(BITS):
        pack[j, j // 8] = float(1 << (j % 8))
    inits += [numpy_helper.from_array(pack, "pack_weights"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    return [helper.make_node("GreaterOrEqual", ["hash", "zero"], ["ge"]),
            helper.make_node("Cast", ["ge"], ["ge_f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["ge_f", "pack_weights"], ["packed_f"]),
            helper.make_node("Cast", ["packed_f"], ["codes"], to=TensorProto.UINT8)]


def head_nodes(features: str, w: np.ndarray, b: np.ndarray, inits: list) -> list:
    inits += [numpy_helper.from_array(w, "head_w"), numpy_helper.from_array(b, "head_b")]
    return [helper.make_node("MatMul", [features, "head_w"], ["lin"]),
            helper.make_node("Add", ["lin", "head_b"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["hash"])]


def outputs() -> list:
    return [helper.make_tensor_value_info("hash", TensorProto.FLOAT, ["batch", BITS]),
            helper.make_tensor_value_info("codes", TensorProto.UINT8, ["batch", BITS // 8])]


def metadata(modality: str, input_kind: str, axes: dict, **extra: str) -> dict[str, str]:
    return {"cmhash_version": "0.1.0", "cmhash_format": "cmhash-encoder/1", "method": "tiny", "bits": str(BITS),
            "modality": modality, "precision": "fp32", "backbone": f"tiny-{input_kind}", "input_kind": input_kind,
            "backbone_config": "{}", "preprocess": extra.get("preprocess", ""), "tokenizer": extra.get("tokenizer", ""),
            "max_length": extra.get("max_length", ""), "vocabulary": extra.get("vocabulary", ""),
            "outputs": json.dumps({"hash": "float32", "codes": f"uint8 packed: {LAYOUT}"}),
            "dynamic_axes": json.dumps(axes), "source_model_sha256": "", "source_config_sha256": ""}


def save(graph, path: Path, meta: dict[str, str]) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cmhash-tests")
    model.ir_version = 9
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def image_model(w: np.ndarray, b: np.ndarray, path: Path) -> None:
    inits: list = []
    nodes = [helper.make_node("AveragePool", ["pixels"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1)]
    nodes += head_nodes("flat", w, b, inits) + packing_nodes(inits)
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 16, 16])]
    axes = {"pixels": {"0": "batch"}}
    save(helper.make_graph(nodes, "tiny_image", inputs, outputs(), inits), path,
         metadata("image", "pixels", axes, preprocess=json.dumps(PREPROCESS, sort_keys=True)))


def token_model(emb: np.ndarray, w: np.ndarray, b: np.ndarray, path: Path) -> None:
    inits = [numpy_helper.from_array(emb, "embedding"), numpy_helper.from_array(np.array(97, np.int64), "modulus"),
             numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
             numpy_helper.from_array(np.array([1], np.int64), "seq_axis")]
    nodes = [helper.make_node("Mod", ["input_ids", "modulus"], ["ids97"]),
             helper.make_node("Gather", ["embedding", "ids97"], ["tok"]),
             helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),
             helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "seq_axis"], ["summed"], keepdims=0),
             helper.make_node("ReduceSum", ["mask_f", "seq_axis"], ["count"], keepdims=1),
             helper.make_node("Div", ["summed", "count"], ["mean"])]
    nodes += head_nodes("mean", w, b, inits) + packing_nodes(inits)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask")]
    axes = {n: {"0": "batch", "1": "sequence"} for n in ("input_ids", "attention_mask")}
    save(helper.make_graph(nodes, "tiny_text", inputs, outputs(), inits), path,
         metadata("text", "tokens", axes, tokenizer="tokenizer.json (tiny WordLevel)", max_length=str(MAX_LENGTH)))


def bow_model(w: np.ndarray, b: np.ndarray, path: Path) -> None:
    inits: list = []
    nodes = head_nodes("bow", w, b, inits) + packing_nodes(inits)
    inputs = [helper.make_tensor_value_info("bow", TensorProto.FLOAT, ["batch", len(BOW_WORDS)])]
    save(helper.make_graph(nodes, "tiny_bow", inputs, outputs(), inits), path,
         metadata("text", "bow", {"bow": {"0": "batch"}}, vocabulary="vocabulary.json"))


def tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path))


def entry(input_kind: str, inputs: list[str], file: str, **extra) -> dict:
    return {"files": {"fp32": file}, "backbone": f"tiny-{input_kind}", "input_kind": input_kind, "inputs": inputs,
            "outputs": {"hash": {"dtype": "float32", "shape": ["batch", BITS]},
                        "codes": {"dtype": "uint8", "shape": ["batch", BITS // 8], "layout": LAYOUT}},
            **extra}


def manifest(folder: Path, encoders: dict, names: list[str]) -> None:
    """export.json through its one writer (runtime/formats/export_manifest.py)."""
    data = {"cmhash_version": "0.1.0", "created": "fixture",
            "exporter": {"name": "tests/runtime/data/make_tiny_exports.py", "opset": OPSET}, "method": "tiny",
            "bits": BITS, "modalities": list(encoders), "encoders": encoders, "source": {},
            "files": file_entries(folder, names), "validation": None, "fp16": None}
    write_export_manifest(folder, data)


def main() -> None:
    rng = np.random.default_rng(20261123)
    weights = {"image_w": rng.normal(0, 1, (48, BITS)).astype(np.float32),
               "image_b": rng.normal(0, 0.1, BITS).astype(np.float32),
               "embedding": rng.normal(0, 1, (97, 8)).astype(np.float32),
               "text_w": rng.normal(0, 1, (8, BITS)).astype(np.float32),
               "text_b": rng.normal(0, 0.1, BITS).astype(np.float32),
               "bow_w": rng.normal(0, 1, (len(BOW_WORDS), BITS)).astype(np.float32),
               "bow_b": rng.normal(0, 0.1, BITS).astype(np.float32)}
    np.savez(HERE / "tiny_weights.npz", **weights)
    tiny = HERE / "tiny"
    tiny.mkdir(exist_ok=True)
    image_model(weights["image_w"], weights["image_b"], tiny / "image.onnx")
    token_model(weights["embedding"], weights["text_w"], weights["text_b"], tiny / "text.onnx")
    tokenizer(tiny / "tokenizer.json")
    manifest(tiny, {"image": entry("pixels", ["pixels"], "image.onnx", preprocess=PREPROCESS),
                    "text": entry("tokens", ["input_ids", "attention_mask"], "text.onnx", tokenizer="tokenizer.json",
                                  max_length=MAX_LENGTH)},
             ["image.onnx", "text.onnx", "tokenizer.json"])
    bow = HERE / "tiny-bow"
    bow.mkdir(exist_ok=True)
    bow_model(weights["bow_w"], weights["bow_b"], bow / "text.onnx")
    (bow / "vocabulary.json").write_text(json.dumps({"format": "cmhash.bow_vocabulary", "version": 1,
                                                     "size": len(BOW_WORDS), "words": BOW_WORDS}))
    manifest(bow, {"text": entry("bow", ["bow"], "text.onnx", vocabulary="vocabulary.json", input_dim=len(BOW_WORDS))},
             ["text.onnx", "vocabulary.json"])


if __name__ == "__main__":
    main()
