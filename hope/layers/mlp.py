"""Static feed-forward blocks: SwiGLU (the baseline's, as in Llama) and a plain GELU MLP (CMS slow level)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.roles import RESIDUAL_OUT


class SwiGLU(nn.Module):
    PARAM_ROLES = {"down.weight": (RESIDUAL_OUT,)}  # the residual branch's output (roles.py)

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # 2 x (B, T, hidden)
        return self.down(F.silu(gate) * up)


class MLP(nn.Module):
    PARAM_ROLES = {"down.weight": (RESIDUAL_OUT,)}  # the residual branch's output (roles.py)

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))
