"""AlexNet features + fc6 + fc7 (DCPH's image network before its hash layer), 4096-d.

Layer layout and key names follow torchvision's `alexnet`, so its ImageNet weights load once converted
to safetensors; fc8 (`classifier.6`) is dropped because the hash layer replaces it.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from cmhash.errors import ConfigError, WeightsError

from .config import BackboneConfig
from .weights import CONVERT_SNIPPET, load_safetensors, load_state_dict_checked

FC7 = 4096


class AlexNetFc7(nn.Module):
    """`forward(x)` with x B×3×224×224 -> B×4096 fc7 features (after ReLU; dropout only in training)."""

    out_dim = FC7

    def __init__(self, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, FC7),  # fc6: classifier.1
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(FC7, FC7),  # fc7: classifier.4
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def build_alexnet(
    config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
) -> AlexNetFc7:
    """ImageNet weights are required: a randomly initialized AlexNet would silently train a weak baseline."""
    if config.out_dim != FC7:
        raise ConfigError(f"{config.name}: AlexNet fc7 gives {FC7}-d features, config says {config.out_dim}")
    if weights is None:
        raise WeightsError(
            "the AlexNet backbone needs ImageNet weights that you supply: a .safetensors file in torchvision's "
            "key format (features.0.weight, ..., classifier.1.weight (fc6), classifier.4.weight (fc7); "
            "classifier.6 (fc8) is ignored). To convert torchvision's alexnet-owt-7be5be79.pth, a file you "
            f"trust, run once:\n{CONVERT_SNIPPET}"
        )
    model = AlexNetFc7()
    load_state_dict_checked(
        model, load_safetensors(weights), source=str(weights), ignore_prefixes=("classifier.6.",)
    )
    return model.eval()
