"""Backbone registry, configs, safe weight loading, BoW-MLP, AlexNet and (tiny, random) CLIP towers."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cmhash.errors import ConfigError, WeightsError
from cmhash.runtime.preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocess
from cmhash.zoo.backbones import (
    REGISTRY,
    BackboneConfig,
    backbone_names,
    build_backbone,
    build_tokenizer,
    get_config,
)
from cmhash.zoo.backbones.weights import load_safetensors

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- configs and registry


@pytest.mark.parametrize("name", backbone_names())
def test_config_round_trip(name):
    config = get_config(name)
    data = config.to_dict()
    text = json.dumps(data)  # JSON-safe as is: checkpoints and ONNX metadata store it
    again = BackboneConfig.from_dict(json.loads(text))
    assert again == config and again.to_dict() == data
    assert again.preprocess == config.preprocess and again.arch == config.arch


def test_registry_lists_every_backbone():
    assert set(backbone_names()) == {
        "efficientnet-lite0",
        "minilm-l6",
        "bow-mlp",
        "alexnet",
        "clip-vit-b32-image",
        "clip-vit-b32-text",
    }
    for name, (config, builder) in REGISTRY.items():
        assert config.name == name and callable(builder)
        assert (config.preprocess is not None) == (config.modality == "image")


def test_registry_values():
    lite = get_config("efficientnet-lite0").preprocess
    assert (lite.resize, lite.crop, lite.interpolation) == (256, 224, "bicubic")
    clip = get_config("clip-vit-b32-image").preprocess
    assert (clip.resize, clip.crop, clip.interpolation, clip.mean, clip.std) == (
        224,
        224,
        "bicubic",
        CLIP_MEAN,
        CLIP_STD,
    )
    assert get_config("clip-vit-b32-text").max_length == 32
    assert get_config("alexnet").out_dim == 4096 and get_config("minilm-l6").out_dim == 384


def test_config_validation():
    with pytest.raises(ConfigError, match="modality"):
        get_config("bow-mlp", modality="audio")
    with pytest.raises(ConfigError, match=r"BackboneConfig: unknown key\(s\) \['hidden'\]"):
        get_config("bow-mlp", hidden=5)
    with pytest.raises(ConfigError, match="input_dim"):
        get_config("bow-mlp", input_dim=0)
    with pytest.raises(ConfigError, match="ImagePreprocess"):
        get_config("alexnet", preprocess=None)
    with pytest.raises(ConfigError, match="max_length"):
        get_config("minilm-l6", max_length=1)
    with pytest.raises(ConfigError, match="unknown backbone"):
        get_config("resnet-50")
    data = get_config("minilm-l6").to_dict()
    with pytest.raises(ConfigError, match=r"BackboneConfig: unknown key\(s\) \['extra'\]"):
        BackboneConfig.from_dict({**data, "extra": 1})
    data = get_config("alexnet").to_dict()
    data["preprocess"]["interpolation"] = "lanczos"
    with pytest.raises(ConfigError):
        BackboneConfig.from_dict(data)


def test_registry_config_is_not_shared():
    config = get_config("clip-vit-b32-text")
    config.to_dict()["arch"]["projection_dim"] = 1
    assert get_config("clip-vit-b32-text").arch["projection_dim"] == 512


def test_build_from_dict_and_mismatched_config():
    model = build_backbone(get_config("bow-mlp", input_dim=10).to_dict())
    assert model.backbone_config == get_config("bow-mlp", input_dim=10)
    odd = BackboneConfig(
        name="bow-mlp", modality="image", input_kind="pixels", out_dim=8, preprocess=ImagePreprocess(8, 8)
    )
    with pytest.raises(ConfigError, match="bow-mlp is a text backbone"):
        build_backbone(odd)


def test_configs_load_without_torch():
    """Checkpoint/ONNX metadata readers and the CLI can use the registry where torch is absent."""
    probe = textwrap.dedent("""
        import json, sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name in ("torch", "transformers") or name.startswith(("torch.", "transformers.")):
                    raise ImportError(f"blocked import of {name}")
                return None

        sys.meta_path.insert(0, Blocker())
        from cmhash.zoo.backbones import BackboneConfig, backbone_names, build_backbone, get_config
        for name in backbone_names():
            assert BackboneConfig.from_dict(json.loads(json.dumps(get_config(name).to_dict()))) == get_config(name)
        try:
            build_backbone("bow-mlp")
        except ImportError as exc:
            print(type(exc).__name__)
        """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MissingDependencyError"


# ---------------------------------------------------------------- safe weight loading


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not even read")
    with pytest.raises(WeightsError, match="pickle") as err:
        load_safetensors(path)
    assert "weights_only=True" in str(err.value) and "save_file" in str(err.value)


def test_missing_or_bad_safetensors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_safetensors(tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="cannot read"):
        load_safetensors(bad)
    with pytest.raises(WeightsError, match=".safetensors"):
        load_safetensors(tmp_path / "weights.npz")


def _torch_load_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def test_only_one_torch_load_in_the_project():
    """Pickle loading is allowed once: the EfficientNet-Lite0 file shipped by its package, weights_only."""
    calls = [
        (str(path.relative_to(REPO)), line)
        for top in ("cmhash", "zoo", "runtime", "export")
        if (REPO / top).is_dir()
        for path in sorted((REPO / top).rglob("*.py"))
        for line in _torch_load_calls(path)
    ]
    assert [where for where, _ in calls] == ["zoo/backbones/weights.py"], calls
    source = (REPO / "zoo/backbones/weights.py").read_text(encoding="utf-8").splitlines()
    assert "weights_only=True" in source[calls[0][1] - 1]


# ---------------------------------------------------------------- BoW MLP


def test_bow_mlp_shapes_and_init():
    torch.manual_seed(0)
    model = build_backbone(get_config("bow-mlp", input_dim=1386))
    assert model.out_dim == 8192 and model.fc.weight.shape == (8192, 1386)
    w = model.fc.weight.detach()
    assert abs(w.mean().item()) < 1e-4 and abs(w.std().item() - 0.01) < 2e-4
    assert torch.count_nonzero(model.fc.bias) == 0
    x = (torch.rand(4, 1386) < 0.01).float()
    with torch.no_grad():
        f = model(x)
    assert f.shape == (4, 8192) and (f >= 0).all()


def test_bow_mlp_weights_round_trip(tmp_path):
    model = build_backbone(get_config("bow-mlp", input_dim=20))
    path = tmp_path / "bow.safetensors"
    save_file(model.state_dict(), str(path))
    again = build_backbone(get_config("bow-mlp", input_dim=20), weights=path)
    torch.testing.assert_close(again.fc.weight, model.fc.weight, rtol=0, atol=0)
    with pytest.raises(WeightsError, match="shape mismatch"):
        build_backbone(get_config("bow-mlp", input_dim=21), weights=path)


# ---------------------------------------------------------------- AlexNet


@pytest.fixture(scope="module")
def alexnet_state() -> dict[str, torch.Tensor]:
    """Random weights in torchvision's AlexNet key format, fc8 included (copy before changing)."""
    g = torch.Generator().manual_seed(0)
    shapes = {
        "features.0": (64, 3, 11, 11),
        "features.3": (192, 64, 5, 5),
        "features.6": (384, 192, 3, 3),
        "features.8": (256, 384, 3, 3),
        "features.10": (256, 256, 3, 3),
        "classifier.1": (4096, 9216),
        "classifier.4": (4096, 4096),
        "classifier.6": (1000, 4096),
    }
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * 0.01
        state[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    return state


def test_alexnet_loads_torchvision_format(alexnet_state, tmp_path):
    state = alexnet_state
    path = tmp_path / "alexnet.safetensors"
    save_file(state, str(path))
    model = build_backbone("alexnet", weights=path)
    assert model.out_dim == 4096 and not model.training
    torch.testing.assert_close(model.classifier[4].weight, state["classifier.4.weight"], rtol=0, atol=0)
    with torch.no_grad():
        f = model(torch.randn(2, 3, 224, 224))
        again = model(torch.randn(2, 3, 224, 224))
    assert f.shape == (2, 4096) and (f >= 0).all() and torch.isfinite(again).all()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)  # dropout off in eval


