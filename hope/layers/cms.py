"""Continuum Memory System: a chain of MLP levels updated at different frequencies (Nested Learning eq. 71).

    fast level  an mlp memory box (`hope.ops.memory`: ``M(z) = z + (W1_0 + D) silu(W2 z)``) whose output-layer
                change ``D`` lives in the carried state and is written in context, every token exactly (the
                surrogate objective below); with `cms_objective: task`, once per `update_frequencies.error_update`
                tokens (its chunk).
    slow level  an ordinary MLP whose parameters the training loop steps only every
                `update_frequencies.optimizer_step` optimiser steps (gradients accumulate in between); it declares
                the `slow` role for its parameters (`PARAM_ROLES`, `hope.layers.roles`).

In-context objective of the fast level (the local surrogate, architecture.md, "CMS fast level objective"): the paper's task
loss would need a backward pass through the layers above inside the forward. Instead the fast level is an
associative memory that learns to predict the next normalised hidden state from the current one,
k_t = n(h_{t-1}) -> v_t = n(h_t), with the same delta rule as the SMT (one op, `hope.ops.memory`, full retention,
a learned rate). Its read at n(h_t), after the write of token t, is a guess of the next hidden state, which is
what a language model's FFN contributes to.

`cms_objective: task` is the paper's objective instead (eq. 71: the level is updated by the summed gradient of
the task loss over its chunk). Only the language model sees that loss, so there this layer only reads, at the
state committed before the chunk, and `LanguageModel` applies `task_step` between chunks with the gradient of
the next-byte loss through every layer above (see `hope.models.lm`). That step is plain gradient descent on a
sum over the chunk, not a delta rule, so its rate keeps the 1/chunk bound.

`cms: mlp` (ablation) replaces the chain with one plain MLP of the same hidden width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.layers.chunking import state_dtype
from hope.layers.roles import META, NO_DECAY, SLOW
from hope.layers.mlp import MLP
from hope.ops.memory import box_apply, delta_rule_chunked, features, unit_write

# Tokens per block of the surrogate's chunkwise write. Its keys and targets never read its state, and the write is
# exact at any block size, so blocks are a speed setting only: few large blocks mean few launches (architecture.md,
# "Execution on accelerators"); 256 bounds the (block x block) products.
FAST_BLOCK = 256
TASK_ETA_MAX = 0.5  # cms_objective: task: the rate of its summed-gradient step is TASK_ETA_MAX / chunk at most


class CMSState(NamedTuple):
    """The fast level's carried state."""

    change: Tensor  # (B, 1, C, h) learned change of the output layer, W1 - W1_0, after the last token written
    prev: Tensor  # (B, C) n(h) of the last token seen: the key of the next write (unused by the task objective)


class ContinuumMemory(nn.Module):
    # The fast level's prior and rate are meta-parameters (priors not decayed); the slow level steps on its own
    # schedule (roles.py).
    PARAM_ROLES = {"prior_w1": (META, NO_DECAY), "prior_w2": (META, NO_DECAY), "eta_logit": (META,),
                   "slow.up.weight": (SLOW,), "slow.down.weight": (SLOW,)}

    def __init__(self, dim: int, hidden: int, chunk: int, kind: str = "chain", objective: str = "surrogate"):
        super().__init__()
        self.kind, self.chunk, self.objective = kind, chunk, objective
        self.slow = MLP(dim, hidden)
        if kind == "chain":
            fast_hidden = dim  # per-sample fast weights: kept narrower than the slow level
            self.prior_w1 = nn.Parameter(torch.randn(1, dim, fast_hidden) * 0.02)  # (1, C, h) meta-learned W1_0
            self.prior_w2 = nn.Parameter(torch.randn(1, fast_hidden, dim) / math.sqrt(dim))  # (1, h, C) hidden layer
            self.eta_logit = nn.Parameter(torch.tensor(-1.0))
            self.fast_gain = nn.Parameter(torch.zeros(dim))  # starts silent

    @property
    def has_fast(self) -> bool:
        return self.kind == "chain"

    def prior(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return self.prior_w1.to(dtype)[None], self.prior_w2.to(dtype)[None]  # (1, 1, C, h), (1, 1, h, C)

    def init_state(self, batch: int, device: torch.device) -> CMSState:
        dt = state_dtype(self.prior_w1)
        dim, h = self.prior_w1.shape[1:]
        return CMSState(torch.zeros(batch, 1, dim, h, device=device, dtype=dt), torch.zeros(batch, dim, device=device, dtype=dt))

    def task_step(self, change: Tensor, grad: Tensor, mem_gate: Tensor | float) -> Tensor:
        """cms_objective: task. One gradient step of the fast change D (B, 1, C, h) on the task loss summed over a
        chunk (Nested Learning eq. 71); grad = its gradient, per sample. Outer gradients reach D and eta_logit."""
        with torch.autocast(device_type=change.device.type, enabled=False):
            return change - TASK_ETA_MAX / self.chunk * torch.sigmoid(self.eta_logit) * mem_gate * grad

    def forward(self, h: Tensor, state: CMSState | None, mem_gate: Tensor | float) -> tuple[Tensor, CMSState | None]:
        """h (B, L, C) new inputs -> the level's output (B, L, C) and its state after the last token.

        The surrogate's keys and targets never read the fast weights, so the write of every token is exact in any
        blocking (`FAST_BLOCK`) and the state is simply the change after the last token: a call may end anywhere.
        The task objective only reads here, at the state `LanguageModel` committed before the chunk.
        """
        if not self.has_fast:
            return self.slow(h), state
        B, L, C = h.shape
        with torch.autocast(device_type=h.device.type, enabled=False):
            fd = state_dtype(h)
            prior = self.prior(fd)
            cur = F.normalize(h.to(fd), dim=-1)[:, None]  # (B, 1, L, C)
            if self.objective == "task":  # read only, at the fast weights the LM committed before this chunk
                fast, change = box_apply(prior, state.change, cur, "mlp") - cur, state.change
            else:
                # Keys k_t = n(h_{t-1}) and queries n(h_t) are one sequence shifted by a token: features once.
                f, base = features(prior, torch.cat([state.prev[:, None, None], cur], dim=2), "mlp")  # (B, 1, 1 + L, .)
                kappa, tau = unit_write(f[:, :, :-1], base[:, :, :-1], cur)  # v_t = n(h_t)
                fq, base_q = f[:, :, 1:], base[:, :, 1:]
                eta = (torch.sigmoid(self.eta_logit) * mem_gate).expand(B, 1, L)
                reads, change = delta_rule_chunked(state.change, kappa, tau, fq, eta, torch.ones_like(eta), FAST_BLOCK)
                fast = base_q + reads - cur  # M_t(n(h_t)) - n(h_t), read after token t's write
            fast = fast[:, 0]  # (B, L, C)
        fast = (fast * self.fast_gain).to(h.dtype)
        out = fast + self.slow(h + fast)
        if self.objective == "task":
            return out, state
        return out, CMSState(change, cur[:, 0, -1])
