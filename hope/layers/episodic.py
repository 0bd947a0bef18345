"""Episodic bank: a bounded store of (key, value) vectors written on surprise, read sparsely (architecture.md §4).

It serves exact recall over thousands of bytes, which small fast-weight memories are known to fail. The write
at position t stores key = K(x_{t-1}) and value = V(x_t): "what followed this context", so a later query
Q(x_s) that matches the context retrieves the byte that followed it (an induction step over the bank).

Writes: per committed chunk the `bank_writes` candidates with the highest write strength
sigmoid(learned score + surprise_scale * surprise) * mem_write gate; the bank keeps the `capacity` entries of
highest priority = strength * bank_aging ** age (age in bytes since the write) among old slots + candidates,
so a surprising entry survives until stronger or fresher ones arrive, and stale entries give way (aging
touches eviction only: a surviving entry is read with its written strength). Reads: each query
scores all slots (cosine * temperature + log strength), keeps the `top_k` best and soft-maxes them together
with a learned null slot, so a bank of weak or empty slots reads as ~0. Reads see only earlier chunks' writes
(causal); the sliding attention covers the current chunk.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.layers.chunking import state_dtype
from hope.ops.norm import unit

EPS = 1e-6


class BankState(NamedTuple):
    """The bank's carried state: `capacity` slots per sample."""

    keys: Tensor  # (B, cap, C) unit keys K(x_{t-1})
    values: Tensor  # (B, cap, C) values V(x_t)
    strength: Tensor  # (B, cap) write strength in [0, 1] (0 = empty)
    age: Tensor  # (B, cap) bytes since the slot was written
    prev: Tensor  # (B, C) the input of the last committed token: the key of the next chunk's first write


