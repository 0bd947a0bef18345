"""The HOPE block (architecture.md §4):

    x = x + Mixer(norm(x))    Mixer = g * LocalAttention + (1 - g) * SelfModifyingMemory + EpisodicBank
    x = x + CMS(norm(x))      Continuum Memory System (fast in-context level + slow level)

Short-term memory is causal sliding-window attention (`attn_window`); long-term memory is the SMT fast weights
and the episodic bank, carried in the state across segments. The SMT and the bank commit at chunks of
`update_frequencies.mem_write` tokens, the fast CMS level at chunks of `update_frequencies.error_update`
tokens; the inputs of a partial chunk are kept as a tail and replayed (see `hope.layers.chunking`). With
`cms_objective: task` the block only reads the fast CMS level; `LanguageModel` writes it between chunks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from hope.config import Config
from hope.layers.attention import SlidingWindowAttention
from hope.layers.chunking import committed_length, state_dtype, with_tail
from hope.layers.cms import CMSState, ContinuumMemory
from hope.layers.episodic import BankState, EpisodicBank
from hope.layers.smt import SelfModifyingMemory, SMTState


class BlockState(NamedTuple):
    """Everything one HOPE block carries along a stream. A tail holds the inputs of a memory's partial chunk,
    replayed in front of the next call (`hope.layers.chunking`)."""

    attn: dict | None  # sliding-window KV cache {"k", "v"} (B, H, L, d)
    smt: SMTState
    mem_tail: Tensor  # (B, t, C) SMT inputs since its last committed chunk
    bank: BankState | None  # None without a bank (memory_capacity: 0)
    bank_tail: Tensor  # (B, t, C) bank inputs since the last committed chunk (bank_input: context)
    cms: CMSState | None  # None for cms: mlp
    cms_tail: Tensor  # (B, t', C) fast-CMS inputs since its last committed chunk


class HopeBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        dim, freq = cfg.dim, cfg.update_frequencies
        self.mem_chunk, self.cms_chunk = freq.mem_write, freq.error_update
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = SlidingWindowAttention(dim, cfg.num_heads, cfg.attn_window, cfg.dropout)
        self.smt = SelfModifyingMemory(dim, cfg.num_heads, cfg.memory_hidden_mult, freq.mem_write,
                                       kind=cfg.memory_kind, self_modifying=cfg.self_modifying,
                                       error_decay=cfg.error_decay)
        self.smt.recompute = cfg.recompute_memory
        self.bank = (EpisodicBank(dim, cfg.memory_capacity, cfg.top_k, freq.mem_write, cfg.bank_writes, cfg.bank_aging)
                     if cfg.memory_capacity > 0 else None)
        self.bank_input = cfg.bank_input
        self.mix_gate = nn.Parameter(torch.zeros(dim))  # g = sigmoid(0) = 0.5 per channel
        self.cms = ContinuumMemory(dim, int(cfg.ff_mult * dim), freq.error_update, cfg.cms, cfg.cms_objective)
        self.drop = nn.Dropout(cfg.dropout)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> BlockState:
        dim = self.norm1.normalized_shape[0]
        empty = torch.zeros(batch, 0, dim, device=device, dtype=state_dtype(self.norm1.weight))
        return BlockState(self.attn.empty_cache(batch, device, dtype), self.smt.init_state(batch, device), empty,
                          self.bank.init_state(batch, device) if self.bank is not None else None, empty,
                          self.cms.init_state(batch, device) if self.cms.has_fast else None, empty)

    def forward(self, x: Tensor, pos: int, state: BlockState, mem_gate: Tensor | float, surprise_scale: Tensor | float
                ) -> tuple[Tensor, BlockState]:
        """x (B, T, C) at absolute positions pos.. ; returns the block output and its new state."""
        T = x.shape[1]
        h = self.norm1(x)
        attn, cache = self.attn(h, pos, state.attn)
        mem_in = with_tail(state.mem_tail.to(h.dtype), h)  # (B, t + T, C)
        n_commit = committed_length(mem_in.shape[1], self.mem_chunk)
        # Only the T new tokens' outputs are computed; the replayed tail's were returned by the previous call.
        mem, surprise, smt_state = self.smt(mem_in, state.smt, n_commit, mem_gate, surprise_scale, n_out=T)
        g = torch.sigmoid(self.mix_gate)
        mixed = g * attn + (1 - g) * mem
        bank_state, bank_tail = None, state.bank_tail
        if self.bank is not None:
            bank_in = mem_in
            if self.bank_input == "context":
                # In the first block norm(x) is one byte's embedding, so a key K(x_{t-1}) names only the previous
                # byte and a query cannot tell two keys apart that end alike. With the attention output added,
                # keys and queries carry the window before them: a lookup by the key's bytes, not its last byte.
                bank_in = with_tail(bank_tail.to(h.dtype), h + attn)  # (B, t + T, C), aligned with mem_in
                bank_tail = bank_in[:, n_commit:].to(state_dtype(bank_in))
            bank, bank_state = self.bank(bank_in, surprise, state.bank, n_commit, mem_gate, surprise_scale, n_out=T)
            mixed = mixed + bank
        x = x + self.drop(mixed)

        h2 = self.norm2(x)
        cms_state, cms_tail = None, state.cms_tail
        if self.cms.has_fast and self.cms.objective == "task":  # read only: LanguageModel writes between chunks
            ff, cms_state = self.cms(h2, state.cms, 0, mem_gate)
        elif self.cms.has_fast:
            cms_in = with_tail(cms_tail.to(h2.dtype), h2)
            n_cms = committed_length(cms_in.shape[1], self.cms_chunk)
            ff, cms_state = self.cms(cms_in, state.cms, n_cms, mem_gate, n_out=T)
            cms_tail = cms_in[:, n_cms:].to(state_dtype(cms_in))
        else:
            ff, _ = self.cms(h2, None, 0, mem_gate)
        x = x + self.drop(ff)
        return x, BlockState(cache, smt_state, mem_in[:, n_commit:].to(state_dtype(mem_in)), bank_state, bank_tail,
                             cms_state, cms_tail)
