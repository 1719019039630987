"""DCPH: Deep Cross-Modal Proxy Hashing (TKDE 35(7), 2023), stage 2 and its alternating schedule.

Stage 1 (`dcph_proxies.train_proxies`) turns each class into a fixed ±1 proxy code p_c. Stage 2
trains the image and text networks with the margin-dynamic-softmax (MDS) loss against those proxies
(docs/RECIPES.md, "Stage 2: margin-dynamic-softmax loss"), with γ = 0.3, σ = 0.3·K, n_i = |Y_i|, logit_c(u) = uᵀp_c:

    m_i(u)   = (1/n_i)·Σ_{c∈Y_i} logit_c(u)
    num_i(u) = exp(γ·(m_i(u) − σ))
    den_i(u) = num_i(u) + Σ_{c∉Y_i} exp(γ·logit_c(u)) + n_i      (+n_i: exp(γ·logit·(1−y)) = 1 per positive)
    L_mds    = −Σ_i log(num_i(u_i) / den_i(u_i)) / B
    L_cross  = −Σ_i log(num_i(u_i) / den_i(sign(v_i))) / B          v_i: other modality's STORED output
    L_q      = Σ_i ||b_i − u_i||² / B                               b_i = row of B = sign(B_x + B_y)
    loss     = L_mds + 0.1·L_cross + 0.1·L_q

All logs are computed as log-sum-exp (never exp then log), so large K cannot overflow.
Unlabeled samples (n_i = 0, m_i undefined): `unlabeled="raise"` (default) raises InvalidInputError,
like the data readers do; `"exclude"` gives such rows 0 in L_mds and L_cross, but they still count
in the /B and in L_q.

The shared loop runs the alternating schedule through `zoo/recipes.py` (`DCPHRecipe`), as phases
of ONE loop of `rounds × 2` epochs: epoch 2r is round r's image phase (one epoch over the training
set; only the image side trains and steps its own optimizer and scheduler; its cross term uses
sign(B_y[idx]); `phase_loss` writes B_x[idx] = u), epoch 2r+1 the text phase (cross term
sign(B_x[idx]); writes B_y), then the round-end hook `end_round()`: B = sign(B_x + B_y). Never step
the inactive optimizer: with zeroed (not None) gradients its weight decay would still move the
frozen side. The buffers are written only in training mode (`method.train()`), so a validation
pass leaves them alone.

`DCPH` has no trainable parameters (the proxies are fixed after stage 1; the buffers are written,
not learned). Checkpoint `method.state_dict()` (proxies, B_x, B_y, B, and the
count of finished rounds), both networks, both optimizers and both schedulers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal, get_args

import torch
from torch import nn

from cmhash.zoo.backbones import backbone_names
from cmhash.zoo.config_io import JsonConfig
from cmhash.errors import ConfigError, InvalidInputError
from cmhash.validators import code_bits, positive_int, positive_number

from .dcph_proxies import ProxyReport, train_proxies
from cmhash.zoo.heads import sign_pm1

__all__ = [
    "DCPH", "DCPHConfig", "Phase", "build_optimizers", "cross_loss", "lr_for",
    "mds_log_terms", "mds_loss", "quantization_loss",
]

Phase = Literal["image", "text"]
PHASES: tuple[str, str] = ("image", "text")
Unlabeled = Literal["raise", "exclude"]

# docs/RECIPES.md, "Learning rates by K". No rates are given for MIRFlickr or IAPR: set lr_image/lr_text.
_LR_TABLE: dict[str, dict[str, dict[int, float]]] = {
    "nus-wide": {"image": {16: 1.5e-3, 32: 1.2e-3, 64: 1e-3}, "text": {16: 8e-3, 32: 8e-3, 64: 5e-3}},
    "coco": {"image": {16: 8e-4, 32: 6e-4, 64: 3e-4}, "text": {16: 2e-3, 32: 1.7e-3, 64: 1e-3}},
}
_DATASET_ALIASES = {"nuswide": "nus-wide", "nus-wide": "nus-wide", "nus": "nus-wide",
                    "coco": "coco", "mscoco": "coco", "ms-coco": "coco"}


def lr_for(dataset: str, modality: str, bits: int) -> float:
    """The authors' SGD learning rate for (dataset, modality, K), from docs/RECIPES.md, "Learning rates by K"."""
    key = _DATASET_ALIASES.get(str(dataset).lower().replace("_", "-"))
    if key is None:
        raise ConfigError(
            f"DCPH has no published learning rate for dataset {dataset!r}; the table covers "
            f"{sorted(_LR_TABLE)}. Set DCPHConfig.lr_image and lr_text explicitly."
        )
    if modality not in PHASES:
        raise ConfigError(f"lr_for: modality must be one of {PHASES}, got {modality!r}")
    table = _LR_TABLE[key][modality]
    if bits not in table:
        raise ConfigError(
            f"DCPH has no published {modality} learning rate for {key} at K={bits}; the table covers "
            f"K in {sorted(table)}. Set DCPHConfig.lr_{modality} explicitly."
        )
    return table[bits]


