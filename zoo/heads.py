"""Pieces shared by the recipes: the tanh hash head and the torch form of the sign convention."""

from __future__ import annotations

import torch
from torch import nn

from cmhash.errors import ConfigError

HASH_INIT = ("default", "kaiming_fan_out")


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """±1 with sign(0) = +1, the convention of cmhash.runtime.codes (never torch.sign, which gives 0)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class HashHead(nn.Module):
    """`h = tanh(Dropout(p)(Linear(d→K)(f)))`: dropout sits on the pre-tanh logits, as the authors do.

    init="default" keeps PyTorch's Linear init (DHaPH); "kaiming_fan_out" is Kaiming-uniform with
    fan_out and a zero bias (DMsH-LN).
    """

    def __init__(self, in_dim: int, bits: int, dropout: float = 0.2, init: str = "default") -> None:
        super().__init__()
        if init not in HASH_INIT:
            raise ConfigError(f"HashHead: init={init!r}; choose one of {HASH_INIT}")
        self.fc = nn.Linear(in_dim, bits)
        self.dropout = nn.Dropout(dropout)
        if init == "kaiming_fan_out":
            nn.init.kaiming_uniform_(self.fc.weight, mode="fan_out")
            nn.init.zeros_(self.fc.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dropout(self.fc(f)))
