"""DMsH-LN: Deep Multi-similarity Hashing via a Label-guided Network (Neurocomputing 616, 2025).

The loss is the multi-similarity (MS) loss applied to (h_v,h_v), (h_t,h_t) and (h_v,h_t) with equal
weights, on a row-normalised inner-product matrix, with the positive mask `M = (G Gᵀ) > 0` built from
a guide G (docs/RECIPES.md, "DMsH-LN"). `DMsHLNConfig.labelnet` picks G:

* "trained" (default, the project's Decision): LabelNet is first trained on the labels
  (`labelnet.train_label_stage`), then frozen. Its binary codes `b = sign(LabelNet(y))` give
  `M = (b bᵀ) > 0` and are targets the hash codes are pulled toward:
  `L_pull = (1/(B·K))·Σ_i (‖h_v,i − b_i‖² + ‖h_t,i − b_i‖²)`, weight `pull_weight` (1.0, untuned).
  The pull term is a project addition, not part of the paper's loss.
* "random" (the authors' public code): a fixed, seeded, untrained LabelNet; `G = tanh(α·net(y))`
  with α = √(epoch+1). The boolean mask passes no gradient, so it never trains. Loss = MS only.
* "labels": `G = Y`, so `M = P`. Loss = MS only.

How a training loop uses it::

    cfg = DMsHLNConfig.paper(bits=32)               # or .offline()
    method = DMsHLN(cfg, num_classes=C)
    method.prepare(train_labels)                    # label stage in "trained" mode; no-op otherwise
    img_head = HashHead(d_img, cfg.bits, cfg.hash_dropout, cfg.head_init)   # likewise the text head
    opt, sched = build_optimizer(cfg, backbone_params, head_params, steps_per_epoch)
    for epoch in range(cfg.epochs):                 # epoch from 0; loader: batch 128, drop_last=True
        for x, t, y, idx in loader:
            loss, terms = method.loss(img_head(f(x)), txt_head(g(t)), y, epoch)
            loss.backward(); opt.step(); opt.zero_grad(); sched.step()

`method` contributes no parameters to the optimizer (LabelNet is trained only in `prepare`, with its
own Adam). Backbones take lr 1e-5 and both hash heads 1e-3, all in BertAdam (`bertadam.py`), which
clips each gradient tensor to norm 1.0 itself. Checkpoint `method.state_dict()` (LabelNet weights and
whether its stage ran), the heads, the optimizer and the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from cmhash.zoo.heads import HeadInit, check_head_init
from cmhash.zoo.backbones import backbone_names
from cmhash.zoo.config_io import JsonConfig
from cmhash.errors import ConfigError, InvalidInputError
from cmhash.validators import code_bits, positive_int, positive_number

from .bertadam import build_bertadam
from .labelnet import LabelNet, train_label_stage
from cmhash.zoo.heads import sign_pm1

__all__ = [
    "DMsHLN", "DMsHLNConfig", "LabelNetMode", "build_optimizer", "guide_mask",
    "multi_similarity_loss", "pull_loss", "row_normalized_similarity",
]

LabelNetMode = Literal["trained", "random", "labels"]


@dataclass(frozen=True)
class DMsHLNConfig(JsonConfig):
    """Every DMsH-LN hyperparameter; defaults are those of docs/RECIPES.md, "DMsH-LN" (the `paper` preset)."""

    image_backbone: str = "clip-vit-b32-image"
    text_backbone: str = "clip-vit-b32-text"
    bits: int = 64                      # the paper reports 16, 32 and 64
    train_backbones: bool = True        # paper: both CLIP towers fine-tune; offline: frozen features
    # Run settings. `seed` is also the split seed of the CLIP pipeline for DMsH-LN.
    epochs: int = 100
    batch_size: int = 128
    seed: int = 3407
    drop_last: bool = True              # the authors skip non-full batches
    # Multi-similarity loss.
    ms_threshold: float = 0.5
    ms_margin: float = 0.1
    ms_scale_pos: float = 2.0
    ms_scale_neg: float = 40.0
    ms_pos_eps: float = 1e-5            # a "positive" with S >= 1 - eps is dropped
    # Hash head: tanh(Dropout(Linear(f))), Kaiming-uniform (fan_out) weights, zero bias.
    hash_dropout: float = 0.2
    head_init: HeadInit = "kaiming_fan_out"
    # Label-guided network.
    labelnet: LabelNetMode = "trained"
    label_stage_epochs: int = 50        # project Decision ("trained" only)
    label_stage_batch_size: int = 128
    label_stage_lr: float = 1e-2          # Adam; 1e-3 converged too slowly on small sets
    label_quant_weight: float = 0.1
    pull_weight: float = 1.0
    # BertAdam.
    lr_backbone: float = 1e-5
    lr_head: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    weight_decay: float = 0.2
    warmup: float = 0.1
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("image_backbone", "text_backbone"):
            if getattr(self, name) not in backbone_names():
                raise ConfigError(f"DMsHLNConfig.{name}={getattr(self, name)!r}: expected one of {backbone_names()}")
        if self.labelnet not in get_args(LabelNetMode):
            raise ConfigError(f"DMsHLNConfig.labelnet={self.labelnet!r}: expected one of {get_args(LabelNetMode)}")
        check_head_init(self.head_init, "DMsHLNConfig.head_init")
        code_bits(self.bits, error=ConfigError)
        for name in ("epochs", "batch_size", "label_stage_batch_size"):
            positive_int(getattr(self, name), f"DMsHLNConfig.{name}", error=ConfigError)
        if not isinstance(self.label_stage_epochs, int) or self.label_stage_epochs < 0:
            raise ConfigError(f"DMsHLNConfig.label_stage_epochs={self.label_stage_epochs!r} must be an integer >= 0")
        if not 0.0 <= self.hash_dropout < 1.0:
            raise ConfigError(f"DMsHLNConfig.hash_dropout={self.hash_dropout} must lie in [0, 1)")
        for name in ("ms_scale_pos", "ms_scale_neg"):
            positive_number(getattr(self, name), f"DMsHLNConfig.{name}", error=ConfigError)
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))

    @classmethod
    def paper(cls, **changes: Any) -> "DMsHLNConfig":
        """The paper's backbones (CLIP ViT-B/32, both towers) and settings."""
        return replace(cls(), **changes)

    @classmethod
    def offline(cls, **changes: Any) -> "DMsHLNConfig":
        """EfficientNet-Lite0 + MiniLM-L6, same loss constants. Sized for a 64-pair training set:
        batch 16 (4 full batches per epoch, none dropped) for 30 epochs (120 steps, 12 of warmup);
        the label stage uses the same batch size."""
        base = dict(image_backbone="efficientnet-lite0", text_backbone="minilm-l6", train_backbones=False, epochs=30,
                    batch_size=16, label_stage_batch_size=16)
        return replace(cls(), **{**base, **changes})