@dataclass(frozen=True)
class DCPHConfig(JsonConfig):
    """Every DCPH hyperparameter; defaults are those of docs/RECIPES.md, "DCPH" (the `paper` preset)."""

    image_backbone: str = "alexnet"
    text_backbone: str = "bow-mlp"
    bits: int = 64
    dataset: str = "coco"               # picks the learning rates from the table (lr_for)
    # Schedule. The authors run "4×20 or 6×2": we read it as 4 blocks of 20 rounds = 80 rounds (6×2 =
    # 12). The blocks matter only through the count: schedulers run on across them, and T_0 = 20
    # restarts the text cosine at each 20-round block boundary anyway. One round = 2 loop epochs.
    rounds: int = 80
    batch_size: int = 40
    seed: int = 0                       # project choice (buffers' randn, PHNet init); none published
    train_backbones: bool = True        # paper: the whole AlexNet and BoW MLP train; offline: heads only
    text_hidden: int = 8192             # BoW MLP Linear(d→8192), ReLU, Linear(8192→K)
    text_init_std: float = 0.01         # N(0, 0.01) weights (std), zero bias, for both text layers
    # Stage 2 loss.
    gamma: float = 0.3                  # softmax scale γ
    margin_factor: float = 0.3          # σ = margin_factor·K
    cross_weight: float = 0.1
    quant_weight: float = 0.1           # λ
    unlabeled: Unlabeled = "raise"
    # Optimizers: SGD for both sides; image StepLR(50, 0.5), text CosineAnnealingWarmRestarts(T_0=20).
    lr_image: float | None = None       # None: lr_for(dataset, "image", bits)
    lr_text: float | None = None        # None: lr_for(dataset, "text", bits)
    momentum: float = 0.0
    weight_decay: float = 1e-5
    image_step_size: int = 50
    image_step_gamma: float = 0.5
    text_t0: int = 20
    # Stage 1 (PHNet), the project's Decision.
    proxy_hidden: int = 4096
    proxy_iterations: int = 200
    proxy_lr: float = 1e-3
    proxy_weight_decay: float = 1e-5
    proxy_step_size: int = 100
    proxy_step_gamma: float = 0.1
    proxy_beta: float = 1.0
    proxy_balance_weight: float = 0.05

    def __post_init__(self) -> None:
        for name in ("image_backbone", "text_backbone"):
            if getattr(self, name) not in backbone_names():
                raise ConfigError(f"DCPHConfig.{name}={getattr(self, name)!r}: expected one of {backbone_names()}")
        if self.unlabeled not in get_args(Unlabeled):
            raise ConfigError(f"DCPHConfig.unlabeled={self.unlabeled!r}: expected one of {get_args(Unlabeled)}")
        code_bits(self.bits, error=ConfigError)
        for name in ("rounds", "batch_size", "text_hidden", "image_step_size", "text_t0",
                     "proxy_hidden", "proxy_step_size"):
            positive_int(getattr(self, name), f"DCPHConfig.{name}", error=ConfigError)
        for name in ("lr_image", "lr_text"):
            if getattr(self, name) is not None:
                positive_number(getattr(self, name), f"DCPHConfig.{name}", error=ConfigError,
                                fix="or None for the table's rate")
        positive_number(self.gamma, "DCPHConfig.gamma", error=ConfigError)

    @classmethod
    def paper(cls, **changes: Any) -> "DCPHConfig":
        """AlexNet + BoW MLP, batch 40, 80 rounds, the authors' SGD rates for `dataset` and `bits`."""
        return replace(cls(), **changes)

    @classmethod
    def offline(cls, **changes: Any) -> "DCPHConfig":
        """EfficientNet-Lite0 + MiniLM-L6 frozen features, each under a trainable hash head
        `tanh(Linear(d→K))`; same loss constants and schedulers. Sized for coco-mini (~100 training
        pairs; its 64 fit pairs give 4 batches): batch 16, 30 rounds (60 loop epochs). One linear
        layer on frozen features needs a far larger SGD step than a whole network: lr_image =
        lr_text = 1.0, picked on coco-mini's validation slice (val→fit mAP@all, K=32, 3 seeds) among
        {0.3, 1, 3, 10}; 0.3 and 1.0 tie (≈0.47), LSH gives 0.32. They are plain fields."""
        base = dict(image_backbone="efficientnet-lite0", text_backbone="minilm-l6", train_backbones=False,
                    batch_size=16, rounds=30, lr_image=1.0, lr_text=1.0)
        return replace(cls(), **{**base, **changes})

    @property
    def sigma(self) -> float:
        return self.margin_factor * self.bits

    def learning_rate(self, modality: str) -> float:
        """The explicit `lr_<modality>` if set, else the table's rate for (dataset, modality, bits)."""
        explicit = getattr(self, f"lr_{modality}")
        return explicit if explicit is not None else lr_for(self.dataset, modality, self.bits)


