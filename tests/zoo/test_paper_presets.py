"""The paper presets are not dead code: one short run of each, end to end, on real coco-mini pairs.

The real paper backbones (ImageNet AlexNet, CLIP ViT-B/32) are user-supplied and far too large for
a test, so the runs use the same architectures with random weights: a full-size AlexNet fed 64-pixel
crops, and a tiny transformers CLIP (as in test_backbones.py) with the MiniLM tokenizer standing in
for CLIP's. Everything else is the paper preset: trained backbones, the paper's optimizers and
schedules, the checkpoint storing the backbones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cmhash.errors import WeightsError
from cmhash.runtime.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from cmhash.zoo.backbones import BackboneConfig, build_backbone, get_config, tokenizer_path
from cmhash.zoo.backbones.alexnet import AlexNetFc7
from cmhash.zoo.data import BowVocabulary, caption_docs, load_dataset, proportional_split
from cmhash.zoo.model import CrossModalHasher
from cmhash.zoo.recipes import make_config
from cmhash.zoo.scoring import evaluate_checkpoint
from cmhash.zoo.state_io import load_state
from cmhash.zoo.train import train

BITS = 16
N_PAIRS = 24  # proportional split: 5 queries, 19 database, 12 train = 2 val + 10 fit (2 batches of 5)
BATCH = 5

# A tiny CLIP whose text side reads MiniLM's WordPiece ids: [CLS]=101 starts, [SEP]=102 ends, [PAD]=0.
TINY_CLIP = {
    "projection_dim": 16,
    "vision_config": {
        "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu",
    },
    "text_config": {
        "vocab_size": 30522, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 40, "hidden_act": "quick_gelu",
        "bos_token_id": 101, "eos_token_id": 102, "pad_token_id": 0,
    },
}


@pytest.fixture(scope="module")
def pairs(coco_mini_root):
    dataset = load_dataset(coco_mini_root).subset(np.arange(N_PAIRS))
    assert proportional_split(len(dataset), 0).sizes()["fit"] == 2 * BATCH
    return dataset


def _trained_backbone_keys(state: dict, modality: str) -> list[str]:
    return sorted(k for k in state if k.startswith(f"towers.{modality}.backbone."))


def _changed(state: dict, initial: dict, modality: str) -> bool:
    """Whether the backbone tensors in `state` differ from the backbone's starting weights."""
    prefix = f"towers.{modality}.backbone."
    keys = _trained_backbone_keys(state, modality)
    assert keys and {k[len(prefix):] for k in keys} == set(initial), f"the {modality} backbone is stored whole"
    return any(not torch.equal(state[k], initial[k[len(prefix):]]) for k in keys)


def _last_epoch_model(out: Path) -> dict:
    return load_state(out, "train_state")["model"]


def _check_checkpoint(out: Path, result, weights: dict, initial: dict, configs: dict, dataset, tokenizer=None):
    """The common checks of a paper-preset run; returns config.json and the reloaded model."""
    saved = json.loads((out / "config.json").read_text())
    assert saved["backbones_trained"] is True
    for m in ("image", "text"):
        assert BackboneConfig.from_dict(saved[f"{m}_backbone"]) == configs[m]
    stored = load_file(str(out / "model.safetensors"))
    last = _last_epoch_model(out)
    for m in ("image", "text"):
        assert _changed(last, initial[m], m), f"the {m} backbone did not train"
    # Strict reload, with the backbones' starting weights naming their architecture.
    model = CrossModalHasher.from_pretrained(out, backbone_weights=weights)
    assert model.backbones_trained and all(model.towers[m].backbone is not None for m in ("image", "text"))
    state = model.state_dict()
    assert state.keys() == stored.keys()
    assert all(torch.equal(state[k], stored[k]) for k in stored)
    scores, _, _ = evaluate_checkpoint(out, dataset, backbone_weights=weights, tokenizer_file=tokenizer, progress=False)
    assert scores["score"] == pytest.approx(result.test["score"], abs=1e-9)
    assert 0.0 < result.test["score"] <= 1.0
    return saved, model


# ---------------------------------------------------------------- DCPH: AlexNet + BoW MLP, SGD