def test_alexnet_refuses_pickles_and_missing_weights(tmp_path):
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="pickle"):
        build_backbone("alexnet", weights=path)
    with pytest.raises(WeightsError, match="supply"):
        build_backbone("alexnet")


def test_alexnet_shape_and_key_errors(alexnet_state, tmp_path):
    state = {**alexnet_state, "classifier.1.weight": torch.zeros(4096, 9000)}
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(
        WeightsError, match=r"classifier\.1\.weight \(file \(4096, 9000\), model \(4096, 9216\)\)"
    ):
        build_backbone("alexnet", weights=path)
    state = {k: v for k, v in alexnet_state.items() if k != "features.3.bias"}
    state["fc.weight"] = torch.zeros(2)
    save_file(state, str(path))
    with pytest.raises(
        WeightsError, match=r"missing key\(s\): features\.3\.bias.*unexpected key\(s\): fc\.weight"
    ):
        build_backbone("alexnet", weights=path)


# ---------------------------------------------------------------- CLIP (tiny random configuration)

TINY = {
    "projection_dim": 16,
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
        "hidden_act": "quick_gelu",
    },
    "text_config": {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 40,
        "hidden_act": "quick_gelu",
        "bos_token_id": 97,
        "eos_token_id": 98,
        "pad_token_id": 1,
    },
}