def _positives(labels: torch.Tensor, unlabeled: Unlabeled) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y as bool, which rows have a label); raises on an unlabeled row in "raise" mode."""
    if unlabeled not in get_args(Unlabeled):
        raise ConfigError(f"unlabeled={unlabeled!r}: expected one of {get_args(Unlabeled)}")
    y = labels > 0
    labeled = y.any(dim=1)
    if unlabeled == "raise" and not bool(labeled.all()):
        rows = torch.nonzero(~labeled).flatten()[:5].tolist()
        raise InvalidInputError(
            f"DCPH: {int((~labeled).sum())} sample(s) have no label (batch rows {rows}); m_i = mean over "
            "the sample's classes is undefined. Drop unlabeled samples, or set unlabeled='exclude'."
        )
    return y, labeled


def mds_log_terms(
    u: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, gamma: float, sigma: float,
    unlabeled: Unlabeled = "raise",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log num_i(u), log den_i(u), labeled_i), each of length B.

    log den = logsumexp([γ(m−σ), γ·logit_c for c∉Y_i, log n_i]): the positive classes enter only
    through m_i and the `+ n_i`. Unlabeled rows get n := 1 so every value (and gradient) stays finite;
    callers zero them with the mask.
    """
    if u.ndim != 2 or proxies.ndim != 2 or u.shape[1] != proxies.shape[1] or labels.shape != (u.shape[0], proxies.shape[0]):
        raise InvalidInputError(
            f"mds: u {tuple(u.shape)}, proxies {tuple(proxies.shape)} and labels {tuple(labels.shape)} "
            "must be B×K, C×K and B×C"
        )
    if u.dtype in (torch.float16, torch.bfloat16):
        u = u.float()
    y, labeled = _positives(labels.to(u.device), unlabeled)
    logits = u @ proxies.to(device=u.device, dtype=u.dtype).T          # B×C, logit_c(u_i) = u_iᵀp_c
    n = y.sum(dim=1).clamp(min=1).to(u.dtype)
    m = (logits * y).sum(dim=1) / n
    log_num = gamma * (m - sigma)
    neg = (gamma * logits).masked_fill(y, float("-inf"))               # only c ∉ Y_i
    log_den = torch.logsumexp(torch.cat([log_num[:, None], neg, torch.log(n)[:, None]], dim=1), dim=1)
    return log_num, log_den, labeled


