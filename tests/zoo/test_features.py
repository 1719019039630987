"""Feature caching (cmhash.zoo.features) with the REAL packaged backbones on real coco-mini images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmhash import constants
from cmhash.runtime.preprocess import ImagePreprocess
from cmhash.zoo import features
from cmhash.zoo.backbones import build_backbone, build_tokenizer, get_config
from cmhash.zoo.data import read_coco

N = 6


@pytest.fixture(scope="module")
def coco6(coco_mini_root):
    data = read_coco(coco_mini_root, splits=("val2017",))
    return data.subset(np.arange(N))


@pytest.fixture(scope="module")
def effnet():
    return build_backbone("efficientnet-lite0")


@pytest.fixture
def builds(monkeypatch):
    """Count real `build_backbone` calls made by zoo.features (the real function still runs)."""
    calls: list[str] = []
    real = features.build_backbone

    def counting(config, *args, **kwargs):
        calls.append(config.name)
        return real(config, *args, **kwargs)

    monkeypatch.setattr(features, "build_backbone", counting)
    return calls


@pytest.fixture
def images(coco6, tmp_path) -> list[Path]:
    out = []
    for p in coco6.images:
        dst = tmp_path / "img" / p.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(p, dst)
        out.append(dst)
    return out


def test_cache_path_defaults_to_the_settings_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "CACHE_DIR", tmp_path)
    assert features.cache_path(get_config("minilm-l6"), "k").parent == tmp_path / "features"
    assert features.cache_path(get_config("minilm-l6"), "k", tmp_path / "x").parent == tmp_path / "x"


def test_image_cache_miss_then_hit_and_equals_direct_forward(images, builds, tmp_path, effnet):
    config = get_config("efficientnet-lite0")
    cache = tmp_path / "cache"
    first = features.cached_image_features(config, images, cache, progress=False)
    assert first.shape == (N, 1280) and first.dtype == np.float32
    assert builds == ["efficientnet-lite0"]
    (entry,) = list(cache.glob("*.safetensors"))
    mtime = entry.stat().st_mtime_ns

    second = features.cached_image_features(config, images, cache, progress=False)
    assert builds == ["efficientnet-lite0"], "a cache hit must not build the backbone"
    assert entry.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first, second)

    with torch.no_grad():
        direct = effnet.eval()(torch.from_numpy(config.preprocess(images))).numpy()
    assert np.abs(first - direct).max() < 1e-5


def test_changed_image_byte_changes_key_and_is_reencoded(images, builds, tmp_path):
    config = get_config("efficientnet-lite0")
    cache = tmp_path / "cache"
    key = features.image_cache_key(config, images)
    assert features.image_cache_key(config, images) == key  # deterministic
    features.cached_image_features(config, images, cache, progress=False)
    with open(images[3], "ab") as fh:  # a trailing byte after the JPEG end marker: still decodable
        fh.write(b"\x00")
    assert features.image_cache_key(config, images) != key
    features.cached_image_features(config, images, cache, progress=False)
    assert len(builds) == 2
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_preprocessing_and_order_change_key(images):
    config = get_config("efficientnet-lite0")
    key = features.image_cache_key(config, images)
    bilinear = config.replace(preprocess=ImagePreprocess(resize=256, crop=224, interpolation="bilinear"))
    assert features.image_cache_key(bilinear, images) != key
    smaller = config.replace(preprocess=ImagePreprocess(resize=240, crop=224, interpolation="bicubic"))
    assert features.image_cache_key(smaller, images) != key
    assert features.image_cache_key(config, images[::-1]) != key


def test_corrupt_cache_file_is_reencoded(images, builds, tmp_path):
    config = get_config("efficientnet-lite0")
    cache = tmp_path / "cache"
    first = features.cached_image_features(config, images, cache, progress=False)
    (entry,) = list(cache.glob("*.safetensors"))
    for garbage in (b"not a safetensors file", entry.read_bytes()[: entry.stat().st_size // 2]):
        entry.write_bytes(garbage)
        again = features.cached_image_features(config, images, cache, progress=False)
        np.testing.assert_allclose(again, first, rtol=0, atol=1e-6)
    assert len(builds) == 3
    # the overwritten entry is valid again: the next call is a hit
    features.cached_image_features(config, images, cache, progress=False)
    assert len(builds) == 3


def test_text_cache_miss_hit_mask_and_direct_forward(coco6, builds, tmp_path):
    config = get_config("minilm-l6")
    cache = tmp_path / "cache"
    captions = [list(c) for c in coco6.texts]
    captions[1] = captions[1][:2]  # ragged: exercises the mask
    feats, mask = features.cached_text_features(config, captions, cache, progress=False)
    m = max(len(c) for c in captions)
    assert feats.shape == (N, m, 384) and feats.dtype == np.float32
    assert mask.shape == (N, m) and mask.dtype == bool
    assert mask.sum(axis=1).tolist() == [len(c) for c in captions]
    assert not feats[~mask].any()
    assert builds == ["minilm-l6"]

    feats2, mask2 = features.cached_text_features(config, captions, cache, progress=False)
    assert builds == ["minilm-l6"]
    np.testing.assert_array_equal(feats, feats2)
    np.testing.assert_array_equal(mask, mask2)

    flat = [c for g in captions for c in g]
    model, tokenizer = build_backbone(config), build_tokenizer(config)
    batch = tokenizer(flat)
    with torch.no_grad():
        direct = model(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)).numpy()
    assert np.abs(feats[mask] - direct).max() < 1e-5
    # encode_texts batches differently from the single direct batch; padding must not matter
    small = features.encode_texts(config, flat, batch_size=3, progress=False, model=model)
    assert np.abs(small - direct).max() < 1e-5


def test_text_key_depends_on_strings_grouping_and_config(coco6):
    config = get_config("minilm-l6")
    captions = [list(c) for c in coco6.texts]
    key = features.text_cache_key(config, captions)
    changed = [list(c) for c in captions]
    changed[2][0] = changed[2][0] + " "
    assert features.text_cache_key(config, changed) != key
    regrouped = [captions[0] + captions[1][:1], captions[1][1:]] + captions[2:]
    assert features.text_cache_key(config, regrouped) != key
    assert features.text_cache_key(config.replace(max_length=32), captions) != key


def test_wrong_modality_and_bad_captions_raise(images):
    from cmhash.errors import ConfigError, InvalidInputError

    with pytest.raises(ConfigError):
        features.image_cache_key(get_config("minilm-l6"), images)
    with pytest.raises(InvalidInputError):
        features.text_cache_key(get_config("minilm-l6"), ["a caption, not a list"])


def test_progress_bar_runs(images):
    out = features.encode_images(get_config("efficientnet-lite0"), images[:2], batch_size=1, progress=True)
    assert out.shape == (2, 1280)
