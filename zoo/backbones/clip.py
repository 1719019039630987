"""CLIP ViT-B/32 image and text towers (DHaPH and DMsH-LN's paper backbones), built with transformers.

Each tower returns CLIP's projected embedding, unnormalized (as OpenAI's `encode_image`/`encode_text`):
the image tower the class-token feature, the text tower the feature at the end token (what HF's
pooled output does). Weights come from the user: a .safetensors file in HF `CLIPModel` key format,
a local HF folder, or a Hub id read from the local cache (downloaded only when the caller allows it).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cmhash.errors import ConfigError, WeightsError, require

from .config import BackboneConfig
from .weights import (
    PICKLE_SUFFIXES,
    check_loading_info,
    load_safetensors,
    load_state_dict_checked,
    quiet_transformers,
)

_TOWERS = {
    # tower: (sub-config key, transformers class, key prefixes of its weights in a CLIPModel state dict)
    "image": ("vision_config", "CLIPVisionModelWithProjection", ("vision_model.", "visual_projection.")),
    "text": ("text_config", "CLIPTextModelWithProjection", ("text_model.", "text_projection.")),
}
_CHECKED = ("hidden_size", "num_hidden_layers", "projection_dim", "image_size", "patch_size", "vocab_size")


def hf_tower_config(arch: Mapping[str, Any], tower: str):
    """The transformers sub-config of one tower, with the top-level projection_dim pushed into it."""
    transformers = require("transformers", "train", "The CLIP backbone")
    key = _TOWERS[tower][0]
    sub = copy.deepcopy(dict(arch.get(key) or {}))
    if "projection_dim" in arch:
        sub["projection_dim"] = arch["projection_dim"]
    cls = transformers.CLIPVisionConfig if tower == "image" else transformers.CLIPTextConfig
    try:
        return cls(**sub)
    except Exception as exc:  # transformers' strict dataclasses raise their own error types
        raise ConfigError(f"invalid CLIP {key} {sub!r}: {exc}") from exc


class CLIPImageTower(nn.Module):
    """`forward(pixels)` with B×3×S×S CLIP-normalized pixels -> B×projection_dim `image_embeds`."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.clip = hf_model
        self.out_dim = int(hf_model.config.projection_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip(pixel_values=pixels).image_embeds


class CLIPTextTower(nn.Module):
    """`forward(input_ids, attention_mask)` -> B×projection_dim `text_embeds` (end-token feature)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.clip = hf_model
        self.out_dim = int(hf_model.config.projection_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clip(input_ids=input_ids, attention_mask=attention_mask).text_embeds


def _weights_source(config: BackboneConfig, weights: str | os.PathLike | None) -> tuple[str, str]:
    """("file" | "dir" | "hub", value) for the weights argument, or the config's default Hub id."""
    if weights is None:
        if config.weights.startswith("hub:"):
            return "hub", config.weights[len("hub:") :]
        raise WeightsError(
            f"{config.name}: pass the CLIP weights (a .safetensors file, a HF folder or a Hub id)"
        )
    path = Path(weights)
    if path.suffix.lower() in PICKLE_SUFFIXES + (".safetensors",):
        return "file", str(path)
    if path.is_dir():
        return "dir", str(path)
    if path.exists():
        raise WeightsError(
            f"CLIP weights must be a .safetensors file, a HF folder or a Hub id, got the file {path}"
        )
    text = str(weights)
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise WeightsError(
            f"CLIP weights not found: {text} (expected a .safetensors file, a HF folder, "
            "or a Hub id such as 'openai/clip-vit-base-patch32')"
        )
    return "hub", text


def _check_arch(model: nn.Module, expected, source: str) -> None:
    got = model.config
    diff = [
        f"{k}: {getattr(got, k)} (weights) vs {getattr(expected, k)} (config)"
        for k in _CHECKED
        if hasattr(expected, k) and getattr(got, k, None) != getattr(expected, k)
    ]
    if diff:
        raise WeightsError(
            f"the CLIP model from {source} is not the configured architecture: " + "; ".join(diff)
        )


def _build_tower(config: BackboneConfig, weights, allow_download: bool, tower: str) -> nn.Module:
    transformers = require("transformers", "train", "The CLIP backbone")
    hf_config = hf_tower_config(config.arch, tower)
    if int(hf_config.projection_dim) != config.out_dim:
        raise ConfigError(
            f"{config.name}: projection_dim is {hf_config.projection_dim}, config says out_dim {config.out_dim}"
        )
    if tower == "image" and int(hf_config.image_size) != config.preprocess.crop:
        raise ConfigError(
            f"{config.name}: the model takes {hf_config.image_size}² images, preprocessing crops {config.preprocess.crop}"
        )
    if tower == "text" and config.max_length > int(hf_config.max_position_embeddings):
        raise ConfigError(
            f"{config.name}: max_length {config.max_length} exceeds {hf_config.max_position_embeddings} positions"
        )
    _, cls_name, own = _TOWERS[tower]
    cls = getattr(transformers, cls_name)
    kind, value = _weights_source(config, weights)
    with quiet_transformers():
        if kind == "file":
            state = load_safetensors(value)
            mine = {k: v for k, v in state.items() if k.startswith(own)}  # drops the other tower, logit_scale
            if not mine:
                raise WeightsError(
                    f"{value} holds no {tower}-tower weights in HF CLIPModel key format ({own[0]}*, {own[1]}weight); "
                    f"its keys look like: {', '.join(sorted(state)[:5])}"
                )
            # Older checkpoints also saved the position_ids buffers, which are not weights.
            mine = {k: v for k, v in mine.items() if not k.endswith(".position_ids")}
            model = cls(hf_config)
            load_state_dict_checked(model, mine, source=value)
        else:
            try:
                model, info = cls.from_pretrained(
                    value, local_files_only=not allow_download, output_loading_info=True
                )
            except (OSError, ValueError) as exc:
                hint = "" if allow_download else (
                    " (looked in the local Hugging Face cache only; pass allow_download=True to fetch it)"
                )
                raise WeightsError(f"cannot load CLIP weights from {value!r}{hint}: {exc}") from exc
            other = _TOWERS["text" if tower == "image" else "image"][2]
            check_loading_info(info, source=value, allowed_unexpected=other + ("logit_scale",))
            _check_arch(model, hf_config, value)
    return model.eval()


def build_clip_image(
    config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
) -> CLIPImageTower:
    return CLIPImageTower(_build_tower(config, weights, allow_download, "image")).eval()


def build_clip_text(
    config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
) -> CLIPTextTower:
    return CLIPTextTower(_build_tower(config, weights, allow_download, "text")).eval()
