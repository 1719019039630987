"""Pieces shared by the recipes: the one tanh hash head, and the torch form of the sign convention."""

from __future__ import annotations

import re
from typing import Literal, Mapping, TypeVar, get_args

import torch
from torch import nn

from cmhash.errors import ConfigError

HeadInit = Literal["default", "kaiming_fan_out", "normal"]
HEAD_INIT: tuple[str, ...] = get_args(HeadInit)

T = TypeVar("T")


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """±1 with sign(0) = +1, the convention of cmhash.runtime.codes (never torch.sign, which gives 0)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def check_head_init(init: str, owner: str) -> None:
    """Raise ConfigError naming `owner` (e.g. "DHaPHConfig.head_init") unless `init` is one of HEAD_INIT."""
    if init not in HEAD_INIT:
        raise ConfigError(f"{owner}={init!r}: choose one of {HEAD_INIT}")


class HashHead(nn.Module):
    """`h = tanh(Dropout(p)(Linear(d→K)(f)))`, the hash head of every method.

    Dropout sits on the pre-tanh logits, as the DHaPH and DMsH-LN authors do; DCPH and the pairwise
    baseline use p = 0 (an identity). init: "default" keeps PyTorch's Linear init (DHaPH, DCPH's
    image side); "kaiming_fan_out" is Kaiming-uniform with fan_out and a zero bias (DMsH-LN);
    "normal" is N(0, std) weights and a zero bias (DCPH's BoW text layer, std 0.01).
    """

    def __init__(self, in_dim: int, bits: int, dropout: float = 0.2, init: str = "default",
                 std: float = 0.01) -> None:
        super().__init__()
        check_head_init(init, "HashHead init")
        self.fc = nn.Linear(in_dim, bits)
        self.dropout = nn.Dropout(dropout)
        if init == "kaiming_fan_out":
            nn.init.kaiming_uniform_(self.fc.weight, mode="fan_out")
            nn.init.zeros_(self.fc.bias)
        elif init == "normal":
            nn.init.normal_(self.fc.weight, mean=0.0, std=std)
            nn.init.zeros_(self.fc.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dropout(self.fc(f)))


# Before the heads were one class, DCPH and the pairwise baseline saved theirs as
# `nn.Sequential(Linear, Tanh)`: `towers.<m>.head.0.weight` where HashHead has `.head.fc.weight`.
_LEGACY_HEAD_KEY = re.compile(r"^(towers\.[a-z]+\.head\.)0\.(weight|bias)$")


def upgrade_head_keys(state: Mapping[str, T]) -> dict[str, T]:
    """A checkpoint's state dict with the old DCPH / pairwise head names mapped to HashHead's (the
    one upgrade step for weights saved before the merge); every other key is kept as it is."""
    return {_LEGACY_HEAD_KEY.sub(r"\1fc.\2", key): value for key, value in state.items()}
