"""Episodic bank: a bounded store of (key, value) vectors written on surprise, read sparsely (architecture.md §4).

It serves exact recall over thousands of bytes, which small fast-weight memories are known to fail. The write
at position t stores key = K(x_{t-1}) and value = V(x_t): "what followed this context", so a later query
Q(x_s) that matches the context retrieves the byte that followed it (an induction step over the bank).

Writes: per committed chunk the `writes_per_chunk` candidates with the highest write strength
sigmoid(learned score + surprise_scale * surprise) * mem_write gate; the bank keeps the `capacity` strongest
of (old slots + candidates), so a surprising entry survives until stronger ones arrive. Reads: each query
scores all slots (cosine * temperature + log strength), keeps the `top_k` best and soft-maxes them together
with a learned null slot, so a bank of weak or empty slots reads as ~0. Reads see only earlier chunks' writes
(causal); the sliding attention covers the current chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.chunking import chunk_spans, state_dtype

EPS = 1e-6


class EpisodicBank(nn.Module):
    def __init__(self, dim: int, capacity: int, top_k: int, chunk: int, writes_per_chunk: int):
        super().__init__()
        self.capacity, self.top_k, self.chunk, self.writes = capacity, top_k, chunk, min(writes_per_chunk, chunk)
        self.key = nn.Linear(dim, dim, bias=False)
        self.query = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.write_score = nn.Linear(dim, 1)
        self.log_temperature = nn.Parameter(torch.tensor(2.3))  # exp(2.3) ~ 10: sharp cosine matching
        self.null_logit = nn.Parameter(torch.tensor(0.0))
        self.out = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.out.weight)  # the bank starts silent and earns its contribution
        self.out.zero_init = True

    def init_state(self, batch: int, device: torch.device) -> dict:
        dim, dt = self.key.in_features, state_dtype(self.key.weight)
        return {"keys": torch.zeros(batch, self.capacity, dim, device=device, dtype=dt),
                "values": torch.zeros(batch, self.capacity, dim, device=device, dtype=dt),
                "strength": torch.zeros(batch, self.capacity, device=device, dtype=dt),
                "prev": torch.zeros(batch, dim, device=device, dtype=dt)}

    def forward(self, x: torch.Tensor, surprise: torch.Tensor, state: dict, n_commit: int, mem_gate: float,
                surprise_scale: float) -> tuple[torch.Tensor, dict]:
        """x (B, L, C) tail + new inputs, surprise (B, L); returns the read (B, L, C) and the committed state."""
        B, L, C = x.shape
        fd = state_dtype(x)
        prev = torch.cat([state["prev"][:, None].to(x.dtype), x[:, :-1]], dim=1)  # (B, L, C): x_{t-1}
        keys = F.normalize(self.key(prev).to(fd), dim=-1)  # (B, L, C)
        queries = F.normalize(self.query(x).to(fd), dim=-1)
        values = self.value(x).to(fd)
        strength = torch.sigmoid(self.write_score(x).to(fd).squeeze(-1) + surprise_scale * surprise) * mem_gate  # (B, L)
        bank_k, bank_v, bank_s = state["keys"], state["values"], state["strength"]
        committed = (bank_k, bank_v, bank_s)
        temperature = self.log_temperature.exp()
        reads = []
        for s, e, complete in chunk_spans(L, self.chunk):
            logits = temperature * queries[:, s:e] @ bank_k.transpose(1, 2) + (bank_s + EPS).log()[:, None]  # (B, c, cap)
            top, idx = logits.topk(self.top_k, dim=-1)  # (B, c, k)
            null = self.null_logit.expand(B, e - s, 1)
            weights = torch.softmax(torch.cat([top, null], dim=-1), dim=-1)[..., :-1]  # (B, c, k), null slot dropped
            picked = torch.gather(bank_v[:, None].expand(-1, e - s, -1, -1), 2,
                                  idx[..., None].expand(-1, -1, -1, C))  # (B, c, k, C)
            reads.append((weights[..., None] * picked).sum(2))  # (B, c, C)
            if complete and e <= n_commit:
                cand_s, cand_i = strength[:, s:e].topk(self.writes, dim=-1)  # (B, w)
                cand_k = torch.gather(keys[:, s:e], 1, cand_i[..., None].expand(-1, -1, C))
                cand_v = torch.gather(values[:, s:e], 1, cand_i[..., None].expand(-1, -1, C))
                all_s = torch.cat([bank_s, cand_s], dim=1)  # (B, cap + w)
                keep_s, keep_i = all_s.topk(self.capacity, dim=-1)  # the strongest `capacity` survive
                bank_k = torch.gather(torch.cat([bank_k, cand_k], 1), 1, keep_i[..., None].expand(-1, -1, C))
                bank_v = torch.gather(torch.cat([bank_v, cand_v], 1), 1, keep_i[..., None].expand(-1, -1, C))
                bank_s = keep_s
            if e == n_commit:
                committed = (bank_k, bank_v, bank_s)
        read = torch.cat(reads, dim=1).to(x.dtype)  # (B, L, C)
        new_prev = x[:, n_commit - 1].to(fd) if n_commit > 0 else state["prev"]
        return self.out(read), {"keys": committed[0], "values": committed[1], "strength": committed[2], "prev": new_prev}
