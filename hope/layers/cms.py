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

`cms_objective: task` is the paper's objective instead (eq. 71: the level is updated by the summed gradient of
the task loss over its chunk). Only the language model sees that loss, so there this layer only reads, at the
state committed before the chunk, and `LanguageModel` applies `task_step` between chunks with the gradient of
the next-byte loss through every layer above (see `hope.models.lm`).

`cms: mlp` (ablation) replaces the chain with one plain MLP of the same hidden width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.chunking import state_dtype
from hope.layers.mlp import MLP
from hope.ops.memory import silu_grad

FAST_ETA_MAX = 0.5


class ContinuumMemory(nn.Module):
    def __init__(self, dim: int, hidden: int, chunk: int, kind: str = "chain", objective: str = "surrogate"):
        super().__init__()
        self.kind, self.chunk, self.objective = kind, chunk, objective
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
        if self.objective == "task":  # no surrogate key to carry: only the fast weights
            return {"w": (w1, w2)}
        return {"w": (w1, w2), "prev": torch.zeros(batch, self.init_w1.shape[1], device=device, dtype=state_dtype(self.init_w1))}

    def step_size(self, mem_gate: float) -> torch.Tensor:
        """The fast level's inner learning rate: FAST_ETA_MAX / chunk (all gradients of a chunk are taken at one
        state and add up, see SMT.eta_bound) times a learned sigmoid scale, times the mem_write gate."""
        return FAST_ETA_MAX / self.chunk * torch.sigmoid(self.eta_logit) * mem_gate

    def task_step(self, w: tuple[torch.Tensor, torch.Tensor], grads: tuple[torch.Tensor, torch.Tensor], mem_gate: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """cms_objective: task. One gradient step of the fast weights w = (w1, w2) on the task loss summed over a
        chunk (Nested Learning eq. 71); grads = its gradient, per sample. Outer gradients reach w and eta_logit."""
        with torch.autocast(device_type=w[0].device.type, enabled=False):
            eta = self.step_size(mem_gate)
            return w[0] - eta * grads[0], w[1] - eta * grads[1]

    def forward(self, h: torch.Tensor, state: dict | None, n_commit: int, mem_gate: float, n_out: int | None = None
                ) -> tuple[torch.Tensor, dict | None]:
        """h (B, L, C): the fast level's uncommitted tail followed by new inputs (tail empty for cms: mlp and for
        the task objective, which never writes here and ignores n_commit).

        Returns the output of the last `n_out` tokens (B, n_out, C) (default all L: the caller discards the
        replayed tail's outputs, so they are not computed) and the committed state.
        """
        if not self.has_fast:
            return self.slow(h), state
        B, L, C = h.shape
        n_out = L if n_out is None else n_out
        fd = state_dtype(h)
        chunk = self.chunk
        with torch.autocast(device_type=h.device.type, enabled=False):
            cur = F.normalize(h.to(fd), dim=-1)  # (B, L, C)
            if self.objective == "task":  # read only, at the fast weights the LM committed before this chunk
                w1, w2 = state["w"]  # (B, 1, C, h), (B, 1, h, C)
                fast = (F.silu(cur[:, None, L - n_out:] @ w2.mT) @ w1.mT)[:, 0]  # (B, n_out, C): M_c(n(h_t)) - n(h_t)
                fast = (fast * self.fast_gain).to(h.dtype)
                return fast + self.slow(h[:, L - n_out:] + fast), state
            # Rows [n(h_{s-1}), n(h_s), ..., n(h_{e-1})] of a chunk hold both its keys (the first C rows: k_t =
            # n(h_{t-1})) and its read inputs (the last C rows), so the first layer at the chunk-start state is
            # one matmul over C + 1 rows for the read and the write together.
            ext = torch.cat([state["prev"][:, None], cur], dim=1)[:, None]  # (B, 1, L + 1, C)
            neg_eta = -self.step_size(mem_gate)
            w1, w2 = state["w"]  # (B, 1, C, h), (B, 1, h, C)
            # Overlapping windows of C + 1 rows, one per committing chunk, cut as views (one autograd node, not
            # one per chunk); a chunk that does not commit only needs the rows of the reads that are wanted.
            n_write = min(L, n_commit) // chunk
            windows = list(ext.unfold(2, chunk + 1, chunk).transpose(-1, -2).unbind(2))[:n_write] if n_write else []
            start = L - n_out  # first wanted read
            reads = []
            for s in range(0, L, chunk):
                n = s // chunk
                if n >= n_write:  # read only, at the state left by the last commit: M_c(n(h_t)) - n(h_t)
                    first = max(s, start)
                    if first < min(s + chunk, L):
                        reads.append(F.silu(ext[:, :, first + 1:min(s + chunk, L) + 1] @ w2.mT) @ w1.mT)
                    continue
                x = windows[n]  # (B, 1, C + 1, C)
                z = x @ w2.mT  # (B, 1, C + 1, h)
                a = F.silu(z)
                y = a @ w1.mT  # (B, 1, C + 1, C): W1 silu(W2 x) for keys and reads
                if s + chunk > start:
                    reads.append(y[:, :, 1 + max(0, start - s):])  # read at the chunk-start state
                # Delta rule, no momentum, full retention (hope.ops.memory with alpha = 1): the gradient of
                # 0.5 ||M_c(k_t) - v_t||^2 summed over the chunk, at the chunk-start state.
                k, zk, ak = x[:, :, :-1], z[:, :, :-1], a[:, :, :-1]
                e = k + y[:, :, :-1] - x[:, :, 1:]  # (B, 1, C, C) error M_c(k_t) - v_t, v_t = n(h_t)
                u = (e @ w1) * silu_grad(zk, ak)  # (B, 1, C, h)
                w1, w2 = w1 + (e * neg_eta).mT @ ak, w2 + (u * neg_eta).mT @ k
            committed = (w1, w2)
            fast = torch.cat(reads, dim=2)[:, 0]  # (B, n_out, C)
        fast = (fast * self.fast_gain).to(h.dtype)
        new_prev = cur[:, n_commit - 1] if n_commit > 0 else state["prev"]
        return fast + self.slow(h[:, L - n_out:] + fast), {"w": committed, "prev": new_prev}