def row_normalized_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`S = row_l2_normalize(A Bᵀ)`: each ROW of the raw inner-product matrix scaled to unit norm.

    Not cosine similarity: that is what DMsH-LN does. S depends on the whole batch row, and
    |S_ij| <= 1 always, which also keeps exp(40·(S−0.5)) <= e^20.
    """
    return F.normalize(a @ b.T, p=2, dim=1, eps=1e-12)


def guide_mask(g: torch.Tensor) -> torch.Tensor:
    """`M = (G Gᵀ) > 0` as a bool matrix; with G = Y this is P (diagonal included)."""
    g = g.to(torch.float64) if not g.is_floating_point() else g
    return (g @ g.T) > 0


def _log1p_sum_exp(z: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Row-wise `log(1 + Σ_{select} exp(z))`, computed as logsumexp over [0, z masked with −inf].

    Never overflows, and masked-out entries get exactly zero gradient (no 0·inf), even if a row
    selects nothing (then the value is log 1 = 0).
    """
    z = z.masked_fill(~select, float("-inf"))
    return torch.logsumexp(torch.cat([z.new_zeros(z.shape[0], 1), z], dim=1), dim=1)


def multi_similarity_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    mask: torch.Tensor,
    *,
    threshold: float = 0.5,
    margin: float = 0.1,
    scale_pos: float = 2.0,
    scale_neg: float = 40.0,
    pos_eps: float = 1e-5,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """The MS loss of docs/RECIPES.md, "Multi-similarity loss", with anchors = rows of `a`, vectorized with masks.

    Per anchor i: pos = {S_ij : M_ij, S_ij < 1−eps}, neg = {S_ij : ¬M_ij};
    neg' = {s ∈ neg : s + margin > min pos}, pos' = {s ∈ pos : s − margin < max neg};
    an anchor with an empty pos' or neg' is skipped (empty pos or neg implies that);
    l_i = log(1+Σ_pos' e^{−sp(s−t)})/sp + log(1+Σ_neg' e^{sn(s−t)})/sn.
    reduction="mean" returns Σ_i l_i / B with B counting the skipped anchors too (as the authors);
    "none" returns the B per-anchor values (0 for skipped anchors).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"multi_similarity_loss: a and b must be B×K and N×K, got {tuple(a.shape)}, {tuple(b.shape)}")
    if tuple(mask.shape) != (a.shape[0], b.shape[0]):
        raise InvalidInputError(f"multi_similarity_loss: mask must be {a.shape[0]}×{b.shape[0]}, got {tuple(mask.shape)}")
    if a.dtype in (torch.float16, torch.bfloat16) or b.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()  # e^{40·x} and the mining comparisons need float32 at least
    s = row_normalized_similarity(a, b)
    m = mask.to(device=s.device, dtype=torch.bool)
    sd = s.detach()  # mining uses values only: min/max pass no gradient, as in the authors' code
    pos = m & (sd < 1.0 - pos_eps)
    neg = ~m
    min_pos = sd.masked_fill(~pos, float("inf")).amin(dim=1, keepdim=True)  # +inf when pos is empty
    max_neg = sd.masked_fill(~neg, float("-inf")).amax(dim=1, keepdim=True)  # -inf when neg is empty
    neg_sel = neg & (sd + margin > min_pos)
    pos_sel = pos & (sd - margin < max_neg)
    valid = pos_sel.any(dim=1) & neg_sel.any(dim=1)
    pos_term = _log1p_sum_exp(-scale_pos * (s - threshold), pos_sel) / scale_pos
    neg_term = _log1p_sum_exp(scale_neg * (s - threshold), neg_sel) / scale_neg
    per_anchor = torch.where(valid, pos_term + neg_term, torch.zeros_like(pos_term))
    if reduction == "none":
        return per_anchor
    return per_anchor.sum() / a.shape[0]


def pull_loss(h_v: torch.Tensor, h_t: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Project addition ("trained" mode): `(1/(B·K))·Σ_i (‖h_v,i − b_i‖² + ‖h_t,i − b_i‖²)`."""
    t = targets.detach().to(h_v.dtype)
    return ((h_v - t).pow(2).sum() + (h_t - t).pow(2).sum()) / h_v.numel()


