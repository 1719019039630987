"""The pairwise baseline of docs/RECIPES.md, "Baselines": frozen features, a linear hash head per modality, and a plain
DCMH-style negative log-likelihood on θ_ij = ½·h_v,iᵀh_t,j.

    L = mean_ij( log(1 + exp(θ_ij)) − S_ij·θ_ij ),   S_ij = 1[y_iᵀy_j > 0]

No quantization or balance term (that is what "plain" means here): it shows how much of a method's
score comes from supervision alone, against the three recipes' more elaborate losses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from cmhash.errors import ConfigError, InvalidInputError
from cmhash.validators import code_bits, positive_int, positive_number
from cmhash.zoo.backbones import backbone_names
from cmhash.zoo.config_io import JsonConfig

__all__ = ["PairwiseConfig", "pairwise_nll"]


@dataclass(frozen=True)
class PairwiseConfig(JsonConfig):
    """Offline only: EfficientNet-Lite0 and MiniLM features under `tanh(Linear(d→K))` heads, Adam."""

    image_backbone: str = "efficientnet-lite0"
    text_backbone: str = "minilm-l6"
    bits: int = 64
    epochs: int = 30
    batch_size: int = 16
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("image_backbone", "text_backbone"):
            if getattr(self, name) not in backbone_names():
                raise ConfigError(f"PairwiseConfig.{name}={getattr(self, name)!r}: expected one of {backbone_names()}")
        code_bits(self.bits, error=ConfigError)
        for name in ("epochs", "batch_size"):
            positive_int(getattr(self, name), f"PairwiseConfig.{name}", error=ConfigError)
        positive_number(self.lr, "PairwiseConfig.lr", error=ConfigError)

    @classmethod
    def paper(cls, **changes: Any) -> "PairwiseConfig":
        """The baseline has no paper backbones of its own; it is the offline configuration."""
        return cls.offline(**changes)

    @classmethod
    def offline(cls, **changes: Any) -> "PairwiseConfig":
        return replace(cls(), **changes)


def pairwise_nll(h_v: torch.Tensor, h_t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean_ij softplus(θ_ij) − S_ij·θ_ij with θ = ½·h_v h_tᵀ (softplus keeps large θ finite)."""
    if h_v.shape != h_t.shape or h_v.ndim != 2 or labels.shape[0] != h_v.shape[0]:
        raise InvalidInputError(f"pairwise: h_v {tuple(h_v.shape)}, h_t {tuple(h_t.shape)} and labels "
                                f"{tuple(labels.shape)} must be B×K, B×K and B×C")
    y = labels.to(h_v.dtype)
    s = (y @ y.T > 0).to(h_v.dtype)
    theta = 0.5 * h_v @ h_t.T
    return (F.softplus(theta) - s * theta).mean()
