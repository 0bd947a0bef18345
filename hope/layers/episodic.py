"""Episodic bank: a bounded store of (key, value) vectors written on surprise, read sparsely (architecture.md, "Episodic bank").

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
from torch import Tensor, nn

from hope.layers.chunking import state_dtype
from hope.layers.roles import NO_DECAY, OWN_INIT
from hope.ops.memory import chunk_pieces
from hope.ops.norm import unit

EPS = 1e-6


class BankState(NamedTuple):
    """The bank's carried state: `capacity` slots per sample, and the current chunk's write candidates so far (a
    call may end inside a chunk; the next continues it without replaying its tokens)."""

    keys: Tensor  # (B, cap, C) unit keys K(x_{t-1})
    values: Tensor  # (B, cap, C) values V(x_t)
    strength: Tensor  # (B, cap) write strength in [0, 1] (0 = empty)
    age: Tensor  # (B, cap) bytes since the slot was written, counted at the end of its chunk
    prev: Tensor  # (B, C) the last input seen: the key of the next token's write
    cand_keys: Tensor  # (B, w, C) the current chunk's `bank_writes` strongest tokens so far (strength 0: none)
    cand_values: Tensor  # (B, w, C)
    cand_strength: Tensor  # (B, w)
    cand_index: Tensor  # (B, w) their positions inside the chunk (their age at its end is chunk - 1 - index)


class EpisodicBank(nn.Module):
    # The write gate is not decayed (decay would pull it to sigmoid(0)); the output starts at 0 (roles.py).
    PARAM_ROLES = {"write_score.weight": (NO_DECAY,), "write_score.bias": (NO_DECAY,), "out.weight": (OWN_INIT,)}

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
        self._compiled_commit = None  # set by compile_step()

    def init_state(self, batch: int, device: torch.device) -> BankState:
        dim, dt = self.key.in_features, state_dtype(self.key.weight)
        slots = torch.zeros(batch, self.capacity, dim, device=device, dtype=dt)
        scalars = torch.zeros(batch, self.capacity, device=device, dtype=dt)
        cand = torch.zeros(batch, self.writes, dim, device=device, dtype=dt)
        cand_scalars = torch.zeros(batch, self.writes, device=device, dtype=dt)
        return BankState(slots, slots, scalars, scalars, torch.zeros(batch, dim, device=device, dtype=dt),
                         cand, cand, cand_scalars, cand_scalars)

    def forward(self, x: Tensor, surprise: Tensor, state: BankState, offset: int, mem_gate: Tensor | float,
                surprise_scale: Tensor | float) -> tuple[Tensor, BankState]:
        """x (B, L, C) new inputs, surprise (B, L), `offset` tokens of the current chunk seen by earlier calls;
        returns every token's read (B, L, C) and the state after the last token."""
        fd = state_dtype(x)
        prev = torch.cat([state.prev[:, None].to(x.dtype), x[:, :-1]], dim=1)  # (B, L, C): x_{t-1}
        keys = unit(self.key(prev).to(fd))  # (B, L, C); K(0) = 0 at a fresh stream: unit() keeps its grad 0
        values = self.value(x).to(fd)
        strength = torch.sigmoid(self.write_score(x).to(fd).squeeze(-1) + surprise_scale * surprise) * mem_gate
        queries = unit(self.query(x).to(fd))  # (B, L, C)
        bank = (state.keys, state.values, state.strength, state.age)
        cand = (state.cand_keys, state.cand_values, state.cand_strength, state.cand_index)
        read, bank, cand = self._scan(keys, values, strength, queries, bank, cand, offset)
        return self.out(read.to(x.dtype)), BankState(*bank, x[:, -1].to(fd), *cand)

    def compile_step(self, **compile_kwargs) -> None:
        """Compile a chunk's commit (:meth:`_commit`) once, reused by every chunk of every call (`compile: true`),
        instead of a graph unrolled over all chunks (the loop in :meth:`_scan` stays eager)."""
        if self._compiled_commit is None:
            self._compiled_commit = torch.compile(self._commit, dynamic=False, **compile_kwargs)

    @torch.compiler.disable  # a whole-model torch.compile stops here: the loop stays eager, its step is compiled
    def _scan(self, keys: Tensor, values: Tensor, strength: Tensor, queries: Tensor, bank: tuple, cand: tuple,
              offset: int) -> tuple[Tensor, tuple, tuple]:
        """The chunk loop over the pieces of a call (the rest of the current chunk, whole chunks, a partial last
        one): reads ``(B, L, C)`` and the bank and candidates after the last token."""
        commit = self._compiled_commit or self._commit
        reads, fd = [], keys.dtype
        for start, n, c, first in chunk_pieces(keys.shape[1], self.chunk, offset):
            span = slice(start, start + n * c)
            if first == 0 and c == self.chunk:  # whole chunks: each one's candidates at once, merged one by one
                banks = [bank]
                for chunk_cand in self._candidates(keys[:, span], values[:, span], strength[:, span], n):
                    bank = commit(bank, chunk_cand)
                    banks.append(bank)
                reads.append(self._read(queries[:, span], banks[:-1], c))
            else:  # part of a chunk: read the bank before it, fold its tokens into the chunk's candidates
                reads.append(self._read(queries[:, span], [bank], c))
                index = torch.arange(first, first + c, dtype=fd, device=keys.device).expand(keys.shape[0], c)
                cand = self._merge(cand, (keys[:, span], values[:, span], strength[:, span], index))
                if first + c == self.chunk:
                    bank = commit(bank, cand)
                    cand = tuple(torch.zeros_like(t) for t in cand)
        return (torch.cat(reads, dim=1) if len(reads) > 1 else reads[0]), bank, cand  # (B, L, C)

    def _candidates(self, keys: Tensor, values: Tensor, strength: Tensor, n: int) -> list[tuple[Tensor, ...]]:
        """The `writes` strongest tokens of each of n whole chunks ``(B, n * chunk, .)``: n x (keys, values,
        strengths, in-chunk positions)."""
        B, _, C = keys.shape
        cand_s, cand_i = strength.reshape(B, n, self.chunk).topk(self.writes, dim=-1)  # (B, n, w)
        pick = cand_i[..., None].expand(-1, -1, -1, C)  # (B, n, w, C)
        cand_k = torch.gather(keys.reshape(B, n, self.chunk, C), 2, pick)
        cand_v = torch.gather(values.reshape(B, n, self.chunk, C), 2, pick)
        return list(zip(cand_k.unbind(1), cand_v.unbind(1), cand_s.unbind(1), cand_i.to(keys.dtype).unbind(1)))

    def _merge(self, cand: tuple[Tensor, ...], new: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The `writes` strongest of a chunk's candidates so far and its next tokens (both (keys, values, strengths,
        positions)): the same set as one top-k over the whole chunk."""
        k, v, s, i = (torch.cat([a, b], dim=1) for a, b in zip(cand, new))
        top_s, top = s.topk(self.writes, dim=-1)  # (B, w)
        pick = top[..., None].expand(-1, -1, k.shape[-1])
        return torch.gather(k, 1, pick), torch.gather(v, 1, pick), top_s, torch.gather(i, 1, top)

    def _commit(self, bank: tuple[Tensor, ...], cand: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """A chunk's end: keep the `capacity` of highest priority (strength * aging ** age) among the slots and the
        chunk's candidates."""
        bank_k, bank_v, bank_s, bank_age = bank
        cand_k, cand_v, cand_s, cand_i = cand
        all_s = torch.cat([bank_s, cand_s], dim=1)  # (B, cap + w)
        all_age = torch.cat([bank_age + self.chunk, self.chunk - 1 - cand_i], dim=1)
        keep_i = (all_s * self.aging ** all_age).topk(self.capacity, dim=-1).indices  # the `capacity` of highest priority
        keep = keep_i[..., None].expand(-1, -1, bank_k.shape[-1])
        return (torch.gather(torch.cat([bank_k, cand_k], 1), 1, keep), torch.gather(torch.cat([bank_v, cand_v], 1), 1, keep),
                torch.gather(all_s, 1, keep_i), torch.gather(all_age, 1, keep_i))

    def _read(self, queries: Tensor, banks: list[tuple[Tensor, ...]], c: int) -> Tensor:
        """Each piece of c queries ``(B, M * c, C)`` against its bank (M = len(banks)): top_k slots by cosine *
        temperature + log strength, soft-maxed with the null slot -> (B, M * c, C)."""
        B, _, C = queries.shape
        M = len(banks)
        read_k, read_v, read_s = (torch.stack(t, dim=1) for t in list(zip(*banks))[:3])  # (B, M, cap, C), (B, M, cap)
        q = queries.view(B, M, c, C)
        logits = (self.log_temperature.exp() * q) @ read_k.mT + (read_s + EPS).log()[:, :, None]  # (B, M, c, cap)
        top, idx = logits.topk(self.top_k, dim=-1)  # (B, M, c, k)
        null = self.null_logit.expand(B, M, c, 1)
        weights = torch.softmax(torch.cat([top, null], dim=-1), dim=-1)[..., :-1]  # (B, M, c, k), null slot dropped
        # Sparse read as a dense (c, cap) x (cap, C) matmul: the k weights scattered into their slots (top-k
        # indices are distinct), instead of gathering k value rows per query from an expanded bank.
        dense = torch.zeros_like(logits).scatter(-1, idx, weights)  # (B, M, c, cap)
        return (dense @ read_v).view(B, M * c, C)
