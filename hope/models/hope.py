"""The HOPE block (architecture.md, "The block"):

    x = x + Mixer(norm(x))    Mixer = g * LocalAttention + (1 - g) * SelfModifyingMemory + EpisodicBank
    x = x + CMS(norm(x))      Continuum Memory System (fast in-context level + slow level)

Short-term memory is causal sliding-window attention (`attn_window`); long-term memory is the SMT fast weights
and the episodic bank, carried in the state across segments. The SMT and the bank commit at chunks of
`update_frequencies.mem_write` tokens counted from the stream's start; inside a chunk they carry their running
state (and the fast CMS level writes every token), so calls may split a stream anywhere with no replay. With
`cms_objective: task` the block only reads the fast CMS level; `LanguageModel` writes it between chunks of
`update_frequencies.error_update` tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from hope.config import Config
from hope.layers.attention import SlidingWindowAttention
from hope.layers.cms import CMSState, ContinuumMemory
from hope.layers.episodic import BankState, EpisodicBank
from hope.layers.smt import SelfModifyingMemory, SMTState


class BlockState(NamedTuple):
    """Everything one HOPE block carries along a stream. The memories carry their state inside the current chunk
    too (running writes, the bank's candidates so far), so a call may end anywhere and the next continues it."""

    attn: dict | None  # sliding-window KV cache {"k", "v"} (B, H, L, d)
    smt: SMTState
    bank: BankState | None  # None without a bank (memory_capacity: 0)
    cms: CMSState | None  # None for cms: mlp


class HopeBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        dim, freq = cfg.dim, cfg.update_frequencies
        self.mem_chunk = freq.mem_write
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = SlidingWindowAttention(dim, cfg.num_heads, cfg.attn_window, cfg.dropout)
        self.smt = SelfModifyingMemory(dim, cfg.num_heads, cfg.memory_hidden_mult, freq.mem_write,
                                       kind=cfg.memory_kind, self_modifying=cfg.self_modifying,
                                       error_decay=cfg.error_decay, timescales=tuple(cfg.memory_timescales),
                                       write_threshold=cfg.write_threshold)
        self.smt.recompute = cfg.recompute_memory
        self.bank = (EpisodicBank(dim, cfg.memory_capacity, cfg.top_k, freq.mem_write, cfg.bank_writes, cfg.bank_aging)
                     if cfg.memory_capacity > 0 else None)
        self.bank_input = cfg.bank_input
        self.mix_gate = nn.Parameter(torch.zeros(dim))  # g = sigmoid(0) = 0.5 per channel
        self.cms = ContinuumMemory(dim, int(cfg.ff_mult * dim), freq.error_update, cfg.cms, cfg.cms_objective)
        self.drop = nn.Dropout(cfg.dropout)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> BlockState:
        return BlockState(self.attn.empty_cache(batch, device, dtype), self.smt.init_state(batch, device),
                          self.bank.init_state(batch, device) if self.bank is not None else None,
                          self.cms.init_state(batch, device) if self.cms.has_fast else None)

    def forward(self, x: Tensor, pos: int, state: BlockState, mem_gate: Tensor | float,
                surprise_scale: Tensor | float) -> tuple[Tensor, BlockState]:
        """x (B, T, C) at absolute positions pos.. ; returns the block output and its new state."""
        h = self.norm1(x)
        attn, cache = self.attn(h, pos, state.attn)
        offset = pos % self.mem_chunk  # tokens of the current memory chunk written by earlier calls
        mem, surprise, smt_state = self.smt(h, state.smt, offset, mem_gate, surprise_scale)
        g = torch.sigmoid(self.mix_gate)
        mixed = g * attn + (1 - g) * mem
        bank_state = None
        if self.bank is not None:
            # In the first block norm(x) is one byte's embedding, so a key K(x_{t-1}) names only the previous byte
            # and a query cannot tell two keys apart that end alike. With the attention output added, keys and
            # queries carry the window before them: a lookup by the key's bytes, not its last byte.
            bank_in = h + attn if self.bank_input == "context" else h
            bank, bank_state = self.bank(bank_in, surprise, state.bank, offset, mem_gate, surprise_scale)
            mixed = mixed + bank
        x = x + self.drop(mixed)
        ff, cms_state = self.cms(self.norm2(x), state.cms, mem_gate)
        x = x + self.drop(ff)
        return x, BlockState(cache, smt_state, bank_state, cms_state)
