"""The two offline backbones with their REAL shipped weights, checked on real coco-mini data."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from cmhash.zoo.backbones import build_backbone, build_tokenizer, get_config
from cmhash.zoo.backbones.efficientnet_lite import same_padding

# COCO category -> ImageNet-1k class indices (0-based, the standard synset order).
_R = lambda a, b: set(range(a, b + 1))  # noqa: E731
COCO_TO_IMAGENET = {
    "dog": _R(151, 268),  # all dog breeds
    "cat": _R(281, 285),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "bear": _R(294, 297),  # brown, American black, ice, sloth bear
    "zebra": {340},
    "horse": {339, 603},  # sorrel, horse cart
    "sheep": _R(348, 349),  # ram, bighorn
    "cow": _R(345, 347),  # ox, water buffalo, bison
    "elephant": {101, 385, 386},  # tusker, Indian, African elephant
    "pizza": {963},
    "bus": {654, 779, 874},  # minibus, school bus, trolleybus
    "train": {
        466,
        547,
        565,
        705,
        820,
        829,
    },  # bullet train, electric loco, freight car, passenger car, steam loco, streetcar
    "teddy bear": {850},
    "banana": {954},
    "airplane": {404, 895, 908},  # airliner, warplane, wing
    "toilet": {861},  # toilet seat
    "broccoli": {937},
    "orange": {950},
    "motorcycle": {665, 670},  # moped, motor scooter
    "laptop": {620, 681},  # laptop, notebook
    "umbrella": {879},
}


def _main_subject_images(root: Path, min_fraction: float = 0.15) -> list[tuple[Path, str]]:
    """Images whose largest labelled category (by total mask area) has an ImageNet counterpart and
    covers at least `min_fraction` of the picture: the cases where a classifier should be right."""
    picked = []
    for split in ("train2017", "val2017"):
        data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        area: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for ann in data["annotations"]:
            area[ann["image_id"]][names[ann["category_id"]]] += ann["area"]
        for image in data["images"]:
            areas = area[image["id"]]
            if not areas:
                continue
            main = max(areas, key=areas.get)
            if main in COCO_TO_IMAGENET and areas[main] >= min_fraction * image["width"] * image["height"]:
                picked.append((root / split / image["file_name"], main))
    return picked


@pytest.fixture(scope="module")
def effnet():
    return build_backbone("efficientnet-lite0")


@pytest.fixture(scope="module")
def minilm():
    return build_backbone("minilm-l6"), build_tokenizer("minilm-l6")


def test_same_padding_is_tensorflow_same():
    assert same_padding(224, 3, 2) == (0, 1)  # asymmetric: TF pads more at the end
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(14, 3, 1) == (1, 1)
    assert same_padding(7, 5, 1) == (2, 2)
    assert same_padding(7, 1, 1) == (0, 0)


def test_efficientnet_features(effnet):
    assert effnet.out_dim == 1280 and not effnet.training
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = effnet(x)
        logits = effnet.classify(x)
    assert f.shape == (2, 1280) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and (f >= 0).all() and (f <= 6).all()  # mean of ReLU6 outputs
    assert logits.shape == (2, 1000)
    assert all(not m.training for m in effnet.modules())


def test_efficientnet_classifies_coco_mini(effnet, coco_mini_root):
    picked = _main_subject_images(coco_mini_root)
    assert 15 <= len(picked) <= 40, len(picked)
    paths = [p for p, _ in picked]
    pre = get_config("efficientnet-lite0").preprocess
    with torch.no_grad():
        prob = effnet.classify(torch.from_numpy(pre(paths))).softmax(dim=1)
    top5 = prob.topk(5, dim=1).indices.tolist()
    hits = [bool(COCO_TO_IMAGENET[label] & set(t)) for (_, label), t in zip(picked, top5)]
    misses = [(p.name, label, t) for (p, label), t, h in zip(picked, top5, hits) if not h]
    assert sum(hits) >= 0.75 * len(hits), f"{sum(hits)}/{len(hits)} right; misses: {misses}"



def test_efficientnet_loads_user_safetensors(effnet, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in effnet.state_dict().items()}, str(path))
    again = build_backbone("efficientnet-lite0", weights=path)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(again(x), effnet(x), rtol=0, atol=0)


def _captions(root: Path, n_images: int) -> list[list[str]]:
    data = json.loads((root / "annotations" / "captions_val2017.json").read_text())
    by_image: dict[int, list[str]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann["caption"].strip())
    groups = [caps[:5] for _, caps in sorted(by_image.items()) if len(caps) >= 5]
    return groups[:n_images]


def _encode(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts)
    with torch.no_grad():
        return model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))


def test_minilm_embeddings(minilm):
    model, tokenizer = minilm
    assert model.out_dim == 384 and not model.training
    assert all(not m.training for m in model.modules())  # dropout off
    e = _encode(model, tokenizer, ["A cat sleeping on a sofa.", "A kitten lies on the couch.", "A red car."])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    torch.testing.assert_close(_encode(model, tokenizer, ["A red car."]), e[2:], rtol=0, atol=1e-5)


def test_minilm_captions_of_one_image_are_closer(minilm, coco_mini_root):
    model, tokenizer = minilm
    groups = _captions(coco_mini_root, 40)
    assert len(groups) == 40
    e = _encode(model, tokenizer, [c for g in groups for c in g])
    sim = e @ e.T
    image = torch.arange(len(groups)).repeat_interleave(5)
    same = (image[:, None] == image[None, :]) & ~torch.eye(len(image), dtype=torch.bool)
    diff = image[:, None] != image[None, :]
    same_mean, diff_mean = sim[same].mean().item(), sim[diff].mean().item()
    assert same_mean > diff_mean + 0.3, (same_mean, diff_mean)
    per_image_same = torch.stack(
        [sim[image == i][:, image == i][~torch.eye(5, dtype=torch.bool)].mean() for i in range(40)]
    )
    per_image_diff = torch.stack([sim[image == i][:, image != i].mean() for i in range(40)])
    assert (per_image_same > per_image_diff).float().mean() >= 0.95


def test_minilm_does_not_depend_on_padding(minilm):
    model, tokenizer = minilm
    texts = [
        "A man riding a wave on top of a surfboard.",
        "Dog.",
        "Two giraffes standing next to each other in a field.",
    ]
    batch = _encode(model, tokenizer, texts)
    single = torch.cat([_encode(model, tokenizer, [t]) for t in texts])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-5)
    # Extra right padding up to max_length changes nothing either.
    b = tokenizer(texts)
    pad = tokenizer.max_length - b.input_ids.shape[1]
    ids = np.pad(b.input_ids, ((0, 0), (0, pad)), constant_values=tokenizer.pad_id)
    mask = np.pad(b.attention_mask, ((0, 0), (0, pad)))
    with torch.no_grad():
        padded = model(torch.from_numpy(ids), torch.from_numpy(mask))
    torch.testing.assert_close(padded, batch, rtol=0, atol=1e-5)


def test_minilm_loads_user_weights(minilm, tmp_path):
    from safetensors.torch import save_file

    model, tokenizer = minilm
    path = tmp_path / "minilm.safetensors"
    save_file({k: v.contiguous() for k, v in model.bert.state_dict().items()}, str(path))
    again = build_backbone("minilm-l6", weights=path)
    texts = ["A bowl of broccoli and carrots."]
    torch.testing.assert_close(
        _encode(again, tokenizer, texts), _encode(model, tokenizer, texts), rtol=0, atol=0
    )


def test_minilm_tokenizer_truncates_to_config_length(minilm):
    _, tokenizer = minilm
    assert tokenizer.max_length == get_config("minilm-l6").max_length
    b = tokenizer(["word " * 200, "short"])
    assert b.input_ids.shape[1] == tokenizer.max_length
    assert b.truncated.tolist() == [True, False]
