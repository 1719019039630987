"""DMsH-LN's Label-guided Network (LabelNet) and the project's label-to-code stage.

Architecture (docs/RECIPES.md, "Label-guided Network"): `Linear(C → (C+K)//2) → ReLU → Linear(→K)`, then `tanh(α·x)` with
`α = √(epoch+1)`, epoch counted from 0. The growing α is a continuation trick: the codes approach
±1 as training goes on.

In the authors' public code the network is never trained: its codes only build the boolean mask
`M = (G Gᵀ) > 0`, which carries no gradient. The project's Decision trains it first, in a
label-to-code stage (`train_label_stage`), so that its codes carry the label semantics:

    U      = LabelNet(Y, stage_epoch)            # B×K, α = √(stage_epoch+1)
    θ      = ½·U Uᵀ
    L_nll  = mean_ij( softplus(θ_ij) − P_ij·θ_ij )   # pairwise likelihood on P = 1[Y Yᵀ > 0]
    L_q    = mean_ik( (U_ik − sign(U_ik))² )          # quantization
    L      = L_nll + quant_weight·L_q

The pairwise likelihood was chosen over a multi-similarity loss because it acts on the raw inner
products, i.e. on exactly what the mask `UUᵀ > 0` thresholds (it pushes θ_ij > 0 for pairs that
share a label and < 0 otherwise). Optimizer: Adam (lr 1e-2 by default, no weight decay), shuffled mini-batches
of the training labels, the last partial batch dropped, seeded. The network is frozen afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cmhash.zoo.heads import sign_pm1
from cmhash.errors import InvalidInputError
from cmhash.validators import positive_int

__all__ = ["LabelNet", "label_stage_loss", "train_label_stage"]


class LabelNet(nn.Module):
    """Maps a multi-hot label vector to a K-bit code in (-1, 1)."""

    def __init__(self, num_classes: int, bits: int, seed: int | None = None) -> None:
        super().__init__()
        positive_int(num_classes, "LabelNet num_classes")
        positive_int(bits, "LabelNet bits")
        hidden = (num_classes + bits) // 2
        self.num_classes, self.bits = num_classes, bits
        self.net = nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        if seed is not None:
            self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """PyTorch's default Linear init, drawn from a private generator.

        A seeded generator makes the "random" LabelNet the same network on every run, whatever the
        global RNG state (it is a fixed part of the model, not noise).
        """
        g = torch.Generator().manual_seed(seed)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=g)

    @staticmethod
    def alpha(epoch: int) -> float:
        """α = √(epoch+1), epoch counted from 0."""
        if epoch < 0:
            raise InvalidInputError(f"epoch is counted from 0, got {epoch}")
        return math.sqrt(epoch + 1)

    def logits(self, labels: torch.Tensor) -> torch.Tensor:
        """The pre-tanh output; its sign is the binary code at any α."""
        return self.net(labels.to(self.net[0].weight.dtype))

    def forward(self, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return torch.tanh(self.alpha(epoch) * self.logits(labels))


def label_stage_loss(u: torch.Tensor, labels: torch.Tensor, quant_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Pairwise likelihood on P plus quantization (see the module docstring)."""
    y = labels.to(u.dtype)
    p = (y @ y.T > 0).to(u.dtype)
    theta = 0.5 * (u @ u.T)
    nll = (F.softplus(theta) - p * theta).mean()
    quant = (u - sign_pm1(u.detach())).pow(2).mean()
    total = nll + quant_weight * quant
    return total, {"label_nll": float(nll.detach()), "label_quant": float(quant.detach())}


def train_label_stage(
    net: LabelNet,
    train_labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    quant_weight: float,
    seed: int,
) -> dict[str, float]:
    """Train `net` on the training labels, then freeze it. Returns the last epoch's mean terms and
    the agreement of the resulting mask `sign(U)sign(U)ᵀ > 0` with P on (up to 2,048) training labels.

    α follows the stage's own epoch counter, so the codes end near ±1 as in the main training.
    """
    y = torch.as_tensor(train_labels)
    if y.ndim != 2 or y.shape[1] != net.num_classes or y.shape[0] < 2:
        raise InvalidInputError(
            f"label stage: train_labels must be N×{net.num_classes} with N >= 2, got shape {tuple(y.shape)}"
        )
    if epochs < 0:
        raise InvalidInputError(f"label stage: epochs must be >= 0, got {epochs}")
    device = net.net[0].weight.device
    y = y.to(device=device, dtype=torch.float32)
    n = y.shape[0]
    bs = min(batch_size, n)  # a set smaller than one batch trains on itself, full batch
    net.requires_grad_(True)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        sums: dict[str, float] = {}
        steps = n // bs
        for s in range(steps):
            yb = y[perm[s * bs:(s + 1) * bs]]
            loss, terms = label_stage_loss(net(yb, epoch), yb, quant_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / steps
        last = sums
    net.requires_grad_(False)
    net.eval()
    with torch.no_grad():
        ys = y[:2048]
        b = sign_pm1(net.logits(ys))
        agree = ((b @ b.T > 0) == (ys @ ys.T > 0)).float().mean()
    return {**last, "label_mask_agreement": float(agree)}
