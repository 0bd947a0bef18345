"""What the self-modifying memory's gates did along a read (scripts/memory_health.py, scripts/mqar_fading.py).

`record_gates(model)` records, per HOPE block, the gate logits of every call (retention read through the layer's
own `retention`) and the rate every token wrote at, as the layer's own `rate` rule returned it (surprise, timescale
ceilings and the write threshold included). `write_half_life` is how long a write lasts under retention alpha and
overwriting at rate eta in d dimensions: per byte it keeps alpha (1 - eta / d) (docs/architecture.md, "Timescale
heads and sparse writes").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class GateRecord:
    """Per block: the gate logits ``(B, L, 2H)`` of each call and the rates ``(B, 1, H, c)`` of each chunk piece."""

    logits: list[list[torch.Tensor]] = field(default_factory=list)
    rates: list[list[torch.Tensor]] = field(default_factory=list)

    def rate(self, block: int) -> torch.Tensor:
        """(H, L) the rate each token of the first row wrote at."""
        return torch.cat(self.rates[block], dim=-1)[0, 0]

    def retention(self, model: torch.nn.Module, block: int) -> torch.Tensor:
        """(H, L) each token's retention alpha in the first row, by the layer's rule."""
        return model.blocks[block].smt.retention(self.logit(block)[:, 1].T[None], model.mem_gate)[0]

    def logit(self, block: int) -> torch.Tensor:
        """(L, 2, H) the first row's gate logits: inner-rate logits, then retention logits."""
        H = self.logits[block][0].shape[-1] // 2
        return torch.cat(self.logits[block], dim=1)[0].view(-1, 2, H)


@contextlib.contextmanager
def record_gates(model: torch.nn.Module) -> Iterator[GateRecord]:
    """Record the gates of every block's SMT while the context is open (the layers are restored after it)."""
    record = GateRecord([[] for _ in model.blocks], [[] for _ in model.blocks])
    hooks = [b.smt.gates.register_forward_hook(lambda _m, _a, out, i=i: record.logits[i].append(out))
             for i, b in enumerate(model.blocks)]
    for i, b in enumerate(model.blocks):  # the instance attribute shadows the method: the layer calls this one
        b.smt.rate = lambda *a, rule=b.smt.rate, i=i: record.rates[i].append(rule(*a)) or record.rates[i][-1]
    try:
        yield record
    finally:
        for h in hooks:
            h.remove()
        for b in model.blocks:
            del b.smt.rate


def half_life(keep: float) -> float:
    """Bytes until a factor `keep` per byte halves what it keeps (inf for keep >= 1)."""
    return math.log(0.5) / math.log(keep) if keep < 1 else math.inf


def write_half_life(retention: float, rate: float, head_dim: int) -> float:
    """Half-life in bytes of a write under retention and overwriting by writes at `rate` (unrelated unit keys)."""
    return half_life(retention * (1 - rate / head_dim))
