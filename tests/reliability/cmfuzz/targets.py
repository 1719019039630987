"""The loaders of untrusted files, each with the real files it reads and how to mutate them.

A target's `load(folder)` does what a user of that file does: load it, then touch the result (search
an index, tokenize a caption), so a load that "succeeds" with a broken object is caught too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Target:
    """`builder`: the `cmfuzz.artifacts` function that makes the real folder (targets may share one);
    `files`: path inside the folder -> mutation kind (see cmfuzz.mutate); `load(folder)`: the loader
    under test."""

    name: str
    what: str
    builder: str
    files: dict[str, str]
    load: Callable[[Path], Any]
    fixup: Callable[[Path, str, bytes, Any], None] | None = None

    def build(self, folder: Path, ctx: dict) -> Path:
        """Make the real folder. `ctx`: work (scratch folder), coco_root, mirflickr_root, coco_small."""
        from . import artifacts

        fn = getattr(artifacts, self.builder)
        if self.builder == "build_export":
            return fn(folder, ctx["work"], ctx["coco_small"])
        if self.builder in ("build_coco", "build_codes"):
            return fn(folder, ctx["coco_root"])
        if self.builder == "build_mirflickr":
            return fn(folder, ctx["mirflickr_root"])
        return fn(folder)


# ------------------------------------------------------------------------------------------ loaders
def load_index(folder: Path) -> Any:
    import numpy as np

    from cmhash.runtime.index import HammingIndex

    from cmhash.runtime.search_cpu import numba_available

    path = folder / "db.cmhx"
    cases = [{"backend": "numpy"}, {"backend": "numpy", "mmap": True, "verify": True},
             {"backend": "numpy", "verify": False}]
    if numba_available():  # the multi-index tables built over whatever the file held
        cases.append({"method": "mih"})
    for kwargs in cases:
        index = HammingIndex.load(path, **kwargs)
        q = np.zeros((1, index.bits // 8), np.uint8)
        index.search(q, k=3)
        index.range_search(q, 2)
    return index


def load_checkpoint(folder: Path) -> Any:
    from cmhash.zoo.model import CrossModalHasher

    return CrossModalHasher.from_pretrained(folder)


def load_published(folder: Path) -> Any:
    from cmhash.zoo.hub import load_hasher

    return load_hasher(str(folder))


def load_train_state(folder: Path) -> Any:
    from cmhash.zoo.state_io import load_state

    return load_state(folder, "train_state")


def load_export(folder: Path) -> Any:
    """What a runtime reads of an export folder: export.json, the file checksums, the BoW vocabulary."""
    from cmhash.runtime.formats.export_manifest import check_files, read_export_manifest as read_manifest
    from cmhash.zoo.data import BowVocabulary

    manifest = read_manifest(folder)
    problems = check_files(folder, manifest)
    vocab = BowVocabulary.load(folder / "vocabulary.json")
    vocab.transform([["a", "dog"]])
    return manifest, problems, vocab


def load_runtime_export(folder: Path) -> Any:
    """What `cmhash encode texts` does: the runtime's encoder from the folder, then one encode."""
    from cmhash.runtime.encoder import load_encoder

    encoder = load_encoder(folder, "text", threads=1)
    return encoder.encode(["a dog on a skateboard", "zzz"], progress=False)


def record_sha256(folder: Path, name: str, data: bytes, rng: Any) -> None:
    """Half the time, also write the mutated file's sha256 into export.json (a careful forger), so the
    mutation gets past the checksum to the metadata, model and vocabulary checks."""
    import hashlib
    import json

    if name == "export.json" or rng.random() < 0.5:
        return
    manifest = json.loads((folder / "export.json").read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (folder / "export.json").write_text(json.dumps(manifest))


def load_codes_file(folder: Path) -> Any:
    """What `cmhash index build` does with a codes file: read it, then index the codes."""
    from cmhash.runtime.formats.codes_file import load_codes
    from cmhash.runtime.index import HammingIndex

    data = load_codes(folder / "codes.npz")
    index = HammingIndex(data.bits, backend="numpy")
    index.add(data.codes, data.ids)
    return index


def load_tokenizer(folder: Path) -> Any:
    from cmhash.runtime.tokenize import TextTokenizer

    tok = TextTokenizer(folder / "tokenizer.json", 32)
    return tok(["a dog on a skateboard", "word " * 100])


def load_sidecar(folder: Path) -> Any:
    from cmhash.runtime.engine_meta import check_sidecar
    from cmhash.runtime.formats.engine_sidecar import read_sidecar

    from .artifacts import built_platform

    read_sidecar(folder / "image.engine")
    return check_sidecar(folder / "image.engine", built_platform(), onnx_path=folder / "image.onnx")


def load_folder_dataset(folder: Path) -> Any:
    from cmhash.zoo.data import load_dataset

    return load_dataset(folder)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("index", "HammingIndex.load (+ mmap, verify=False, MIH) and searches: format v2 with ids, "
           "tombstones and metadata", "build_index", {"db.cmhx": "cmhx"}, load_index),
    Target("index-v1", "the same loads of a format-version-1 index file", "build_index_v1",
           {"db.cmhx": "cmhx"}, load_index),
    Target("checkpoint", "CrossModalHasher.from_pretrained (config.json, model.safetensors, vocabulary.json)",
           "build_checkpoint", {"config.json": "json", "model.safetensors": "safetensors", "vocabulary.json": "json"},
           load_checkpoint),
    Target("hub-manifest", "zoo.hub.load_hasher on a published folder (manifest.json sha256)", "build_published",
           {"manifest.json": "json", "config.json": "json", "model.safetensors": "safetensors",
            "vocabulary.json": "json"}, load_published),
    Target("train-state", "zoo.state_io.load_state (train_state.json + .safetensors)", "build_train_state",
           {"train_state.json": "json", "train_state.safetensors": "safetensors"}, load_train_state),
    Target("export", "export.json (read_manifest, check_files) + vocabulary.json (BowVocabulary.load)",
           "build_export", {"export.json": "json", "vocabulary.json": "json", "text.onnx": "binary"}, load_export),
    Target("runtime-export", "runtime load_encoder(folder, 'text') + encode: export.json, ONNX + metadata, "
           "vocabulary.json", "build_export", {"export.json": "json", "text.onnx": "onnx", "vocabulary.json": "json"},
           load_runtime_export, record_sha256),
    Target("codes-file", "runtime load_codes(codes.npz) + HammingIndex.add", "build_codes", {"codes.npz": "npz"},
           load_codes_file),
    Target("tokenizer", "runtime TextTokenizer(tokenizer.json) + tokenizing", "build_export",
           {"tokenizer.json": "json"}, load_tokenizer),
    Target("engine-sidecar", "runtime read_sidecar + check_sidecar (image.engine.json)", "build_sidecar",
           {"image.engine.json": "json", "image.engine": "binary"}, load_sidecar),
    Target("coco", "zoo.data.load_dataset on a coco-mini copy (captions/instances JSON)", "build_coco",
           {"annotations/captions_train2017.json": "json", "annotations/instances_train2017.json": "json",
            "annotations/captions_val2017.json": "json", "annotations/instances_val2017.json": "json"},
           load_folder_dataset),
    Target("mirflickr", "zoo.data.load_dataset on MIRFlickr-25K's DCMH .mat + tags (first 200 pairs)",
           "build_mirflickr", {"mirflickr25k-lall.mat": "mat", "mirflickr25k-yall.mat": "mat",
                                   "all_tags.txt": "text", "all_imgs.txt": "text"}, load_folder_dataset),
)}
