"""MLP variants, chosen by name from :data:`MLPS`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.core.config import ModelConfig
from pgolf.core.model.layers import CastedLinear


def mlp_hidden(cfg: ModelConfig) -> int:
    """Hidden width: explicit ``mlp_hidden``, else mlp_mult * dim; SwiGLU takes 2/3 of that rounded
    up to a multiple of 64 (704 at dim 512, mult 2) so its three matrices cost about what relu^2's two do."""
    if cfg.mlp_hidden:
        return cfg.mlp_hidden
    hidden = cfg.mlp_mult * cfg.model_dim
    if cfg.mlp == "swiglu":
        return 64 * math.ceil(hidden * 2 / 3 / 64)
    return int(hidden)


class ReLU2MLP(nn.Module):
    """proj(relu(fc(x))^2): the baseline."""

    def __init__(self, dim: int, hidden: int, cfg: ModelConfig):
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class LeakyReLU2MLP(ReLU2MLP):
    """proj(leaky_relu(fc(x), slope)^2)."""

    def __init__(self, dim: int, hidden: int, cfg: ModelConfig):
        super().__init__(dim, hidden, cfg)
        self.slope = cfg.leaky_slope

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.leaky_relu(self.fc(x), self.slope).square())


class SwiGLUMLP(nn.Module):
    """proj(silu(gate(x)) * fc(x)): three matrices."""

    def __init__(self, dim: int, hidden: int, cfg: ModelConfig):
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.gate = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.silu(self.gate(x)) * self.fc(x))


MLPS: dict[str, type[nn.Module]] = {"relu2": ReLU2MLP, "leaky_relu2": LeakyReLU2MLP, "swiglu": SwiGLUMLP}


def build_mlp(cfg: ModelConfig) -> nn.Module:
    return MLPS[cfg.mlp](cfg.model_dim, mlp_hidden(cfg), cfg)
