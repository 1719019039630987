"""Bag-of-words MLP, DCPH's text network without its last layer: `Linear(d→8192), ReLU`.

The final `Linear(8192→K)` is the hash head, built by the recipe; splitting there lets every recipe
put its own head on the same feature, as with the image backbones.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from cmhash.errors import ConfigError
from cmhash.validators import positive_int

from .config import BackboneConfig
from .weights import load_safetensors, load_state_dict_checked

INIT_STD = 0.01  # DCPH initializes its text layers with N(0, 0.01) (standard deviation) and zero bias


class BowMLP(nn.Module):
    """`forward(x)` with x a B×input_dim float tag vector -> B×hidden ReLU features."""

    def __init__(self, input_dim: int, hidden: int = 8192):
        super().__init__()
        positive_int(input_dim, "BowMLP input_dim")
        positive_int(hidden, "BowMLP hidden")
        self.input_dim, self.out_dim = input_dim, hidden
        self.fc = nn.Linear(input_dim, hidden)
        self.act = nn.ReLU()
        nn.init.normal_(self.fc.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


def build_bow_mlp(
    config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
) -> BowMLP:
    """Fresh N(0, 0.01) weights (seed torch first for reproducibility), or a .safetensors file."""
    if config.input_kind != "bow":
        raise ConfigError(
            f"{config.name}: the BoW MLP takes bag-of-words input, config says {config.input_kind!r}"
        )
    model = BowMLP(config.input_dim, config.out_dim)
    if weights is not None:
        load_state_dict_checked(model, load_safetensors(weights), source=str(weights))
    return model.eval()
