"""Causal sliding-window softmax attention with rotary positions and a carried KV cache.

One module serves both models: HOPE's short-term memory (window = `attn_window`) and the baseline's full
attention (window = `max_len`, which then slides past `max_len` as real Transformers do). The cache holds the
last `window - 1` keys/values, so processing a stream segment by segment equals one pass over it. Past the window
(a cache, or T > window) the attention is block-local (hope.ops.attention: memory O(T * window), not O(T^2)),
except one query against a cache inside its window (generation), which needs no mask at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.roles import RESIDUAL_OUT
from hope.ops.attention import sliding_window_attention


def rotary_tables(positions: torch.Tensor, head_dim: int, dtype: torch.dtype = torch.float32,
                  base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (T, head_dim/2) for absolute `positions` (T,), in at least fp32."""
    dtype = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim))
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]  # (T, d/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (RoFormer); x (B, H, T, d), cos/sin (T, d/2). Relative offsets survive caching."""
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


class SlidingWindowAttention(nn.Module):
    PARAM_ROLES = {"proj.weight": (RESIDUAL_OUT,)}  # the residual branch's output (roles.py)

    def __init__(self, dim: int, num_heads: int, window: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim, self.window = num_heads, dim // num_heads, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pos: int, cache: dict | None) -> tuple[torch.Tensor, dict | None]:
        """x (B, T, C) at absolute positions pos..pos+T-1; cache {"k","v"} (B, H, L, d) of the L preceding tokens."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d)
        cos, sin = rotary_tables(torch.arange(pos, pos + T, device=x.device), self.head_dim, x.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if cache is not None and cache["k"].shape[2] > 0:
            past = cache["k"].shape[2]
            k = torch.cat([cache["k"], k], dim=2)  # (B, H, L+T, d)
            v = torch.cat([cache["v"], v], dim=2)
        drop = self.dropout if self.training else 0.0
        if past == 0 and T <= self.window:  # the window reaches back to the start: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        elif T == 1 and past < self.window:  # one query (generation) and a cache inside its window: every key counts
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # block-local (hope.ops.attention): memory O(T * window), no (T, L+T) mask
            y = sliding_window_attention(q, k, v, self.window, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        new_cache = None
        if cache is not None:
            keep = self.window - 1
            new_cache = {"k": k[:, :, -keep:] if keep > 0 else k[:, :, :0], "v": v[:, :, -keep:] if keep > 0 else v[:, :, :0]}
        return self.proj(y), new_cache

    def empty_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
        shape = (batch, self.num_heads, 0, self.head_dim)
        return {"k": torch.zeros(shape, device=device, dtype=dtype), "v": torch.zeros(shape, device=device, dtype=dtype)}
