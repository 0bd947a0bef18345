"""Chunk bookkeeping shared by every in-context memory (SMT, episodic bank, fast CMS level).

A memory commits its state only at chunk boundaries counted from the start of the stream. When a call ends
inside a chunk (generation, unaligned segments), the inputs of that partial chunk are kept as the `tail`
and replayed in front of the next call's inputs: the committed state never depends on where calls split the
stream, which is what makes streaming equal to one pass (architecture.md §7.4).
"""

from __future__ import annotations

import torch


def with_tail(tail: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """(B, t, C) tail + (B, T, C) new inputs -> (B, t + T, C)."""
    return x if tail is None or tail.shape[1] == 0 else torch.cat([tail, x], dim=1)


def chunk_spans(length: int, chunk: int) -> list[tuple[int, int, bool]]:
    """[(start, end, complete)] covering range(length); only the last span may be incomplete."""
    return [(s, min(s + chunk, length), s + chunk <= length) for s in range(0, length, chunk)]


def committed_length(length: int, chunk: int) -> int:
    return (length // chunk) * chunk


def state_dtype(t: torch.Tensor) -> torch.dtype:
    """Fast weights and their inputs are at least fp32 (bf16/fp16 activations under autocast are upcast)."""
    return torch.promote_types(t.dtype, torch.float32)