def mds_loss(u: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, gamma: float = 0.3,
             sigma: float | None = None, unlabeled: Unlabeled = "raise") -> torch.Tensor:
    """L_mds = −Σ_i log(num_i(u_i)/den_i(u_i)) / B; σ defaults to 0.3·K."""
    sigma = 0.3 * u.shape[1] if sigma is None else sigma
    log_num, log_den, labeled = mds_log_terms(u, proxies, labels, gamma, sigma, unlabeled)
    return -torch.where(labeled, log_num - log_den, torch.zeros_like(log_num)).sum() / u.shape[0]


def cross_loss(u: torch.Tensor, v_stored: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor,
               gamma: float = 0.3, sigma: float | None = None, unlabeled: Unlabeled = "raise") -> torch.Tensor:
    """L_cross = −Σ_i log(num_i(u_i) / den_i(sign(v_i))) / B.

    v is the other modality's stored output for the same pairs (B_y[idx] in the image phase): it is
    binarised and detached here, so den carries no gradient; only num_i(u_i) trains u.
    """
    sigma = 0.3 * u.shape[1] if sigma is None else sigma
    if v_stored.shape != u.shape:
        raise InvalidInputError(f"cross_loss: v {tuple(v_stored.shape)} must match u {tuple(u.shape)}")
    log_num_u, _, labeled = mds_log_terms(u, proxies, labels, gamma, sigma, unlabeled)
    v = sign_pm1(v_stored.detach().to(device=u.device, dtype=log_num_u.dtype))
    _, log_den_v, _ = mds_log_terms(v, proxies, labels, gamma, sigma, unlabeled)
    return -torch.where(labeled, log_num_u - log_den_v, torch.zeros_like(log_num_u)).sum() / u.shape[0]