class EpisodicBank(nn.Module):
    def __init__(self, dim: int, capacity: int, top_k: int, chunk: int, writes_per_chunk: int, aging: float = 1.0):
        super().__init__()
        self.capacity, self.top_k, self.chunk, self.writes = capacity, top_k, chunk, min(writes_per_chunk, chunk)
        self.aging = aging
        self.key = nn.Linear(dim, dim, bias=False)
        self.query = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.write_score = nn.Linear(dim, 1)
        self.log_temperature = nn.Parameter(torch.tensor(2.3))  # exp(2.3) ~ 10: sharp cosine matching
        self.null_logit = nn.Parameter(torch.tensor(0.0))
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)  # the bank starts silent and earns its contribution
        self.out.zero_init = True

    def init_state(self, batch: int, device: torch.device) -> BankState:
        dim, dt = self.key.in_features, state_dtype(self.key.weight)
        slots = torch.zeros(batch, self.capacity, dim, device=device, dtype=dt)
        scalars = torch.zeros(batch, self.capacity, device=device, dtype=dt)
        return BankState(slots, slots, scalars, scalars, torch.zeros(batch, dim, device=device, dtype=dt))

    def forward(self, x: Tensor, surprise: Tensor, state: BankState, n_commit: int, mem_gate: Tensor | float,
                surprise_scale: Tensor | float, n_out: int | None = None) -> tuple[Tensor, BankState]:
        """x (B, L, C) tail + new inputs, surprise (B, L); returns the read of the last `n_out` tokens
        (B, n_out, C) (default all L) and the committed state."""
        B, L, C = x.shape
        n_out = L if n_out is None else n_out
        fd = state_dtype(x)
        bank_k, bank_v, bank_s, bank_age = state.keys, state.values, state.strength, state.age
        chunk, cap = self.chunk, self.capacity
        N = -(-L // chunk)
        n_write = min(n_commit // chunk, L // chunk)  # complete chunks that commit (end <= n_commit)
        # Write candidates of every committing chunk at once: its `writes` strongest tokens (keys, values and
        # strengths are only computed for the tokens of committing chunks).
        if n_write:
            span = n_write * chunk
            prev = torch.cat([state.prev[:, None].to(x.dtype), x[:, :span - 1]], dim=1)  # (B, span, C): x_{t-1}
            keys = unit(self.key(prev).to(fd))  # (B, span, C); K(0) = 0 at a fresh stream: unit() keeps its grad 0
            values = self.value(x[:, :span]).to(fd)
            strength = torch.sigmoid(self.write_score(x[:, :span]).to(fd).squeeze(-1)
                                     + surprise_scale * surprise[:, :span]) * mem_gate  # (B, span)
            cand_s, cand_i = strength.reshape(B, n_write, chunk).topk(self.writes, dim=-1)  # (B, n, w)
            pick = cand_i[..., None].expand(-1, -1, -1, C)  # (B, n, w, C)
            cand_k = torch.gather(keys.reshape(B, n_write, chunk, C), 2, pick).unbind(1)  # n x (B, w, C)
            cand_v = torch.gather(values.reshape(B, n_write, chunk, C), 2, pick).unbind(1)
            cand_age = (chunk - 1 - cand_i).to(fd).unbind(1)  # bytes from the write to the chunk's end
            cand_s = cand_s.unbind(1)
        # The bank each chunk reads (the state left by the previous chunks' writes): a short sequential loop of
        # small top-k merges; the reads of all chunks then run batched.
        banks = [(bank_k, bank_v, bank_s)]
        for n in range(n_write):
            all_s = torch.cat([bank_s, cand_s[n]], dim=1)  # (B, cap + w)
            all_age = torch.cat([bank_age + chunk, cand_age[n]], dim=1)
            keep_i = (all_s * self.aging ** all_age).topk(cap, dim=-1).indices  # the `capacity` of highest priority
            keep = keep_i[..., None].expand(-1, -1, C)
            bank_k = torch.gather(torch.cat([bank_k, cand_k[n]], 1), 1, keep)  # (B, cap, C)
            bank_v = torch.gather(torch.cat([bank_v, cand_v[n]], 1), 1, keep)
            bank_s, bank_age = torch.gather(all_s, 1, keep_i), torch.gather(all_age, 1, keep_i)
            banks.append((bank_k, bank_v, bank_s))
        banks = banks[:N] + [banks[-1]] * (N - len(banks))  # chunks after the last write read the last bank
        first = (L - n_out) // chunk  # reads are wanted from this chunk on (the replayed tail's are discarded)
        M = N - first
        read_k, read_v, read_s = (torch.stack(t, dim=1) for t in zip(*banks[first:]))  # (B, M, cap, C), (B, M, cap)
        queries = unit(self.query(x[:, first * chunk:]).to(fd))  # (B, L - first * chunk, C)
        q = F.pad(queries, (0, 0, 0, N * chunk - L)).view(B, M, chunk, C)  # the partial last chunk padded
        temperature = self.log_temperature.exp()
        logits = (temperature * q) @ read_k.mT + (read_s + EPS).log()[:, :, None]  # (B, M, c, cap)
        top, idx = logits.topk(self.top_k, dim=-1)  # (B, M, c, k)
        null = self.null_logit.expand(B, M, chunk, 1)
        weights = torch.softmax(torch.cat([top, null], dim=-1), dim=-1)[..., :-1]  # (B, M, c, k), null slot dropped
        # Sparse read as a dense (c, cap) x (cap, C) matmul: the k weights scattered into their slots (top-k
        # indices are distinct), instead of gathering k value rows per query from an expanded bank.
        dense = torch.zeros_like(logits).scatter(-1, idx, weights)  # (B, M, c, cap)
        read = (dense @ read_v).view(B, M * chunk, C)[:, M * chunk - (N * chunk - L) - n_out:M * chunk - (N * chunk - L)]
        read = read.to(x.dtype)  # (B, n_out, C)
        new_prev = x[:, n_commit - 1].to(fd) if n_commit > 0 else state.prev
        return self.out(read), BankState(bank_k, bank_v, bank_s, bank_age, new_prev)
