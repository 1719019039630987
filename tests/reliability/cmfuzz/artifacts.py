"""The real files the fuzzers mutate, built once per session with cmhash's own writers or from real data.

Each builder writes into a fresh folder and returns it. Everything is small on purpose: a fuzz case
rewrites one file and loads the folder, thousands of times.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

COCO_IMAGES = 4  # images per coco-mini split kept in the small dataset copy
MIRFLICKR_ROWS = 200  # rows of the MIRFlickr-25K .mat/.txt files kept in the small copy


def build_index(folder: Path, n: int = 300, bits: int = 64) -> Path:
    """A saved HammingIndex (format version 2) with every optional section: user ids (sparse),
    removed rows (the tombstone bitmap) and a metadata block."""
    from cmhash.runtime.index import HammingIndex

    rng = np.random.default_rng(0)
    index = HammingIndex(bits, backend="numpy", meta={"model": {"sha256": "ab" * 32, "method": "dhaph", "bits": bits}})
    index.add(rng.integers(0, 256, (n, bits // 8), dtype=np.uint8), ids=np.arange(n) * 3 + 7)
    index.remove(np.arange(0, n, 7) * 3 + 7)
    folder.mkdir(parents=True, exist_ok=True)
    index.save(folder / "db.cmhx")
    return folder


def build_index_v1(folder: Path, n: int = 300, bits: int = 64) -> Path:
    """A format-version-1 index file (header, ids, codes), written from its spec in
    docs/formats/index-file.md: files of the previous release must still load."""
    import struct
    import zlib

    rng = np.random.default_rng(1)
    ids = (np.arange(n, dtype="<i8") * 5 + 2).tobytes()
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8).tobytes()
    codes_offset = (64 + 8 * n + 63) // 64 * 64
    head = struct.pack("<8sIIIIQQQI", b"CMHASHIX", 1, 64, bits, bits // 8, n, 64, codes_offset,
                       zlib.crc32(codes, zlib.crc32(ids)))
    raw = head + struct.pack("<I", zlib.crc32(head)) + bytes(8) + ids
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db.cmhx").write_bytes(raw + bytes(codes_offset - len(raw)) + codes)
    return folder


def checkpoint_config(bits: int = 16, text_dim: int = 64) -> dict:
    """A heads-only DMsH-LN checkpoint config (frozen backbones: the offline preset's shape)."""
    from cmhash.zoo.backbones import get_config
    from cmhash.runtime.formats.checkpoint import FORMAT
    from cmhash.zoo.recipes import make_config

    recipe = make_config("dmsh", "offline", bits=bits, epochs=2)
    text = get_config("bow-mlp", input_dim=text_dim, out_dim=128)
    return {"format": FORMAT, "method": "dmsh", "bits": bits, "recipe": recipe.to_dict(),
            "modalities": ["image", "text"], "image_backbone": get_config("efficientnet-lite0").to_dict(),
            "text_backbone": text.to_dict(), "backbones_trained": False,
            "data": {"dataset": "coco-mini", "split_seed": 0}}


def build_checkpoint(folder: Path, seed: int = 0) -> Path:
    """config.json + model.safetensors + vocabulary.json (its BoW text tower's 64 words) + manifest.json,
    written by `CrossModalHasher.save_pretrained`."""
    import torch

    from cmhash.zoo.data import BowVocabulary
    from cmhash.zoo.model import CrossModalHasher

    torch.manual_seed(seed)
    vocabulary = BowVocabulary([f"word{i}" for i in range(64)])
    CrossModalHasher(checkpoint_config(), vocabulary=vocabulary).save_pretrained(folder)
    return folder


def build_published(folder: Path) -> Path:
    """A checkpoint folder as `cmhash publish` stages it: with its manifest.json."""
    from cmhash.runtime.formats.manifest import write_manifest

    build_checkpoint(folder)
    write_manifest(folder)
    return folder


def build_train_state(folder: Path) -> Path:
    """train_state.json + .safetensors via `save_state`, after one real Adam step (nested optimizer state)."""
    import torch

    from cmhash.zoo.model import CrossModalHasher
    from cmhash.zoo.state_io import save_state

    torch.manual_seed(0)
    model = CrossModalHasher(checkpoint_config())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    loss = sum(model("image", torch.randn(4, 1280)).sum() for _ in range(1))
    loss.backward()
    opt.step()
    sched.step()
    state = {"epoch": 3, "best": json.dumps({"epoch": 2, "score": 0.5}), "model": model.state_dict(),
             "recipe": {"optimizers": {"adam": opt.state_dict()}, "schedulers": {"adam": sched.state_dict()},
                        "rng": torch.get_rng_state()}}
    save_state(state, folder, "train_state")
    return folder


def build_export(folder: Path, work: Path, coco_root: Path) -> Path:
    """A real BoW-tower text export (ONNX, vocabulary.json, export.json) of a tiny checkpoint, plus the
    MiniLM tokenizer.json copied in as the export of a token tower would carry it."""
    import torch

    from cmhash.export.onnx import export_checkpoint
    from cmhash.zoo.backbones import build_backbone, get_config
    from cmhash.zoo.data import BowVocabulary, caption_docs, load_dataset
    from cmhash.zoo.data.vocab import default_tokenizer_file
    from cmhash.runtime.formats.checkpoint import FORMAT
    from cmhash.zoo.model import CrossModalHasher
    from cmhash.zoo.recipes import make_config

    torch.manual_seed(0)
    dataset = load_dataset(coco_root, check_images=False)
    vocab = BowVocabulary.build(caption_docs(dataset.texts), max_size=100)
    bow = get_config("bow-mlp", input_dim=len(vocab), out_dim=64)
    config = {"format": FORMAT, "method": "dcph", "bits": 16, "recipe": make_config("dcph", "paper", bits=16).to_dict(),
              "modalities": ["text"], "image_backbone": get_config("alexnet").to_dict(),
              "text_backbone": bow.to_dict(), "backbones_trained": True,
              "data": {"dataset": "coco-mini", "split_seed": 0}}
    ckpt = CrossModalHasher(config, {"text": build_backbone(bow)}).save_pretrained(work / "bow-ckpt")
    export_checkpoint(ckpt, folder, validate=False, vocabulary=vocab)
    shutil.copyfile(default_tokenizer_file(), folder / "tokenizer.json")
    return folder


def build_sidecar(folder: Path) -> Path:
    """`image.engine` (stand-in bytes) with its sidecar from `make_meta` + `write_sidecar`."""
    from cmhash.export.engine_meta import BuildOptions, make_meta
    from cmhash.runtime.formats.engine_sidecar import write_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image.onnx").write_bytes(b"onnx bytes")
    (folder / "image.engine").write_bytes(b"engine bytes" * 64)
    meta = make_meta(engine_path=folder / "image.engine", onnx_path=folder / "image.onnx", platform=built_platform(),
                     precision="fp16", precision_path="builder-flag-fp16",
                     profiles={"pixels": {"min": [1, 3, 224, 224], "opt": [32, 3, 224, 224], "max": [256, 3, 224, 224]}},
                     options=BuildOptions(), command="cmhash export trt exports/m", modality="image")
    write_sidecar(folder / "image.engine", meta)
    return folder


def built_platform():
    """The platform the sidecar's engine was "built" on; checking against it passes."""
    from cmhash.runtime.engine_meta import Platform

    return Platform("10.9.0.34", "12.8", "NVIDIA A100-SXM4-80GB", "8.0")


def build_coco(folder: Path, coco_root: Path, per_split: int = COCO_IMAGES) -> Path:
    """A coco-mini copy with `per_split` real images per split and their real annotations."""
    ann = folder / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split in ("train2017", "val2017"):
        caps = json.loads((coco_root / "annotations" / f"captions_{split}.json").read_text())
        inst = json.loads((coco_root / "annotations" / f"instances_{split}.json").read_text())
        keep = sorted(im["id"] for im in caps["images"])[:per_split]
        ids = set(keep)
        caps["images"] = [im for im in caps["images"] if im["id"] in ids]
        caps["annotations"] = [a for a in caps["annotations"] if a["image_id"] in ids]
        inst["images"] = [im for im in inst["images"] if im["id"] in ids]
        inst["annotations"] = [a for a in inst["annotations"] if a["image_id"] in ids]
        (ann / f"captions_{split}.json").write_text(json.dumps(caps))
        (ann / f"instances_{split}.json").write_text(json.dumps(inst))
        (folder / split).mkdir(exist_ok=True)
        for im in caps["images"]:
            shutil.copyfile(coco_root / split / im["file_name"], folder / split / im["file_name"])
    return folder


def build_mirflickr(folder: Path, mirflickr_root: Path, rows: int = MIRFLICKR_ROWS) -> Path:
    """The first `rows` pairs of MIRFlickr-25K in its DCMH .mat layout (v5, compressed, as released)."""
    import scipy.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    for key, name in (("LAll", "mirflickr25k-lall.mat"), ("YAll", "mirflickr25k-yall.mat")):
        value = sio.loadmat(str(mirflickr_root / name))[key][:rows]
        if key == "YAll":  # keep only the columns these rows use, so the tags still name every column
            value = value[:, value.any(axis=0)]
        sio.savemat(str(folder / name), {key: value}, do_compression=True)
    for name in ("all_tags.txt", "all_imgs.txt"):
        lines = (mirflickr_root / name).read_text(encoding="utf-8").splitlines()[:rows]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def build_codes(folder: Path, coco_root: Path) -> Path:
    """A `codes.npz` as `cmhash encode texts` writes it (runtime.formats.codes_file.save_codes): the codes of
    64 real coco-mini captions (random 64-bit codes stand in for an encoder's output)."""
    from cmhash.runtime.formats.codes_file import CodesFile, save_codes

    caps = json.loads((coco_root / "annotations" / "captions_val2017.json").read_text())
    items = [a["caption"].strip() for a in caps["annotations"][:64]]
    codes = np.random.default_rng(0).integers(0, 256, (len(items), 8), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    save_codes(folder / "codes.npz", CodesFile(codes, np.arange(len(items)) * 2, items, 64, "text", "dmsh", "export"))
    return folder