def test_dcph_paper_preset_trains_alexnet_and_the_bow_mlp(pairs, tmp_path):
    split = proportional_split(len(pairs), 0)
    docs = caption_docs(pairs.texts)
    words = len(BowVocabulary.build([docs[i] for i in split.fit]))
    input_dim = min(200, words)  # bag_of_words keeps the input_dim most frequent training words
    configs = {
        "image": get_config("alexnet", preprocess=ImagePreprocess(72, 64, "bilinear", IMAGENET_MEAN, IMAGENET_STD)),
        "text": get_config("bow-mlp", input_dim=input_dim),
    }
    torch.manual_seed(0)
    initial = {"image": {k: v.contiguous() for k, v in AlexNetFc7().state_dict().items()},
               "text": dict(build_backbone(configs["text"]).state_dict())}
    weights = {m: str(tmp_path / f"{m}.safetensors") for m in ("image", "text")}
    for m in ("image", "text"):
        save_file(initial[m], weights[m])

    config = make_config("dcph", "paper", bits=BITS, rounds=1, batch_size=BATCH, proxy_iterations=5, proxy_hidden=64)
    assert (config.image_backbone, config.text_backbone, config.train_backbones) == ("alexnet", "bow-mlp", True)
    out = tmp_path / "run"
    result = train("dcph", config, pairs, out, backbones=configs, backbone_weights=weights, progress=False)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["modalities"] for r in records] == [["image"], ["text"]]
    assert all(np.isfinite(v) for r in records for v in r["loss"].values())
    saved, _ = _check_checkpoint(out, result, weights, initial, configs, pairs)
    assert saved["text_backbone"]["input_dim"] == input_dim
    # The checkpoint carries its BoW vocabulary (checkpoint format 2): the training captions' top words.
    assert saved["vocabulary"] == "vocabulary.json"
    assert BowVocabulary.load(out / "vocabulary.json") == BowVocabulary.build([docs[i] for i in split.fit],
                                                                             max_size=input_dim)
    stored = load_file(str(out / "model.safetensors"))
    # Epoch 0 trains the image side, epoch 1 the text side: the checkpoint holds the selected epoch's.
    assert _changed(stored, initial["image"], "image")
    assert _changed(stored, initial["text"], "text") == (result.selected_epoch == 1)
    with pytest.raises(WeightsError, match="supply"):  # AlexNet's architecture needs its weights file
        CrossModalHasher.from_pretrained(out)


# ---------------------------------------------------------------- DHaPH and DMsH-LN: CLIP towers, BertAdam


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(backbone configs, weights paths, starting tower weights, tokenizer.json)."""
    import transformers

    torch.manual_seed(0)
    arch = {
        **TINY_CLIP,
        "vision_config": {**TINY_CLIP["vision_config"], "projection_dim": 16},
        "text_config": {**TINY_CLIP["text_config"], "projection_dim": 16},
    }
    model = transformers.CLIPModel(transformers.CLIPConfig(**arch)).eval()
    path = tmp_path_factory.mktemp("tiny-clip") / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    configs = {
        "image": get_config("clip-vit-b32-image", arch=TINY_CLIP, out_dim=16,
                            preprocess=ImagePreprocess(32, 32, "bicubic", CLIP_MEAN, CLIP_STD)),
        "text": get_config("clip-vit-b32-text", arch=TINY_CLIP, out_dim=16),
    }
    weights = {"image": str(path), "text": str(path)}
    initial = {m: dict(build_backbone(configs[m], path).state_dict()) for m in ("image", "text")}
    tokenizer = str(tokenizer_path(get_config("minilm-l6")))
    assert configs["text"].max_length <= TINY_CLIP["text_config"]["max_position_embeddings"]
    return configs, weights, initial, tokenizer


@pytest.mark.parametrize(
    "method, changes",
    [
        ("dhaph", dict(epochs=1, batch_size=BATCH, n_proxies=10)),
        ("dmsh", dict(epochs=1, batch_size=BATCH)),
    ],
)
def test_clip_paper_presets_fine_tune_both_towers(method, changes, pairs, tiny_clip, tmp_path):
    configs, weights, initial, tokenizer = tiny_clip
    config = make_config(method, "paper", bits=BITS, **changes)
    assert config.train_backbones is True
    assert (config.image_backbone, config.text_backbone) == ("clip-vit-b32-image", "clip-vit-b32-text")
    out = tmp_path / "run"
    result = train(method, config, pairs, out, backbones=configs, backbone_weights=weights,
                   tokenizer_file=tokenizer, progress=False)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["modalities"] == ["image", "text"]
    assert all(np.isfinite(v) for v in records[0]["loss"].values())
    saved, model = _check_checkpoint(out, result, weights, initial, configs, pairs, tokenizer)
    assert saved["recipe"] == config.to_dict()
    stored = load_file(str(out / "model.safetensors"))
    assert _changed(stored, initial["image"], "image") and _changed(stored, initial["text"], "text")

    # BertAdam with the paper's two groups: the backbones at lr_backbone, the heads at the head rate.
    groups = load_state(out, "train_state")["recipe"]["optimizers"]["bertadam"]["param_groups"]
    n_backbone = sum(len(list(model.towers[m].backbone.parameters())) for m in ("image", "text"))
    head_lr = config.lr_heads if method == "dhaph" else config.lr_head
    assert [g["initial_lr"] for g in groups] == [config.lr_backbone, head_lr]
    assert len(groups[0]["params"]) == n_backbone
