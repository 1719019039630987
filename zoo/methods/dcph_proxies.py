"""DCPH stage 1: proxy hash codes, one K-bit code per class (docs/RECIPES.md, "Stage 1: proxy codes").

PHNet maps the one-hot vector of class c to `u_c = PHNet(e_c)`; the proxy is `p_c = sign(u_c)`.
The authors ship only the resulting codes, so the training is the project's Decision, implemented
exactly: full-batch on `I_C` (so `U = PHNet(I_C)` is C×K), seeded,

    L = ||relu(U Uᵀ − K·I)||²_F / C²  +  0.05·||1ᵀU||² / C  +  β·||sign(U) − U||²_F / C,   β = 1

with SGD (lr 1e-3, weight decay 1e-5, momentum 0) and StepLR(100, 0.1) stepped per iteration, 200
iterations. The three terms: push the codes of different classes apart (the diagonal is ≤ 0 inside
the relu since |u| < 1, so only positive off-diagonal products count), balance every bit over the
classes, and pull U to ±1 (sign(U) is a constant: no gradient flows through it).

Measured (seed 0, this module's defaults): the proxies' off-diagonal inner products are those of the
sign pattern at initialisation. The quantization term (β = 1, /C) dominates the separation term (/C²)
and at lr 1e-3 no sign flips in 200 iterations, so the proxies are in effect random codes
(`ProxyReport.flipped` = 0). Max off-diagonal inner product: C=24: 10 (K=16), 12 (32), 20 (64);
C=80: 12 (K=16), 18 (32), 32 (64). Means lie in [−2, 0]. No two classes share a code, but only C=24,
K=64 is below K/2 (the authors' MIRFlickr 16-bit proxies span −10..12, much the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cmhash.zoo.heads import sign_pm1
from cmhash.errors import InvalidInputError
from cmhash.validators import positive_int

__all__ = ["PHNet", "ProxyReport", "proxy_loss", "proxy_report", "train_proxies"]


class PHNet(nn.Module):
    """`Linear(C→hidden) → ReLU → BatchNorm1d → Linear(hidden→K) → tanh`; hidden = 4096 in DCPH."""

    def __init__(self, num_classes: int, bits: int, hidden: int = 4096) -> None:
        super().__init__()
        positive_int(bits, "PHNet bits")
        positive_int(hidden, "PHNet hidden")
        if positive_int(num_classes, "PHNet num_classes") < 2:
            raise InvalidInputError(f"PHNet needs num_classes >= 2 (proxies must differ), got {num_classes}")
        self.num_classes, self.bits = num_classes, bits
        self.net = nn.Sequential(
            nn.Linear(num_classes, hidden), nn.ReLU(), nn.BatchNorm1d(hidden), nn.Linear(hidden, bits), nn.Tanh()
        )

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        return self.net(onehot)


def proxy_loss(u: torch.Tensor, beta: float = 1.0, balance_weight: float = 0.05) -> torch.Tensor:
    """The stage-1 loss on `U` (C×K), term by term as in docs/RECIPES.md, "Stage 1: proxy codes"."""
    c, k = u.shape
    eye = torch.eye(c, dtype=u.dtype, device=u.device)
    separation = torch.relu(u @ u.T - k * eye).pow(2).sum() / c**2
    balance = u.sum(dim=0).pow(2).sum() / c            # ||1ᵀU||²: column sums, squared, summed
    quantization = (sign_pm1(u.detach()) - u).pow(2).sum() / c
    return separation + balance_weight * balance + beta * quantization


@dataclass(frozen=True)
class ProxyReport:
    """Off-diagonal inner products `p_c·p_d` (c ≠ d) of the proxies, plus training diagnostics.

    `flipped` is the fraction of proxy bits whose sign differs from the untrained network's output:
    0 means training did not change the codes at all.
    """

    bits: int
    num_classes: int
    min: float
    max: float
    mean: float
    loss_start: float
    loss_end: float
    flipped: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def proxy_report(proxies: torch.Tensor) -> tuple[float, float, float]:
    """(min, max, mean) of the off-diagonal inner products of ±1 proxies (C×K)."""
    c = proxies.shape[0]
    if c < 2:
        raise InvalidInputError(f"need at least 2 proxies to compare, got {c}")
    g = proxies.double() @ proxies.double().T
    off = g[~torch.eye(c, dtype=torch.bool, device=g.device)]
    return float(off.min()), float(off.max()), float(off.mean())


def train_proxies(
    num_classes: int,
    bits: int,
    *,
    hidden: int = 4096,
    iterations: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    step_size: int = 100,
    step_gamma: float = 0.1,
    beta: float = 1.0,
    balance_weight: float = 0.05,
    seed: int = 0,
) -> tuple[torch.Tensor, ProxyReport]:
    """Train PHNet on `I_C` and return the proxies (C×K float32, ±1) and their report.

    Deterministic: the network is initialised under `seed` inside `fork_rng`, so the caller's global
    RNG is left as it was. BatchNorm runs in training mode throughout (batch statistics over the C
    classes), and the proxies come from one more forward in that same mode after the last update:
    that is the function the loss optimised (the running averages lag behind it and use the
    unbiased variance). Runs on CPU in float32; C×4096 is tiny.
    """
    if iterations < 0:
        raise InvalidInputError(f"iterations must be >= 0, got {iterations}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PHNet(num_classes, bits, hidden)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=step_gamma)
    onehot = torch.eye(num_classes)
    with torch.no_grad():
        u0 = net(onehot)
        loss_start = float(proxy_loss(u0, beta, balance_weight))
    for _ in range(iterations):
        loss = proxy_loss(net(onehot), beta, balance_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        u = net(onehot)
        loss_end = float(proxy_loss(u, beta, balance_weight))
    proxies = sign_pm1(u)
    lo, hi, mean = proxy_report(proxies)
    flipped = float((proxies != sign_pm1(u0)).double().mean())
    report = ProxyReport(bits, num_classes, lo, hi, mean, loss_start, loss_end, flipped)
    return proxies, report
