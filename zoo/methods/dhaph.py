"""DHaPH: Deep Hierarchy-aware Proxy Hashing with self-paced learning (TKDE 36(11), 2024).

docs/RECIPES.md, "DHaPH". The loss is

    L = L(h_v,h_v) + L(h_t,h_t) + L(h_v,h_t) + α·L_hier

with `L` the self-paced contrastive loss (`self_paced_contrastive_loss`) and `L_hier` the HIER
proxy loss in a Poincaré ball (`hier_mining.hier_proxy_loss`, maths in `poincare`).

How a training loop uses this module::

    cfg = DHaPHConfig.offline()                       # or .paper(), or DHaPHConfig.from_dict(json)
    img_head = HashHead(d_img, cfg.bits, cfg.hash_dropout, cfg.head_init)   # one per modality
    txt_head = HashHead(d_txt, cfg.bits, cfg.hash_dropout, cfg.head_init)
    crit = DHaPHLoss(cfg, seed=cfg.seed)              # hierarchy head + proxies + RNG of the mining
    opt, sched, hier_opt = build_optimizers(cfg, backbone_params, [*img_head.parameters(),
                                            *txt_head.parameters()], crit, total_steps)
    for epoch in range(1, cfg.epochs + 1):            # epoch counted FROM 1 (self-paced schedule)
        for images, texts, labels, _ in loader:
            h_v, h_t = img_head(f_v), txt_head(f_t)
            loss, terms = crit.loss(h_v, h_t, labels, epoch)
            opt.zero_grad(); hier_opt.zero_grad()
            loss.backward()
            opt.step(); hier_opt.step()               # BertAdam clips each tensor's grad itself
            sched.step()                              # once per batch, after the step

* Optimizers: `opt` is the CLIP pipeline's BertAdam (`zoo.methods.bertadam`): backbone lr 1e-5
  (only when `train_backbones`), hash heads lr 1e-3, decoupled weight decay 0.2 on every
  parameter, per-tensor grad-norm clip 1.0, 10% warmup then cosine, stepped per batch.
  `hier_opt` is a plain AdamW (lr 1e-5, PyTorch defaults otherwise) over `crit.parameters()`
  (hierarchy head + proxies), as in the authors' code; it is not clipped and has no schedule.
* No per-epoch hook: the epoch enters through `loss(..., epoch)`; `T` is `cfg.epochs`.
* Checkpoint: heads, backbone (if trained), `crit.state_dict()` (head + proxies), the three
  optimizer/scheduler states, and `crit.rng_state()` for a bit-exact resume of the mining.
* `crit` has no dropout or batch norm; `train()`/`eval()` on it change nothing. Move it with
  `crit.to(device)`; its generator follows the inputs' device.
* Cost: the proxy→proxy term (500 anchors × 50 triplets × 500 proxies, twice) dominates. Measured
  at B=64, K=64: ~31 ms per forward+backward on an H100 (peak 0.9 GiB), ~0.7 s on 16 CPU cores,
  ~2 s on this project's 2-core machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cmhash.zoo.heads import HeadInit, check_head_init
from cmhash.zoo.config_io import JsonConfig
from cmhash.errors import ConfigError, InvalidInputError
from cmhash.validators import code_bits, positive_int, positive_number

from .bertadam import BertAdam, build_bertadam
from .hier_mining import HierOutput, hier_proxy_loss
from .poincare import HierarchyHead, HyperbolicProxies

__all__ = ["DHaPHConfig", "DHaPHLoss", "PRESETS", "build_optimizers",
           "self_paced_contrastive_loss", "self_paced_delta"]

HierGrad = Literal["detached", "to_codes"]
HIER_GRAD = ("detached", "to_codes")


@dataclass(frozen=True)
class DHaPHConfig(JsonConfig):
    """Every DHaPH hyperparameter; the defaults are the paper's (docs/RECIPES.md, "DHaPH", and the authors' code).

    `bits` 64: the paper reports 16/32/64; the authors' argparse default is 16. `hier_grad`:
    "detached" reproduces the authors' code (L_hier trains only its head and proxies);
    "to_codes" lets it reach the hash codes, as the paper describes. `mobius_eps` is hyptorch's
    guard in the Möbius denominator (0 gives the textbook distance). `hier_weight_decay` 0.01 is
    AdamW's default, which the authors leave in place.

    Configs saved before the field names were shared across the methods say `n_bits` and
    `hash_init`; `from_dict` reads them as `bits` and `head_init` (`RENAMED`).
    """

    RENAMED: ClassVar[Mapping[str, str]] = {"n_bits": "bits", "hash_init": "head_init"}

    image_backbone: str = "clip-vit-b32-image"
    text_backbone: str = "clip-vit-b32-text"
    train_backbones: bool = True
    bits: int = 64
    epochs: int = 100
    batch_size: int = 64
    seed: int = 1814
    # self-paced contrastive loss
    tau: float = 0.3
    alpha: float = 1.0
    # hierarchy-aware proxy loss
    n_proxies: int = 500
    topk: int = 15
    triplets_per_anchor: int = 50
    margin: float = 0.1
    gumbel_tau: float = 0.1
    curvature: float = 0.1
    clip_radius: float = 2.3
    proxy_init_scale: float = 0.9
    mobius_eps: float = 1e-5
    hier_grad: HierGrad = "detached"
    # hash head
    hash_dropout: float = 0.2
    head_init: HeadInit = "default"
    # BertAdam (backbone + hash heads)
    lr_backbone: float = 1e-5
    lr_heads: float = 1e-3
    weight_decay: float = 0.2
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    max_grad_norm: float = 1.0
    warmup_proportion: float = 0.1
    # AdamW (hierarchy head + proxies)
    hier_lr: float = 1e-5
    hier_weight_decay: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        if self.hier_grad not in HIER_GRAD:
            raise ConfigError(f"DHaPH: hier_grad={self.hier_grad!r}; choose one of {HIER_GRAD}")
        check_head_init(self.head_init, "DHaPH: head_init")
        code_bits(self.bits, error=ConfigError)
        for name in ("epochs", "batch_size", "n_proxies", "topk", "triplets_per_anchor"):
            positive_int(getattr(self, name), f"DHaPHConfig.{name}", error=ConfigError)
        for name in ("tau", "gumbel_tau", "curvature", "clip_radius"):
            positive_number(getattr(self, name), f"DHaPHConfig.{name}", error=ConfigError)
        if not 0.0 <= self.hash_dropout < 1.0:
            raise ConfigError(f"DHaPH: hash_dropout={self.hash_dropout!r} must lie in [0, 1)")
        if len(self.adam_betas) != 2:
            raise ConfigError(f"DHaPH: adam_betas={self.adam_betas!r} must be two numbers")

    @classmethod
    def paper(cls, **overrides: Any) -> "DHaPHConfig":
        """CLIP ViT-B/32 towers fine-tuned, 100 epochs, batch 64, seed 1814."""
        return cls().replace(**overrides)

    @classmethod
    def offline(cls, **overrides: Any) -> "DHaPHConfig":
        """Frozen EfficientNet-Lite0 / MiniLM-L6 features, only the heads train; same loss constants.

        Batch 32 so that a 64-pair training set gives 2 steps per epoch with 32-sample mining
        batches (top-15 of 32 still leaves real negatives). 30 epochs, like the other offline
        presets: on coco-mini (K=64, seed 0) the paper's 100 epochs peaked on the validation slice
        at epoch 12 (val mAP 0.502) and took 228 s on 2 cores; 30 epochs reached 0.507 in a third of
        the time (δ then ramps over the first 10 epochs).
        """
        base = cls(image_backbone="efficientnet-lite0", text_backbone="minilm-l6", train_backbones=False,
                   epochs=30, batch_size=32)
        return base.replace(**overrides)


PRESETS = {"paper": DHaPHConfig.paper, "offline": DHaPHConfig.offline}


def self_paced_delta(epoch: int, total_epochs: int) -> float:
    """δ = e / floor(T/3) while e ≤ floor(T/3), then 1 (e counted from 1; T < 3 gives δ = 1)."""
    third = total_epochs // 3
    return epoch / third if epoch <= third else 1.0


def self_paced_contrastive_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, epoch: int,
                                total_epochs: int, tau: float = 0.3) -> torch.Tensor:
    """L(a, b) = mean_i −log(Σ_j P w⁺ E / (Σ_j P w⁺ E + Σ_j N w⁻ E)), docs/RECIPES.md, "Loss 1: self-paced contrastive loss".

    s = cosine(a_i, b_j), E = exp(s/τ), w⁺ = exp(−1−s)^(δ/4), w⁻ = exp(−1+s)^δ, the weights
    computed from a detached s (they pace the loss and carry no gradient). δ grows from 1/⌊T/3⌋ to
    1: early on hard positives (low s) and hard negatives (high s) are barely up-weighted.

    Decision: an anchor without any positive (an unlabelled sample; P includes the diagonal, so
    this cannot happen for labelled ones) would give −log 0 = ∞; it is left out of the mean.
    With no such anchor at all the loss is 0.
    """
    if epoch < 1:
        raise InvalidInputError(f"DHaPH: epoch={epoch} must be counted from 1 (the self-paced δ uses e ≥ 1)")
    s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    y = labels.to(s.dtype)
    pos = (y @ y.T) > 0
    delta = self_paced_delta(epoch, total_epochs)
    sd = s.detach()
    w_pos = torch.exp(-1 - sd) ** (delta / 4)
    w_neg = torch.exp(-1 + sd) ** delta
    e = torch.exp(s / tau)
    num = (pos * w_pos * e).sum(1)
    den = num + ((~pos) * w_neg * e).sum(1)
    has_pos = pos.any(1)
    if not bool(has_pos.any()):
        return s.sum() * 0.0
    return -torch.log(num[has_pos] / den[has_pos]).mean()


class DHaPHLoss(nn.Module):
    """DHaPH's trainable extras (hierarchy head, proxies) and its full loss.

    `seed` seeds a private generator for the triplet sampling and Gumbel noise (created lazily on
    the inputs' device); `seed=None` uses the global RNG, like the authors' code.
    """

    def __init__(self, cfg: DHaPHConfig, seed: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = HierarchyHead(cfg.bits, cfg.curvature, cfg.clip_radius)
        self.proxies = HyperbolicProxies(cfg.n_proxies, cfg.bits, cfg.curvature, cfg.clip_radius,
                                         cfg.proxy_init_scale)
        self.seed = seed
        self._gen: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
        return self._gen

    def rng_state(self) -> torch.Tensor | None:
        return None if self._gen is None else self._gen.get_state()

    def set_rng_state(self, state: torch.Tensor, device: torch.device | str = "cpu") -> None:
        gen = self.generator(torch.device(device))
        if gen is None:
            raise InvalidInputError("DHaPHLoss(seed=None) uses the global RNG; restore that with torch.set_rng_state")
        gen.set_state(state)

    def hier_loss(self, h_v: torch.Tensor, h_t: torch.Tensor, labels: torch.Tensor,
                  hard_argmax: bool = False) -> HierOutput:
        """L_hier on the codes; `cfg.hier_grad` decides whether its gradient reaches h_v/h_t."""
        cfg = self.cfg
        if cfg.hier_grad == "detached":  # the authors' code: `hpmodel(hash_img.detach())`
            h_v, h_t = h_v.detach(), h_t.detach()
        return hier_proxy_loss(self.head(h_v), self.head(h_t), self.proxies(), labels,
                               c=cfg.curvature, topk=cfg.topk, per_anchor=cfg.triplets_per_anchor,
                               margin=cfg.margin, tau=cfg.gumbel_tau, mobius_eps=cfg.mobius_eps,
                               generator=self.generator(h_v.device), hard_argmax=hard_argmax)

    def loss(self, h_v: torch.Tensor, h_t: torch.Tensor, labels: torch.Tensor, epoch: int,
             index: torch.Tensor | None = None, hard_argmax: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its named terms (floats, for logging). `epoch` is counted from 1.

        `index` (the samples' dataset rows) is unused: DHaPH keeps no per-sample state.
        `hard_argmax=True` removes the Gumbel noise (tests only).
        """
        if h_v.shape != h_t.shape or h_v.ndim != 2 or labels.shape[0] != h_v.shape[0]:
            raise InvalidInputError(f"DHaPH: h_v {tuple(h_v.shape)}, h_t {tuple(h_t.shape)} and labels "
                                    f"{tuple(labels.shape)} must be B×K, B×K and B×C")
        cfg = self.cfg
        l_vv = self_paced_contrastive_loss(h_v, h_v, labels, epoch, cfg.epochs, cfg.tau)
        l_tt = self_paced_contrastive_loss(h_t, h_t, labels, epoch, cfg.epochs, cfg.tau)
        l_vt = self_paced_contrastive_loss(h_v, h_t, labels, epoch, cfg.epochs, cfg.tau)
        hier = self.hier_loss(h_v, h_t, labels, hard_argmax)
        total = l_vv + l_tt + l_vt + cfg.alpha * hier.total
        terms = {"total": total, "contrastive_vv": l_vv, "contrastive_tt": l_tt, "contrastive_vt": l_vt,
                 "hier": hier.total, **hier.terms}
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["delta"] = self_paced_delta(epoch, cfg.epochs)
        return total, out


def build_optimizers(cfg: DHaPHConfig, backbone_params: Iterable[nn.Parameter],
                     head_params: Iterable[nn.Parameter], crit: DHaPHLoss, total_steps: int,
                     bias_correction: bool = False) -> tuple[BertAdam, torch.optim.lr_scheduler.LambdaLR,
                                                              torch.optim.AdamW]:
    """BertAdam (+ its per-step warmup-cosine schedule) for backbone and hash heads; AdamW for `crit`.

    `backbone_params` is ignored when `cfg.train_backbones` is False (frozen features).
    `bias_correction=True` makes BertAdam's moments bias-corrected, i.e. AdamW with per-tensor
    clipping, for comparison; the default is the authors' BertAdam. `total_steps` = epochs ×
    batches per epoch.
    """
    groups: list[dict[str, Any]] = []
    if cfg.train_backbones:
        groups.append({"params": list(backbone_params), "lr": cfg.lr_backbone})
    groups.append({"params": list(head_params), "lr": cfg.lr_heads})
    opt, sched = build_bertadam(groups, total_steps, warmup=cfg.warmup_proportion, weight_decay=cfg.weight_decay,
                                betas=cfg.adam_betas, eps=cfg.adam_eps, max_grad_norm=cfg.max_grad_norm,
                                bias_correction=bias_correction)
    hier_opt = torch.optim.AdamW(crit.parameters(), lr=cfg.hier_lr, weight_decay=cfg.hier_weight_decay)
    return opt, sched, hier_opt
