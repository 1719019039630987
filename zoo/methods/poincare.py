"""Poincaré-ball maths, the hierarchy projection head and the learnable proxies of DHaPH.

Every formula follows hyptorch's `pmath` (github.com/leymir/hyperbolic-image-embeddings), which the
DHaPH authors copy, including its small numerical guards, because they change values at the 1e-5
level that faithfulness is checked at:

* `artanh` clamps its input to (-1 + 1e-5, 1 - 1e-5) and back-propagates `1/(1 - x²)` at the
  clamped point (the gradient is not zeroed outside the clamp);
* Möbius addition divides by `denominator + 1e-5` (`eps`);
* `expmap0` clamps the norm at 1e-5 and `tanh` its argument at ±15;
* `project` pulls points back to radius `(1 - 1e-3)/√c`;
* the feature clip divides by `‖x‖ + 1e-5`.

Curvature `c` is an explicit argument here; hyptorch keeps it in a class attribute of
`RiemannianGradient`, shared by every ball in the process.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "HierarchyHead",
    "HyperbolicProxies",
    "ToPoincare",
    "artanh",
    "clip_norm",
    "dist_matrix",
    "expmap0",
    "mobius_add_batch",
    "project",
    "riemannian_gradient",
    "to_poincare",
]


class _Artanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clamp(-1 + 1e-5, 1 - 1e-5)
        ctx.save_for_backward(x)
        return 0.5 * (torch.log1p(x) - torch.log1p(-x))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output / (1 - x**2)


def artanh(x: torch.Tensor) -> torch.Tensor:
    """hyptorch's clamped artanh (see the module docstring for its gradient)."""
    return _Artanh.apply(x)


class _RiemannianGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, c: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.c = c
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        scale = (1 - ctx.c * x.pow(2).sum(-1, keepdim=True)).pow(2) / 4
        return grad_output * scale, None


def riemannian_gradient(x: torch.Tensor, c: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by `(1 - c‖x‖²)² / 4`.

    That is the inverse of the Poincaré metric's conformal factor squared, so a plain Euclidean
    optimizer (AdamW here) takes Riemannian steps on the ball's points.
    """
    return _RiemannianGradient.apply(x, c)


def clip_norm(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Scale rows with norm above `radius` down to it (feature clipping, arXiv 2107.11472)."""
    norm = torch.norm(x, dim=-1, keepdim=True) + 1e-5
    return x * torch.minimum(torch.ones_like(norm), radius / norm)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """Exponential map at the origin: `tanh(√c‖u‖)·u/(√c‖u‖)`."""
    sqrt_c = c**0.5
    u_norm = torch.clamp_min(u.norm(dim=-1, p=2, keepdim=True), 1e-5)
    return (sqrt_c * u_norm).clamp(-15, 15).tanh() * u / (sqrt_c * u_norm)


def project(x: torch.Tensor, c: float) -> torch.Tensor:
    """Pull points that rounding left on or outside the boundary back to radius `(1-1e-3)/√c`."""
    norm = torch.clamp_min(x.norm(dim=-1, keepdim=True, p=2), 1e-5)
    maxnorm = (1 - 1e-3) / (c**0.5)
    return torch.where(norm > maxnorm, x / norm * maxnorm, x)


def to_poincare(x: torch.Tensor, c: float, clip_r: float | None, riemannian: bool = True) -> torch.Tensor:
    """hyptorch's `ToPoincare(c, riemannian=True, clip_r)`: clip → expmap0 → project → Riemannian grad."""
    if clip_r is not None:
        x = clip_norm(x, clip_r)
    y = project(expmap0(x, c), c)
    return riemannian_gradient(y, c) if riemannian else y


def mobius_add_batch(x: torch.Tensor, y: torch.Tensor, c: float, eps: float = 1e-5) -> torch.Tensor:
    """All pairwise Möbius sums `x_i ⊕_c y_j`, shape (n, m, K) (hyptorch `_mobius_addition_batch`)."""
    xy = x @ y.T
    x2 = x.pow(2).sum(-1, keepdim=True)  # n × 1
    y2 = y.pow(2).sum(-1, keepdim=True).T  # 1 × m
    num = (1 + 2 * c * xy + c * y2).unsqueeze(2) * x.unsqueeze(1)
    num = num + (1 - c * x2).unsqueeze(2) * y.unsqueeze(0)
    denom = 1 + 2 * c * xy + c**2 * x2 * y2
    return num / (denom.unsqueeze(2) + eps)


def dist_matrix(x: torch.Tensor, y: torch.Tensor, c: float, eps: float = 1e-5) -> torch.Tensor:
    """Poincaré distances `(2/√c)·artanh(√c‖(−x_i) ⊕_c y_j‖)`, shape (n, m).

    Materialises the n×m×K Möbius sums as hyptorch does (a closed form for the norm loses precision
    to cancellation for nearby points). `eps=0` gives the textbook formula without hyptorch's guard.
    """
    sqrt_c = c**0.5
    return 2 / sqrt_c * artanh(sqrt_c * torch.norm(mobius_add_batch(-x, y, c, eps), dim=-1))


class ToPoincare(nn.Module):
    """Euclidean features → points of the Poincaré ball of curvature `-c` (no parameters)."""

    def __init__(self, c: float = 0.1, clip_r: float | None = 2.3, riemannian: bool = True) -> None:
        super().__init__()
        self.c, self.clip_r, self.riemannian = c, clip_r, riemannian

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_poincare(x, self.c, self.clip_r, self.riemannian)

    def extra_repr(self) -> str:
        return f"c={self.c}, clip_r={self.clip_r}, riemannian={self.riemannian}"


class HierarchyHead(nn.Module):
    """`LayerNorm(K, no affine) → Linear(K→K) → to-Poincaré`, shared by both modalities.

    The authors apply one head to image and text codes alike (their `HPmodel`), so the hierarchy
    of the two modalities lives in one ball with one set of proxies.
    """

    def __init__(self, n_bits: int, c: float = 0.1, clip_r: float = 2.3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(n_bits, elementwise_affine=False)
        self.linear = nn.Linear(n_bits, n_bits)
        self.to_ball = ToPoincare(c=c, clip_r=clip_r, riemannian=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.to_ball(self.linear(self.norm(h)))


class HyperbolicProxies(nn.Module):
    """Learnable proxies (candidate lowest common ancestors), stored in R^K and mapped to the ball.

    Initialised `randn(n, K)/√K · clip_r · 0.9`: norms near 0.9·clip_r, just inside the clip, so
    they start spread over the ball instead of piled at its centre.
    """

    def __init__(self, n_proxies: int, n_bits: int, c: float = 0.1, clip_r: float = 2.3,
                 init_scale: float = 0.9) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_proxies, n_bits) / math.sqrt(n_bits) * clip_r * init_scale)
        self.to_ball = ToPoincare(c=c, clip_r=clip_r, riemannian=True)

    def forward(self) -> torch.Tensor:
        return self.to_ball(self.weight)
