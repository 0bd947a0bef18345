"""Continuum Memory System: a chain of MLP levels updated at different frequencies (Nested Learning eq. 71).

    fast level  fast weights in the carried state, updated in context every `update_frequencies.error_update`
                tokens (its chunk); read at the state left by the previous chunk, so its weights change only
                at chunk boundaries.
    slow level  an ordinary MLP whose parameters the training loop steps only every
                `update_frequencies.optimizer_step` optimiser steps (gradients accumulate in between); its
                parameter names contain ".slow." so the loop can find them.

In-context objective of the fast level (the local surrogate allowed by architecture.md §4): the paper's task
loss would need a backward pass through the layers above inside the forward. Instead the fast level is an
associative memory that learns to predict the next normalised hidden state from the current one,
k_t = n(h_{t-1}) -> v_t = n(h_t), with the same delta-rule update as the SMT (`hope.ops.memory`, no momentum,
full retention). Its read at n(h_t) is then a guess of the next hidden state, which is what a language
model's FFN contributes to.

`cms: mlp` (ablation) replaces the chain with one plain MLP of the same hidden width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.chunking import chunk_spans, state_dtype
from hope.layers.mlp import MLP
from hope.ops.memory import memory_apply, memory_chunked

FAST_ETA_MAX = 0.5


class ContinuumMemory(nn.Module):
    def __init__(self, dim: int, hidden: int, chunk: int, kind: str = "chain"):
        super().__init__()
        self.kind, self.chunk = kind, chunk
        self.slow = MLP(dim, hidden)
        if kind == "chain":
            fast_hidden = dim  # per-sample fast weights: kept narrower than the slow level
            self.init_w1 = nn.Parameter(torch.randn(1, dim, fast_hidden) * 0.02)  # (1, C, h) meta-learned init
            self.init_w2 = nn.Parameter(torch.randn(1, fast_hidden, dim) / math.sqrt(dim))  # (1, h, C)
            self.eta_logit = nn.Parameter(torch.tensor(-1.0))
            self.fast_gain = nn.Parameter(torch.zeros(dim))  # starts silent

    @property
    def has_fast(self) -> bool:
        return self.kind == "chain"

    def init_state(self, batch: int, device: torch.device) -> dict:
        w1 = self.init_w1.to(state_dtype(self.init_w1)).expand(batch, -1, -1)[:, None].to(device)  # (B, 1, C, h)
        w2 = self.init_w2.to(state_dtype(self.init_w2)).expand(batch, -1, -1)[:, None].to(device)
        return {"w": (w1, w2), "prev": torch.zeros(batch, self.init_w1.shape[1], device=device, dtype=state_dtype(self.init_w1))}

    def forward(self, h: torch.Tensor, state: dict | None, n_commit: int, mem_gate: float) -> tuple[torch.Tensor, dict | None]:
        """h (B, L, C): the fast level's uncommitted tail followed by new inputs (tail empty for cms: mlp)."""
        if not self.has_fast:
            return self.slow(h), state
        B, L, C = h.shape
        fd = state_dtype(h)
        with torch.autocast(device_type=h.device.type, enabled=False):
            cur = F.normalize(h.to(fd), dim=-1)  # (B, L, C)
            prev = torch.cat([state["prev"][:, None], cur[:, :-1]], dim=1)  # n(h_{t-1})
            keys, vals, reads = prev[:, None], cur[:, None], []  # (B, 1, L, C)
            # ETA_MAX / chunk: all gradients of a chunk are taken at one state and add up (see SMT.eta_bound)
            eta_all = (FAST_ETA_MAX / self.chunk * torch.sigmoid(self.eta_logit) * mem_gate).expand(B, 1, L)
            ones = torch.ones(B, 1, L, device=h.device, dtype=fd)
            w, committed = state["w"], state["w"]
            for s, e, complete in chunk_spans(L, self.chunk):
                reads.append(memory_apply(w, cur[:, None, s:e], "mlp") - cur[:, None, s:e])  # read at chunk start
                if complete and e <= n_commit:
                    _, w, _ = memory_chunked(w, None, keys[:, :, s:e], vals[:, :, s:e], None, eta_all[..., s:e],
                                             ones[..., s:e], ones[..., s:e], self.chunk, kind="mlp",
                                             self_target=False, precondition=False)
                if e == n_commit:
                    committed = w
            fast = torch.cat(reads, dim=2)[:, 0]  # (B, L, C)
        fast = (fast * self.fast_gain).to(h.dtype)
        new_prev = cur[:, n_commit - 1] if n_commit > 0 else state["prev"]
        return fast + self.slow(h + fast), {"w": committed, "prev": new_prev}
