"""The CLIP pipeline's optimizer ("BertAdam"), shared by DHaPH and DMsH-LN.

docs/RECIPES.md, "Optimizer of the CLIP pipeline": Adam with β=(0.9, 0.98), eps=1e-6, decoupled weight
decay 0.2 on every parameter, lr 1e-5 for the backbone and 1e-3 for the heads, the gradient norm
clipped to 1.0 per parameter tensor, warmup over the first 10% of steps, then
`lr·0.5·(1+cos(π·x))` with x = step/total.

The authors' code uses the BertAdam of CLIP4Clip, whose update differs from `torch.optim.AdamW` in
three small ways, all reproduced here (`BertAdam`) because they change the trajectory:

* no bias correction of the moments (BERT's Adam famously omits it);
* eps is added to `sqrt(v)` (not to a bias-corrected `sqrt(v̂)`);
* the weight decay is added to the Adam direction and scaled by the scheduled lr:
  `p ← p − lr_t·(m/(√v+eps) + wd·p)`; that is decoupled weight decay, as in AdamW.

`bias_correction=True` switches to the bias-corrected moments of Adam(W), for comparison.

How a training loop uses it::

    groups = [{"params": backbone.parameters(), "lr": 1e-5},
              {"params": heads.parameters(), "lr": 1e-3}]
    opt, sched = build_bertadam(groups, total_steps=epochs * batches_per_epoch)
    for batch in loader:                # one optimizer step per batch
        loss.backward()
        opt.step()                      # clips each tensor's grad to norm 1.0 itself
        opt.zero_grad(set_to_none=True)
        sched.step()                    # after the optimizer step, once per batch

The schedule is evaluated at the number of optimizer steps already taken (0 for the first step),
exactly as BertAdam does, so the very first update has lr 0. Checkpoint `opt.state_dict()` and
`sched.state_dict()` together.

`clip_grad_norm_per_tensor` is the same clipping as a free function, for loops that use another
optimizer; calling it before `BertAdam.step()` is harmless (clipping is idempotent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from cmhash.errors import ConfigError
from cmhash.validators import positive_int

__all__ = ["BertAdam", "build_bertadam", "clip_grad_norm_per_tensor", "warmup_cosine"]


def warmup_cosine(x: float, warmup: float = 0.1) -> float:
    """The lr factor at progress `x = step/total`: linear warmup, then `0.5·(1+cos(π·x))`.

    As in CLIP4Clip, the cosine uses the raw progress x (not the progress after warmup), so the
    factor jumps from ~1 to 0.5·(1+cos(π·warmup)) at the end of warmup. Progress past the end is
    clamped to 1 (factor 0) instead of letting the cosine rise again; that never happens when
    `total_steps` is right.
    """
    x = min(max(x, 0.0), 1.0)
    if warmup > 0 and x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


@torch.no_grad()
def clip_grad_norm_per_tensor(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float = 1.0) -> None:
    """Clip each parameter's gradient to L2 norm `max_norm` on its own (not one global norm).

    BertAdam clips every tensor separately; a global clip would let one huge backbone gradient
    shrink the heads' updates too. Same formula as `torch.nn.utils.clip_grad_norm_` on one tensor.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        norm = torch.linalg.vector_norm(p.grad.detach(), 2)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        p.grad.detach().mul_(coef)


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, with decoupled weight decay and per-tensor clipping.

    The lr applied is the group's `lr` as set by the scheduler (a `LambdaLR` from
    `build_bertadam`); this class itself has no schedule.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.2,
        max_grad_norm: float = 1.0,
        bias_correction: bool = False,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ConfigError(f"BertAdam: lr={lr}, eps={eps}, weight_decay={weight_decay} must be >= 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ConfigError(f"BertAdam: betas={betas} must lie in [0, 1)")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, bias_correction=bias_correction)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if group["max_grad_norm"] > 0:
                clip_grad_norm_per_tensor(params, group["max_grad_norm"])
            for p in params:
                if p.grad.is_sparse:
                    raise ConfigError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                state["step"] += 1
                if group["bias_correction"]:
                    t = state["step"]
                    update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                else:
                    update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
        return loss


def build_bertadam(
    param_groups: list[dict[str, Any]],
    total_steps: int,
    warmup: float = 0.1,
    weight_decay: float = 0.2,
    *,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    max_grad_norm: float = 1.0,
    bias_correction: bool = False,
) -> tuple[BertAdam, LambdaLR]:
    """The CLIP pipeline's optimizer and its per-step warmup-cosine schedule.

    `param_groups` are dicts `{"params": ..., "lr": ...}` (1e-5 backbone, 1e-3 heads in the
    recipes). Weight decay applies to every parameter, biases and norms included, as the authors
    do. Call `scheduler.step()` once after each `optimizer.step()`.
    """
    positive_int(total_steps, "build_bertadam total_steps (optimizer steps)", error=ConfigError)
    if not 0.0 <= warmup < 1.0:
        raise ConfigError(f"build_bertadam: warmup={warmup} is a fraction of the steps in [0, 1)")
    groups = []
    for i, g in enumerate(param_groups):
        if "params" not in g or "lr" not in g:
            raise ConfigError(f"build_bertadam: param group {i} needs 'params' and 'lr' (got keys {sorted(g)})")
        groups.append({**g, "params": list(g["params"])})
    opt = BertAdam(groups, lr=groups[0]["lr"] if groups else 1e-3, betas=betas, eps=eps,
                   weight_decay=weight_decay, max_grad_norm=max_grad_norm, bias_correction=bias_correction)
    sched = LambdaLR(opt, lambda step: warmup_cosine(step / total_steps, warmup))
    return opt, sched
