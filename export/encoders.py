"""The torch modules that get exported: one tower (backbone + hash head) plus in-graph bit packing.

Each encoder returns `(hash, codes)`: the continuous tanh values and the packed uint8 codes. The
packing is part of the graph so that a deployed model hands out codes directly, and it follows
`cmhash.runtime.codes.pack` exactly: bit j is `h_j >= 0` (so sign(0) = +1, and -0.0 too), stored in
byte j // 8, least significant bit first (FAISS layout).

Why a matmul with powers of two and not integer ops: every exporter and runtime (onnxruntime,
TensorRT, the fp16 converter) handles float MatMul + Cast, and the sums are integers <= 255, exact in
float32 and float16 alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cmhash.errors import ConfigError
from cmhash.runtime.codes import check_bits
from cmhash.zoo.backbones import BackboneConfig, build_backbone

INPUT_NAMES = {"pixels": ("pixels",), "tokens": ("input_ids", "attention_mask"), "bow": ("bow",)}
OUTPUT_NAMES = ("hash", "codes")


def packing_matrix(bits: int) -> torch.Tensor:
    """(bits, bits // 8) float matrix: column b sums 2**(j % 8) over the bits j of byte b."""
    check_bits(bits)
    w = torch.zeros(bits, bits // 8)
    for j in range(bits):
        w[j, j // 8] = float(1 << (j % 8))
    return w


class PackBits(nn.Module):
    """(n, bits) float hash values -> (n, bits // 8) uint8 codes in the layout of runtime.codes.pack."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.register_buffer("weights", packing_matrix(bits), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        ones = (h >= 0).to(h.dtype)  # NaN compares False; runtime.codes.pack refuses NaN outright
        return torch.matmul(ones, self.weights.to(h.dtype)).to(torch.uint8)


class _Encoder(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, bits: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pack = PackBits(bits)

    def _outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(features)
        return h, self.pack(h)


class PixelEncoder(_Encoder):
    """`forward(pixels)`: B×3×H×W float32 from `ImagePreprocess`."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._outputs(self.backbone(pixels))


class TokenEncoder(_Encoder):
    """`forward(input_ids, attention_mask)`: B×L int64 each, from the tokenizer in the export folder."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._outputs(self.backbone(input_ids, attention_mask))


class BowEncoder(_Encoder):
    """`forward(bow)`: B×V float32 binary bag-of-words over the export folder's vocabulary."""

    def forward(self, bow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._outputs(self.backbone(bow))


_CLASSES = {"pixels": PixelEncoder, "tokens": TokenEncoder, "bow": BowEncoder}


@dataclass
class EncoderSpec:
    """One modality's exportable encoder and what it eats."""

    modality: str
    module: nn.Module
    config: BackboneConfig
    bits: int

    @property
    def input_kind(self) -> str:
        return self.config.input_kind

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES[self.config.input_kind]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Tracing inputs: batch 2 (and sequence 8), so no dimension is specialised to 1."""
        c = self.config
        if c.input_kind == "pixels":
            size = c.preprocess.crop
            return (torch.zeros(2, 3, size, size),)
        if c.input_kind == "tokens":
            ids = torch.full((2, 8), 101, dtype=torch.int64)
            mask = torch.ones(2, 8, dtype=torch.int64)
            mask[1, 6:] = 0
            return ids, mask
        return (torch.zeros(2, c.input_dim),)

    def dynamic_shapes(self) -> dict[str, Any]:
        """A named batch axis for every input, and a named sequence axis for token inputs."""
        batch = torch.export.Dim("batch")
        if self.config.input_kind == "tokens":
            seq = torch.export.Dim("sequence", max=self.config.max_length)
            return {name: {0: batch, 1: seq} for name in self.input_names}
        return {name: {0: batch} for name in self.input_names}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The same axes as data, for the metadata and the validator."""
        if self.config.input_kind == "tokens":
            return {name: {0: "batch", 1: "sequence"} for name in self.input_names}
        return {name: {0: "batch"} for name in self.input_names}


def build_encoders(model: nn.Module, backbone_weights: dict[str, str] | None = None) -> dict[str, EncoderSpec]:
    """The exportable encoder of every tower of a loaded `CrossModalHasher`, in eval mode.

    Frozen (offline) backbones are not in the checkpoint: they are rebuilt from their config, which
    pins the same weights source the features were computed with.
    """
    specs: dict[str, EncoderSpec] = {}
    for modality, tower in model.towers.items():
        config = model.backbone_configs[modality]
        if config.input_kind not in _CLASSES:
            raise ConfigError(f"cannot export a {config.input_kind!r} tower ({config.name})")
        backbone = tower.backbone
        if backbone is None:
            backbone = build_backbone(config, (backbone_weights or {}).get(modality))
        module = _CLASSES[config.input_kind](backbone, tower.head, model.bits).eval()
        specs[modality] = EncoderSpec(modality, module, config, model.bits)
    return specs


@torch.no_grad()
def run_encoder_batch(spec: EncoderSpec, feed: dict[str, Any]) -> tuple[Any, Any]:
    """PyTorch reference outputs of one batch (numpy feed by input name): (hash float32, codes uint8)."""
    import numpy as np

    args = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in spec.input_names]
    h, c = spec.module(*args)
    return h.float().numpy(), c.numpy()
