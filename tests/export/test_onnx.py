"""export/onnx.py: the exported folder, its files, metadata, axes and the in-graph packing."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from cmhash.errors import ExportError
from cmhash.export.encoders import BowEncoder, EncoderSpec, run_encoder_batch
from cmhash.export.onnx import export_encoder, quiet
from cmhash.export.runner import Runner, session
from cmhash.runtime.formats.export_manifest import check_files
from cmhash.runtime.formats.export_manifest import read_export_manifest as read_manifest
from cmhash.runtime.codes import pack
from cmhash.runtime.io import sha256_file
from cmhash.runtime.preprocess import ImagePreprocess
from cmhash.runtime.tokenize import TextTokenizer
from cmhash.zoo.backbones import get_config


def test_folder_holds_single_file_models_and_export_json(session_export):
    names = sorted(p.name for p in session_export.folder.iterdir())
    for name in ("image.onnx", "text.onnx", "image.fp16.onnx", "text.fp16.onnx", "tokenizer.json", "export.json",
                 "validation.json", "validation.fp16.json"):
        assert name in names
    assert not [n for n in names if n.endswith(".data")], "weights must stay inside the .onnx files"
    manifest = read_manifest(session_export.folder).data
    assert manifest["exporter"]["opset"] >= 18 and manifest["exporter"]["external_data"] is False
    assert set(manifest["exporter"]["versions"]) >= {"torch", "onnx", "onnxruntime"}
    assert manifest["bits"] == 16 and manifest["modalities"] == ["image", "text"]
    assert manifest["encoders"]["text"]["max_length"] == 64
    assert manifest["encoders"]["image"]["preprocess"]["crop"] == 224
    assert manifest["encoders"]["image"]["backbone"] == "efficientnet-lite0"
    assert manifest["encoders"]["text"]["backbone"] == "minilm-l6"
    assert manifest["validation"]["passed"] is True


def test_export_json_sha256s_match_the_files(session_export):
    manifest = read_manifest(session_export.folder)
    assert set(manifest.files) == {"image.onnx", "text.onnx", "tokenizer.json", "image.fp16.onnx", "text.fp16.onnx"}
    for name, entry in manifest.files.items():
        assert sha256_file(session_export.folder / name) == entry.sha256, name
    assert check_files(session_export.folder, manifest) == []
    src = session_export.checkpoint
    assert manifest.source.sha256 == {"model.safetensors": sha256_file(src / "model.safetensors"),
                                            "config.json": sha256_file(src / "config.json")}


@pytest.mark.parametrize("modality", ["image", "text"])
def test_onnx_metadata_props(session_export, modality):
    model = onnx.load(str(session_export.folder / f"{modality}.onnx"), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    config = json.loads((session_export.checkpoint / "config.json").read_text())
    assert meta["cmhash_version"] and meta["method"] == "dmsh" and meta["bits"] == "16"
    assert meta["modality"] == modality and meta["precision"] == "fp32"
    assert meta["source_model_sha256"] == sha256_file(session_export.checkpoint / "model.safetensors")
    assert meta["source_config_sha256"] == sha256_file(session_export.checkpoint / "config.json")
    backbone = config[f"{modality}_backbone"]
    assert json.loads(meta["backbone_config"]) == backbone
    if modality == "image":
        assert json.loads(meta["preprocess"]) == backbone["preprocess"]
    else:
        assert "tokenizer.json" in meta["tokenizer"] and backbone["tokenizer"] in meta["tokenizer"]
        assert meta["max_length"] == "64"
    assert model.opset_import[0].version >= 18
    assert [o.name for o in model.graph.output] == ["hash", "codes"]


def test_dynamic_batch_1_and_37_and_sequence_length(session_export):
    folder = session_export.folder
    manifest = read_manifest(folder)
    image = Runner(session(folder / "image.onnx"), ("pixels",))
    for n in (1, 37):
        h, c = image({"pixels": np.random.default_rng(n).standard_normal((n, 3, 224, 224)).astype(np.float32)})
        assert h.shape == (n, 16) and h.dtype == np.float32 and c.shape == (n, 2) and c.dtype == np.uint8
    text = Runner(session(folder / "text.onnx"), ("input_ids", "attention_mask"))
    for n, length in ((1, 5), (37, 40), (3, manifest.encoders["text"].max_length)):
        ids = np.full((n, length), 1000, np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        h, c = text({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert h.shape == (n, 16) and c.shape == (n, 2)
        np.testing.assert_array_equal(c, pack(h))


def test_onnx_codes_equal_pack_of_pytorch_values_on_real_inputs(session_export, reference_encoders):
    folder, ds = session_export.folder, session_export.dataset
    manifest = read_manifest(folder)
    pre = ImagePreprocess.from_dict(manifest.encoders["image"].preprocess)
    feed = {"pixels": pre(ds.images[:6])}
    h_t, _ = run_encoder_batch(reference_encoders["image"], feed)
    h, c = Runner(session(folder / "image.onnx"), ("pixels",))(feed)
    np.testing.assert_array_equal(c, pack(h_t))
    assert np.abs(h - h_t).max() <= 1e-4
    tok = TextTokenizer(folder / "tokenizer.json", 64)([t[0] for t in ds.texts[:6]])
    feed = {"input_ids": tok.input_ids, "attention_mask": tok.attention_mask}
    h_t, _ = run_encoder_batch(reference_encoders["text"], feed)
    _, c = Runner(session(folder / "text.onnx"), ("input_ids", "attention_mask"))(feed)
    np.testing.assert_array_equal(c, pack(h_t))


@pytest.fixture(scope="module")
def identity_export(tmp_path_factory):
    """A BoW-input encoder whose hash is its input: exact zeros reach the in-graph packing."""
    config = get_config("bow-mlp", input_dim=16, out_dim=16)
    spec = EncoderSpec("text", BowEncoder(nn.Identity(), nn.Identity(), 16).eval(), config, 16)
    path = tmp_path_factory.mktemp("identity") / "identity.onnx"
    export_encoder(spec, path, {"note": "identity"})
    return path


def test_in_graph_packing_maps_exact_zeros_to_one(identity_export):
    h = np.array([[0.0] * 16, [-0.0] * 16, [1e-30, -1e-30] * 8, [-1.0, 0.0, 2.0, -0.5] * 4,
                  [-1.0] * 16], np.float32)
    out_h, codes = Runner(session(identity_export), ("bow",))({"bow": h})
    np.testing.assert_array_equal(out_h, h)
    np.testing.assert_array_equal(codes, pack(h))
    assert codes[0].tolist() == [255, 255] and codes[1].tolist() == [255, 255] and codes[4].tolist() == [0, 0]


def test_exporter_chatter_stays_out_of_the_output(tmp_path, capfd):
    config = get_config("bow-mlp", input_dim=16, out_dim=8)
    spec = EncoderSpec("text", BowEncoder(nn.Identity(), nn.Linear(16, 8), 8).eval(), config, 8)
    capfd.readouterr()
    export_encoder(spec, tmp_path / "small.onnx", {})
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_export_failure_is_a_typed_error_with_the_exporter_log(tmp_path):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("no can do")

    config = get_config("bow-mlp", input_dim=16, out_dim=8)
    spec = EncoderSpec("text", BowEncoder(Broken(), nn.Identity(), 8).eval(), config, 8)
    with pytest.raises(ExportError, match="(?s)exporting the text encoder.*no can do") as info:
        export_encoder(spec, tmp_path / "broken.onnx", {})
    assert "\x1b[" not in str(info.value)
    assert not (tmp_path / "broken.onnx").exists()


def test_opset_below_18_is_refused(tmp_path):
    config = get_config("bow-mlp", input_dim=16, out_dim=8)
    spec = EncoderSpec("text", BowEncoder(nn.Identity(), nn.Identity(), 8), config, 8)
    with pytest.raises(ExportError, match=">= 18"):
        export_encoder(spec, tmp_path / "x.onnx", {}, opset=17)


def test_quiet_restores_logging_and_warnings():
    import logging
    import warnings

    before = logging.getLogger("torch.onnx").level
    with quiet() as buf:
        print("hidden")
        warnings.warn("hidden too")
    assert "hidden" in buf.getvalue()
    assert logging.getLogger("torch.onnx").level == before


# A runtime-only code path: export.json + onnxruntime + runtime.preprocess + TextTokenizer, with
# torch, cmhash.zoo and cmhash.export made unimportable.
SELF_CONTAINED = textwrap.dedent(
    """
    import json, sys
    BLOCKED = ("torch", "cmhash.zoo", "cmhash.export")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked import of {name}")

    sys.meta_path.insert(0, Blocker())
    from pathlib import Path
    import numpy as np
    import onnxruntime as ort
    from cmhash.runtime.preprocess import ImagePreprocess
    from cmhash.runtime.tokenize import TextTokenizer

    folder, images, captions = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
    manifest = json.loads((folder / "export.json").read_text())
    out = {}
    for modality, enc in manifest["encoders"].items():
        sess = ort.InferenceSession(str(folder / enc["files"]["fp32"]), providers=["CPUExecutionProvider"])
        if enc["input_kind"] == "pixels":
            feed = {enc["inputs"][0]: ImagePreprocess.from_dict(enc["preprocess"])(images)}
        else:
            tok = TextTokenizer(folder / enc["tokenizer"], enc["max_length"])(captions)
            feed = dict(zip(enc["inputs"], (tok.input_ids, tok.attention_mask)))
        h, codes = sess.run(["hash", "codes"], feed)
        assert codes.shape[1] * 8 == manifest["bits"]
        out[modality] = codes.tolist()
    leaked = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
    print(json.dumps({"codes": out, "leaked": leaked}))
    """
)


def test_export_folder_alone_runs_without_torch_or_the_checkpoint(session_export, reference_encoders, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("image.onnx", "text.onnx", "tokenizer.json", "export.json"):
        shutil.copy2(session_export.folder / name, alone / name)
    ds = session_export.dataset
    images = [str(p) for p in ds.images[:3]]
    captions = [t[0] for t in ds.texts[:3]]
    result = subprocess.run([sys.executable, "-c", SELF_CONTAINED, str(alone), json.dumps(images), json.dumps(captions)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["leaked"] == []
    pre = ImagePreprocess.from_dict(json.loads((alone / "export.json").read_text())["encoders"]["image"]["preprocess"])
    h_img, _ = run_encoder_batch(reference_encoders["image"], {"pixels": pre(images)})
    tok = TextTokenizer(session_export.folder / "tokenizer.json", 64)(captions)
    h_txt, _ = run_encoder_batch(reference_encoders["text"], {"input_ids": tok.input_ids,
                                                              "attention_mask": tok.attention_mask})
    assert got["codes"]["image"] == pack(h_img).tolist()
    assert got["codes"]["text"] == pack(h_txt).tolist()


def test_bow_tower_exports_with_its_vocabulary(tmp_path, coco_mini, isolated_env):
    """A BoW text tower (DCPH's paper text network) on a text-only checkpoint: bow input, vocabulary.json."""
    from cmhash.export.onnx import export_checkpoint
    from cmhash.zoo.backbones import build_backbone
    from cmhash.zoo.data import BowVocabulary
    from cmhash.runtime.formats.checkpoint import FORMAT
    from cmhash.zoo.model import CrossModalHasher
    from cmhash.zoo.recipes import make_config

    torch.manual_seed(0)
    bow_cfg = get_config("bow-mlp", input_dim=300, out_dim=256)
    recipe = make_config("dcph", "paper", bits=16)
    config = {"format": FORMAT, "method": "dcph", "bits": 16, "recipe": recipe.to_dict(), "modalities": ["text"],
              "image_backbone": get_config("alexnet").to_dict(), "text_backbone": bow_cfg.to_dict(),
              "backbones_trained": True, "data": {"dataset": "coco-mini", "split_seed": 0}}
    ckpt = CrossModalHasher(config, {"text": build_backbone(bow_cfg)}).save_pretrained(tmp_path / "ckpt")
    result = export_checkpoint(ckpt, tmp_path / "export", dataset=coco_mini)
    manifest = result.manifest
    assert manifest.modalities == ["text"] and manifest.encoders["text"].inputs == ("bow",)
    assert "vocabulary.json" in manifest.files and len(BowVocabulary.load(tmp_path / "export/vocabulary.json")) == 300
    assert result.validation["passed"] and result.validation["encoders"]["text"]["bit_agreement"] == 1.0


def _bow_checkpoint(folder, vocabulary):
    """A text-only DCPH checkpoint with a BoW tower of len(vocabulary) words, saved with `vocabulary`
    (None: saved without one, as format-1 checkpoints were)."""
    from cmhash.zoo.backbones import build_backbone
    from cmhash.zoo.model import CrossModalHasher
    from cmhash.zoo.recipes import make_config

    torch.manual_seed(0)
    bow_cfg = get_config("bow-mlp", input_dim=len(vocabulary or ["a"] * 50), out_dim=64)
    config = {"method": "dcph", "bits": 16, "recipe": make_config("dcph", "paper", bits=16).to_dict(),
              "modalities": ["text"], "image_backbone": get_config("alexnet").to_dict(),
              "text_backbone": bow_cfg.to_dict(), "backbones_trained": True,
              "data": {"dataset": "coco-mini", "split_seed": 0}, "format": "cmhash-hasher/2"}
    return CrossModalHasher(config, {"text": build_backbone(bow_cfg)}, vocabulary).save_pretrained(folder)


def test_a_bow_checkpoint_exports_with_no_dataset_present(tmp_path, monkeypatch, isolated_env):
    """The checkpoint carries its vocabulary: with the data folder empty, the export still writes it."""
    from cmhash import constants
    from cmhash.errors import DataNotFoundError
    from cmhash.export.onnx import export_checkpoint
    from cmhash.zoo.data import BowVocabulary

    vocab = BowVocabulary([f"word{i}" for i in range(50)])
    ckpt = _bow_checkpoint(tmp_path / "ckpt", vocab)
    assert (ckpt / "vocabulary.json").is_file() and "vocabulary.json" in json.loads((ckpt / "manifest.json").read_text())["files"]
    (tmp_path / "no-data").mkdir()
    monkeypatch.setattr(constants, "DATA_DIR", tmp_path / "no-data")
    result = export_checkpoint(ckpt, tmp_path / "export", validate=False)
    assert BowVocabulary.load(tmp_path / "export/vocabulary.json") == vocab
    assert result.manifest.encoders["text"].inputs == ("bow",)
    # The data really is hidden: a checkpoint without its vocabulary (format 1) needs it, and says so.
    old = _bow_checkpoint(tmp_path / "old", None)
    with pytest.raises(DataNotFoundError, match="coco-mini"):
        export_checkpoint(old, tmp_path / "export-old", validate=False)