def quantization_loss(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_q = Σ_i ||b_i − u_i||² / B, with b the (detached) unified code rows."""
    if b.shape != u.shape:
        raise InvalidInputError(f"quantization_loss: b {tuple(b.shape)} must match u {tuple(u.shape)}")
    return (b.detach().to(device=u.device, dtype=u.dtype) - u).pow(2).sum() / u.shape[0]


class DCPH(nn.Module):
    """DCPH's fixed proxies and alternating-rounds state; see the module docstring for the loop."""

    def __init__(self, config: DCPHConfig, num_train: int, proxies: torch.Tensor) -> None:
        super().__init__()
        positive_int(num_train, "DCPH num_train (training pairs)")
        if proxies.ndim != 2 or proxies.shape[1] != config.bits or not bool(proxies.abs().eq(1).all()):
            raise InvalidInputError(f"proxies must be C×{config.bits} with ±1 entries, got {tuple(proxies.shape)}")
        self.config = config
        self.num_train, self.num_classes = num_train, proxies.shape[0]
        gen = torch.Generator().manual_seed(config.seed)    # drawn in this order: B_x, B_y, B
        k = config.bits
        self.register_buffer("proxies", proxies.detach().float().clone())
        self.register_buffer("B_x", torch.randn(num_train, k, generator=gen))
        self.register_buffer("B_y", torch.randn(num_train, k, generator=gen))
        self.register_buffer("B", sign_pm1(torch.randn(num_train, k, generator=gen)))
        self.register_buffer("rounds_done", torch.zeros((), dtype=torch.long))

    @classmethod
    def build(cls, config: DCPHConfig, num_train: int, num_classes: int) -> tuple["DCPH", ProxyReport]:
        """Stage 1 (train PHNet, seeded by config.seed) then the stage-2 state."""
        proxies, report = train_proxies(
            num_classes, config.bits, hidden=config.proxy_hidden, iterations=config.proxy_iterations,
            lr=config.proxy_lr, weight_decay=config.proxy_weight_decay, step_size=config.proxy_step_size,
            step_gamma=config.proxy_step_gamma, beta=config.proxy_beta,
            balance_weight=config.proxy_balance_weight, seed=config.seed,
        )
        return cls(config, num_train, proxies), report

    def _check_index(self, index: torch.Tensor | None, batch: int) -> torch.Tensor:
        if index is None:
            raise InvalidInputError("DCPH needs the training-set row index of every sample (index=...)")
        idx = torch.as_tensor(index, device=self.B.device).long().flatten()
        if idx.numel() != batch or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_train)):
            raise InvalidInputError(f"index must hold {batch} rows in [0, {self.num_train}), got {idx.tolist()[:8]}")
        return idx

    @torch.no_grad()
    def update_buffer(self, phase: Phase, index: torch.Tensor, u: torch.Tensor) -> None:
        """`B_x[idx] = u` (image phase) or `B_y[idx] = u` (text phase): the continuous outputs."""
        if phase not in PHASES:
            raise InvalidInputError(f"phase must be one of {PHASES}, got {phase!r}")
        idx = self._check_index(index, u.shape[0])
        target = self.B_x if phase == "image" else self.B_y
        target[idx] = u.detach().to(device=target.device, dtype=target.dtype)

    @torch.no_grad()
    def end_round(self) -> None:
        """Round-end hook: the unified code B = sign(B_x + B_y)."""
        self.B.copy_(sign_pm1(self.B_x + self.B_y))
        self.rounds_done += 1

    def phase_loss(self, phase: Phase, u: torch.Tensor, labels: torch.Tensor,
                   index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch loss L_mds + 0.1·L_cross + λ·L_q for the active side's output u (B×K).

        The cross term reads the OTHER side's buffer. In training mode u is then written to the
        active side's buffer (the loss value does not depend on that write).
        """
        if phase not in PHASES:
            raise InvalidInputError(f"phase must be one of {PHASES}, got {phase!r}")
        cfg = self.config
        if u.ndim != 2 or u.shape[1] != cfg.bits:
            raise InvalidInputError(f"u must be B×{cfg.bits}, got {tuple(u.shape)}")
        idx = self._check_index(index, u.shape[0])
        other = self.B_y if phase == "image" else self.B_x
        kw = dict(gamma=cfg.gamma, sigma=cfg.sigma, unlabeled=cfg.unlabeled)
        terms = {
            "mds": mds_loss(u, self.proxies, labels, **kw),
            "cross": cross_loss(u, other[idx], self.proxies, labels, **kw),
            "quant": quantization_loss(u, self.B[idx]),
        }
        total = terms["mds"] + cfg.cross_weight * terms["cross"] + cfg.quant_weight * terms["quant"]
        if self.training:
            self.update_buffer(phase, idx, u)
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["total"] = float(total.detach())
        return total, out


def build_optimizers(config: DCPHConfig, image_params: Iterable[nn.Parameter],
                     text_params: Iterable[nn.Parameter]) -> dict[str, tuple[torch.optim.Optimizer, Any]]:
    """One SGD per side (momentum 0, weight decay 1e-5) with its per-epoch scheduler.

    image: StepLR(50, 0.5); text: CosineAnnealingWarmRestarts(T_0=20). Step each scheduler once after
    each of ITS side's epochs (so after `rounds` steps in total), never after the other side's.
    A side without parameters (a text-only run: the dataset has no images) gets no optimizer, and its
    learning rate is not looked up.
    """
    out: dict[str, tuple[torch.optim.Optimizer, Any]] = {}
    for phase, params in (("image", image_params), ("text", text_params)):
        params = list(params)
        if not params:
            continue
        opt = torch.optim.SGD(params, lr=config.learning_rate(phase), momentum=config.momentum, weight_decay=config.weight_decay)
        if phase == "image":
            sched = torch.optim.lr_scheduler.StepLR(opt, config.image_step_size, config.image_step_gamma)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=config.text_t0)
        out[phase] = (opt, sched)
    return out
