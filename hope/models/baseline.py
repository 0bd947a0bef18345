"""The baseline: a Transformer++ block (pre-norm RMSNorm, rotary positions, SwiGLU, full causal attention
over `max_len`, sliding past it), the opponent the papers compare HOPE with (architecture.md, "The block")."""

from __future__ import annotations

import torch
from torch import nn

from hope.config import Config
from hope.layers.attention import SlidingWindowAttention
from hope.layers.mlp import SwiGLU


def swiglu_hidden(dim: int, ff_mult: float) -> int:
    """Llama's sizing: 2/3 of ff_mult * dim so SwiGLU's three matrices cost what a GELU MLP's two would."""
    return max(1, int(round(2 * ff_mult * dim / 3)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(cfg.dim), nn.RMSNorm(cfg.dim)
        self.attn = SlidingWindowAttention(cfg.dim, cfg.num_heads, cfg.max_len, cfg.dropout)
        self.mlp = SwiGLU(cfg.dim, swiglu_hidden(cfg.dim, cfg.ff_mult))
        self.drop = nn.Dropout(cfg.dropout)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
        return {"attn": self.attn.empty_cache(batch, device, dtype)}

    def forward(self, x: torch.Tensor, pos: int, state: dict, mem_gate: torch.Tensor | float,
                surprise_scale: torch.Tensor | float) -> tuple[torch.Tensor, dict]:
        attn, cache = self.attn(self.norm1(x), pos, state["attn"])
        x = x + self.drop(attn)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, {"attn": cache}