def _tiny(name: str) -> BackboneConfig:
    changes = {"arch": TINY, "out_dim": 16}
    if name.endswith("image"):
        changes["preprocess"] = ImagePreprocess(32, 32, "bicubic", CLIP_MEAN, CLIP_STD)
    return get_config(name, **changes)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random tiny transformers CLIPModel, saved as HF-format safetensors and as a HF folder."""
    import transformers

    torch.manual_seed(0)
    arch = {
        **TINY,
        "vision_config": {**TINY["vision_config"], "projection_dim": 16},
        "text_config": {**TINY["text_config"], "projection_dim": 16},
    }
    model = transformers.CLIPModel(transformers.CLIPConfig(**arch)).eval()
    root = tmp_path_factory.mktemp("clip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "clip.safetensors"))
    model.save_pretrained(root / "hf")
    return model, root


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    # start, words, end, then padding (pad = end token, as CLIP's tokenizer pads)
    ids = torch.tensor([[97, 5, 6, 7, 98, 98, 98], [97, 40, 41, 42, 43, 44, 98]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    return ids, mask


def _reference(model, pixels, ids, mask):
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(input_ids=ids, attention_mask=mask).pooler_output)
    return image, text


@pytest.mark.parametrize("form", ["safetensors", "folder"])
def test_clip_towers_reproduce_clipmodel(tiny_clip, form):
    model, root = tiny_clip
    weights = root / ("clip.safetensors" if form == "safetensors" else "hf")
    image_tower = build_backbone(_tiny("clip-vit-b32-image"), weights=weights)
    text_tower = build_backbone(_tiny("clip-vit-b32-text"), weights=weights)
    assert image_tower.out_dim == text_tower.out_dim == 16
    pixels = torch.randn(3, 3, 32, 32)
    ids, mask = _tokens()
    with torch.no_grad():
        image, text = image_tower(pixels), text_tower(ids, mask)
    assert image.shape == (3, 16) and text.shape == (2, 16)
    ref_image, ref_text = _reference(model, pixels, ids, mask)
    torch.testing.assert_close(image, ref_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text, ref_text, rtol=1e-5, atol=1e-5)


def test_clip_text_feature_is_at_the_end_token(tiny_clip):
    _, root = tiny_clip
    tower = build_backbone(_tiny("clip-vit-b32-text"), weights=root / "clip.safetensors")
    ids, mask = _tokens()
    short_ids, short_mask = ids[:1, :5], mask[:1, :5]  # the same text without padding
    with torch.no_grad():
        torch.testing.assert_close(tower(short_ids, short_mask), tower(ids, mask)[:1], rtol=1e-5, atol=1e-5)
        changed = ids.clone()
        changed[0, 5:] = 3  # what follows the end token does not matter
        torch.testing.assert_close(tower(changed, mask)[:1], tower(ids, mask)[:1], rtol=1e-5, atol=1e-5)


def test_clip_strict_tower_loading(tiny_clip, tmp_path):
    # A file holding only the image tower builds that tower, not the text tower.
    model, _ = tiny_clip
    only_image = {
        k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(("vision_model.", "visual_"))
    }
    path = tmp_path / "image-only.safetensors"
    save_file(only_image, str(path))
    assert build_backbone(_tiny("clip-vit-b32-image"), weights=path)(torch.randn(1, 3, 32, 32)).shape == (
        1,
        16,
    )
    with pytest.raises(WeightsError, match="no text-tower weights"):
        build_backbone(_tiny("clip-vit-b32-text"), weights=path)
    del only_image["visual_projection.weight"]
    save_file(only_image, str(path))
    with pytest.raises(WeightsError, match=r"missing key\(s\): visual_projection\.weight"):
        build_backbone(_tiny("clip-vit-b32-image"), weights=path)


def test_clip_config_errors(tiny_clip):
    _, root = tiny_clip
    with pytest.raises(ConfigError, match="projection_dim"):
        build_backbone(_tiny("clip-vit-b32-image").replace(out_dim=512), weights=root / "clip.safetensors")
    with pytest.raises(ConfigError, match="crops"):
        build_backbone(_tiny("clip-vit-b32-image").replace(preprocess=ImagePreprocess(224, 224)))
    bad = {**TINY, "text_config": {**TINY["text_config"], "num_attention_heads": 5}}
    with pytest.raises(ConfigError, match="text_config"):
        build_backbone(_tiny("clip-vit-b32-text").replace(arch=bad), weights=root / "clip.safetensors")
    # Weights of another size do not fit the configured (full ViT-B/32) architecture.
    with pytest.raises(WeightsError, match="shape mismatch"):
        build_backbone("clip-vit-b32-image", weights=root / "clip.safetensors")


def test_clip_hub_weights_stay_offline(tmp_path):
    with pytest.raises(WeightsError, match="local Hugging Face cache only"):
        build_backbone(_tiny("clip-vit-b32-image"), weights="cmhash-test/no-such-clip")
    with pytest.raises(WeightsError, match="not found"):
        build_backbone(_tiny("clip-vit-b32-image"), weights=tmp_path / "no-such-folder")


def test_clip_tokenizer_reference(tmp_path):
    with pytest.raises(WeightsError, match="tokenizer_file"):
        build_tokenizer(get_config("clip-vit-b32-text", tokenizer="hub:cmhash-test/no-such-clip"))
    with pytest.raises(ConfigError, match="tokenizer_file"):
        build_tokenizer(get_config("clip-vit-b32-text", tokenizer="user"))
    with pytest.raises(ConfigError, match="not tokens"):
        build_tokenizer("bow-mlp")