class DMsHLN(nn.Module):
    """DMsH-LN's loss and its Label-guided Network; see the module docstring for the loop's use."""

    def __init__(self, config: DMsHLNConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.labelnet: LabelNet | None = None
        if config.labelnet != "labels":
            self.labelnet = LabelNet(num_classes, config.bits, seed=config.seed)
            self.labelnet.requires_grad_(False).eval()  # trained only inside prepare()
        # Saved in state_dict so a resumed run does not redo (or skip) the label stage.
        self.register_buffer("label_stage_done", torch.tensor(False))

    def prepare(self, train_labels: torch.Tensor) -> dict[str, float]:
        """Run the label-to-code stage ("trained" mode, once); a no-op in the other modes."""
        cfg = self.config
        if cfg.labelnet != "trained" or bool(self.label_stage_done):
            return {}
        stats = train_label_stage(
            self.labelnet, train_labels, epochs=cfg.label_stage_epochs, batch_size=cfg.label_stage_batch_size,
            lr=cfg.label_stage_lr, quant_weight=cfg.label_quant_weight, seed=cfg.seed,
        )
        self.label_stage_done.fill_(True)
        return stats

    @torch.no_grad()
    def guide(self, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        """The G of `M = (G Gᵀ) > 0` for this batch (never carries gradient)."""
        mode = self.config.labelnet
        if mode == "labels":
            return labels.float()
        if mode == "trained" and not bool(self.label_stage_done):
            raise ConfigError("DMsHLN(labelnet='trained'): call prepare(train_labels) before training")
        y = labels.to(self.labelnet.net[0].weight.device)
        if mode == "trained":
            return sign_pm1(self.labelnet.logits(y))  # frozen: its binary codes, α-free
        return self.labelnet(y, epoch)               # "random": tanh(√(epoch+1)·x)

    def mask(self, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return guide_mask(self.guide(labels, epoch))

    def loss(
        self, h_v: torch.Tensor, h_t: torch.Tensor, labels: torch.Tensor, epoch: int, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`MS(h_v,h_v) + MS(h_t,h_t) + MS(h_v,h_t)` [+ pull_weight·L_pull in "trained" mode].

        `epoch` counts from 0 (it sets LabelNet's α in "random" mode); `index` is unused.
        """
        if h_v.shape != h_t.shape or h_v.ndim != 2 or labels.shape[0] != h_v.shape[0]:
            raise InvalidInputError(
                f"DMsHLN.loss: h_v {tuple(h_v.shape)}, h_t {tuple(h_t.shape)} and labels {tuple(labels.shape)} disagree"
            )
        cfg = self.config
        g = self.guide(labels, epoch)
        m = guide_mask(g).to(h_v.device)
        kw = dict(threshold=cfg.ms_threshold, margin=cfg.ms_margin, scale_pos=cfg.ms_scale_pos,
                  scale_neg=cfg.ms_scale_neg, pos_eps=cfg.ms_pos_eps)
        terms = {
            "ms_vv": multi_similarity_loss(h_v, h_v, m, **kw),
            "ms_tt": multi_similarity_loss(h_t, h_t, m, **kw),
            "ms_vt": multi_similarity_loss(h_v, h_t, m, **kw),
        }
        total = terms["ms_vv"] + terms["ms_tt"] + terms["ms_vt"]
        if cfg.labelnet == "trained":
            terms["pull"] = pull_loss(h_v, h_t, g.to(h_v.device))
            total = total + cfg.pull_weight * terms["pull"]
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["total"] = float(total.detach())
        return total, out


def build_optimizer(
    config: DMsHLNConfig,
    backbone_params: Iterable[nn.Parameter],
    head_params: Iterable[nn.Parameter],
    steps_per_epoch: int,
):
    """BertAdam with the config's learning rates over `epochs × steps_per_epoch` steps."""
    groups = [{"params": list(backbone_params), "lr": config.lr_backbone},
              {"params": list(head_params), "lr": config.lr_head}]
    groups = [g for g in groups if g["params"]]  # a frozen backbone contributes no group
    return build_bertadam(
        groups, config.epochs * steps_per_epoch, warmup=config.warmup, weight_decay=config.weight_decay,
        betas=config.adam_betas, eps=config.adam_eps, max_grad_norm=config.max_grad_norm,
    )
