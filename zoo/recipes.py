"""The three methods (and the pairwise baseline) behind one small interface the shared loop drives.

Each method module keeps its own loss, extra networks and optimizers as its paper has them; a
`Recipe` only says which towers run in an epoch, how to compute the batch loss, and which
optimizers and schedulers to step when. DCPH's alternating image/text rounds are the same loop with
one active tower per epoch.

    recipe = make_recipe("dmsh", "offline", bits=64, seed=0)
    image_head, text_head = recipe.heads(1280, 384)
    recipe.setup(image_params, text_params, train_labels, steps_per_epoch)
    for epoch in range(recipe.epochs):
        for batch ...:
            h = {m: tower[m](x[m]) for m in recipe.modalities(epoch)}
            loss, terms = recipe.loss(h, labels, epoch, index)
            recipe.zero_grad(); loss.backward(); recipe.step(epoch)
        recipe.end_epoch(epoch)
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from cmhash.errors import ConfigError, InvalidInputError
from cmhash.zoo.config_io import JsonConfig
from cmhash.zoo.heads import HashHead

from .methods import dcph, dhaph, dmsh, pairwise

Params = Iterable[nn.Parameter]


class Recipe:
    """Base: both towers every epoch, one optimizer list stepped per batch."""

    name: ClassVar[str]
    config_class: ClassVar[type[JsonConfig]]

    def __init__(self, config: JsonConfig, modalities: tuple[str, ...] = ("image", "text")) -> None:
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.towers = modalities
        self.method: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}

    # --------------------------------------------------------------------------------- properties
    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def epochs(self) -> int:
        return self.config.epochs

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def drop_last(self) -> bool:
        return False

    @property
    def train_backbones(self) -> bool:
        return getattr(self.config, "train_backbones", False)

    @property
    def backbones(self) -> dict[str, str]:
        return {"image": self.config.image_backbone, "text": self.config.text_backbone}

    # ------------------------------------------------------------------------------------- hooks
    def heads(self, image_dim: int, text_dim: int) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def setup(self, params: dict[str, tuple[list[nn.Parameter], list[nn.Parameter]]],
              train_labels: torch.Tensor, steps_per_epoch: int) -> dict[str, Any]:
        """Build the method state and optimizers; `params[m]` = (backbone params, head params)."""
        raise NotImplementedError

    def modalities(self, epoch: int) -> tuple[str, ...]:
        return self.towers

    def loss(self, h: dict[str, torch.Tensor], labels: torch.Tensor, epoch: int,
             index: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self, epoch: int) -> None:
        for opt in self.optimizers.values():
            opt.step()
        for sched in self.schedulers.values():
            sched.step()

    def end_epoch(self, epoch: int) -> None:
        """Per-epoch hooks; none by default."""

    # -------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict() if self.method is not None else {},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.method is not None:
            self.method.load_state_dict(state["method"], strict=True)
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])

    def _need_both(self) -> None:
        if self.towers != ("image", "text"):
            raise ConfigError(f"{self.name} trains both towers; this dataset gives only {self.towers}")


class DCPHRecipe(Recipe):
    """Alternating rounds: epoch 2r trains the image tower, 2r+1 the text tower (one per epoch).

    With only a text tower (e.g. MIRFlickr tags without images) every epoch is a text phase, and
    the cross term compares against B_x, which then never changes from its random start: set
    `cross_weight=0` for such runs.
    """

    name = "dcph"
    config_class = dcph.DCPHConfig

    @property
    def phases(self) -> tuple[str, ...]:
        return self.towers

    @property
    def epochs(self) -> int:
        return self.config.rounds * len(self.phases)

    def modalities(self, epoch: int) -> tuple[str, ...]:
        return (self.phases[epoch % len(self.phases)],)

    def heads(self, image_dim: int, text_dim: int) -> tuple[nn.Module, nn.Module]:
        """No dropout; the BoW MLP's last layer has N(0, text_init_std) weights (paper), others PyTorch's init."""
        cfg = self.config
        text_init = "normal" if cfg.text_backbone == "bow-mlp" else "default"
        return (HashHead(image_dim, cfg.bits, dropout=0.0),
                HashHead(text_dim, cfg.bits, dropout=0.0, init=text_init, std=cfg.text_init_std))

    def setup(self, params, train_labels, steps_per_epoch):
        method, report = dcph.DCPH.build(self.config, len(train_labels), train_labels.shape[1])
        self.method = method.train()
        opts = dcph.build_optimizers(self.config, [*params["image"][0], *params["image"][1]],
                                     [*params["text"][0], *params["text"][1]])
        self.optimizers = {m: opts[m][0] for m in self.phases}
        self.schedulers = {m: opts[m][1] for m in self.phases}
        return {"proxies": report.to_dict()}

    def loss(self, h, labels, epoch, index):
        (phase,) = self.modalities(epoch)
        return self.method.phase_loss(phase, h[phase], labels, index)

    def step(self, epoch: int) -> None:
        self.optimizers[self.modalities(epoch)[0]].step()  # never the inactive side (weight decay)

    def end_epoch(self, epoch: int) -> None:
        (phase,) = self.modalities(epoch)
        self.schedulers[phase].step()
        if phase == self.phases[-1]:
            self.method.end_round()


class DHaPHRecipe(Recipe):
    """Self-paced contrastive ×3 + HIER; the loss counts epochs from 1."""

    name = "dhaph"
    config_class = dhaph.DHaPHConfig

    def heads(self, image_dim, text_dim):
        cfg = self.config
        return (HashHead(image_dim, cfg.bits, cfg.hash_dropout, cfg.head_init),
                HashHead(text_dim, cfg.bits, cfg.hash_dropout, cfg.head_init))

    def setup(self, params, train_labels, steps_per_epoch):
        self._need_both()
        self.method = dhaph.DHaPHLoss(self.config, seed=self.config.seed)
        backbone = [*params["image"][0], *params["text"][0]]
        heads = [*params["image"][1], *params["text"][1]]
        opt, sched, hier_opt = dhaph.build_optimizers(self.config, backbone, heads, self.method,
                                                      self.config.epochs * steps_per_epoch)
        self.optimizers = {"bertadam": opt, "hier": hier_opt}
        self.schedulers = {"bertadam": sched}
        return {}

    def loss(self, h, labels, epoch, index):
        return self.method.loss(h["image"], h["text"], labels, epoch + 1)

    def state_dict(self):
        state = super().state_dict()
        rng = self.method.rng_state()
        if rng is not None:
            state["mining_rng"] = rng
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "mining_rng" in state:
            self.method.set_rng_state(state["mining_rng"])


class DMsHLNRecipe(Recipe):
    """Multi-similarity ×3 with the LabelNet guide; the label stage runs in `setup`."""

    name = "dmsh"
    config_class = dmsh.DMsHLNConfig

    @property
    def drop_last(self) -> bool:
        return self.config.drop_last

    def heads(self, image_dim, text_dim):
        cfg = self.config
        return (HashHead(image_dim, cfg.bits, cfg.hash_dropout, cfg.head_init),
                HashHead(text_dim, cfg.bits, cfg.hash_dropout, cfg.head_init))

    def setup(self, params, train_labels, steps_per_epoch):
        self._need_both()
        self.method = dmsh.DMsHLN(self.config, train_labels.shape[1])
        stats = self.method.prepare(train_labels)
        opt, sched = dmsh.build_optimizer(self.config, [*params["image"][0], *params["text"][0]],
                                          [*params["image"][1], *params["text"][1]], steps_per_epoch)
        self.optimizers, self.schedulers = {"bertadam": opt}, {"bertadam": sched}
        return {"label_stage": stats}

    def loss(self, h, labels, epoch, index):
        return self.method.loss(h["image"], h["text"], labels, epoch)


class PairwiseRecipe(Recipe):
    """The DCMH-style pairwise baseline on frozen features."""

    name = "pairwise"
    config_class = pairwise.PairwiseConfig

    def heads(self, image_dim, text_dim):
        return HashHead(image_dim, self.bits, dropout=0.0), HashHead(text_dim, self.bits, dropout=0.0)

    def setup(self, params, train_labels, steps_per_epoch):
        self._need_both()
        heads = [*params["image"][1], *params["text"][1]]
        self.optimizers = {"adam": torch.optim.Adam(heads, lr=self.config.lr, weight_decay=self.config.weight_decay)}
        return {}

    def loss(self, h, labels, epoch, index):
        total = pairwise.pairwise_nll(h["image"], h["text"], labels)
        return total, {"total": float(total.detach())}


RECIPES: dict[str, type[Recipe]] = {r.name: r for r in (DCPHRecipe, DHaPHRecipe, DMsHLNRecipe, PairwiseRecipe)}
PRESETS = ("paper", "offline")


def recipe_class(name: str) -> type[Recipe]:
    if name not in RECIPES:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def make_config(method: str, preset: str = "offline", **changes: Any) -> JsonConfig:
    """`<Method>Config.<preset>(**changes)`; every method names its code length `bits`."""
    cls = recipe_class(method)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = set(cls.config_class.__dataclass_fields__)
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(f"{method} has no setting {', '.join(unknown)}; its settings are: {', '.join(sorted(fields))}")
    return getattr(cls.config_class, preset)(**changes)


def make_recipe(method: str, config: JsonConfig | dict[str, Any],
                modalities: tuple[str, ...] = ("image", "text")) -> Recipe:
    cls = recipe_class(method)
    if isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    if not modalities or any(m not in ("image", "text") for m in modalities):
        raise InvalidInputError(f"modalities must be a non-empty subset of ('image', 'text'), got {modalities}")
    return cls(config, tuple(modalities))
