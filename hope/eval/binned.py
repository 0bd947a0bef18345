"""Perplexity by position: how the loss at byte t depends on how much context (t bytes) came before it.

Validation windows of `max(lengths) + 1` bytes are read from a fresh state (streaming segment by segment with the
state carried when a window is longer than a segment: HOPE's memories carry, the baseline's attention slides);
the per-position losses are summed over windows and grouped into bins [0, l0), [l0, l1), ..., [l_{n-2}, l_{n-1})
of `lengths = l0 < l1 < ... < l_{n-1}`. Position t is the prediction of byte t + 1 from bytes 0..t, so the bins
partition the `max(lengths)` predicted positions of each window exactly once.

On a collection of documents (`Corpus.val_docs`) a window is the beginning of one document, so position t is
t bytes into that document, never the continuation of the one before it; documents shorter than
`max(lengths) + 1` bytes are left out and counted (`document_windows`), not padded with the next one. On a single
file (no document boundaries) the windows are spread evenly over the validation split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn.functional as F

import numpy as np

from hope.data.corpus import DataError, Documents, data_exists, load_corpus
from hope.errors import HopeError
from hope.eval.lm import eval_windows
from hope.runtime import autocast


def parse_lengths(text: str | Sequence[int]) -> list[int]:
    """'64,128,256' (or a list) -> [64, 128, 256]; positive and strictly increasing, else HopeError."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise HopeError(f"--lengths must be comma-separated integers like 64,128,256,512, got '{text}'") from None
    else:
        values = [int(v) for v in text]
    if not values:
        raise HopeError("--lengths is empty; give bin edges like 64,128,256,512")
    if any(v <= 0 for v in values):
        raise HopeError(f"--lengths must be positive, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise HopeError(f"--lengths must be strictly increasing, got {values}")
    return values


def bins_of(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """[64, 128, 256] -> [(0, 64), (64, 128), (128, 256)] (end exclusive)."""
    edges = [0, *lengths]
    return list(zip(edges[:-1], edges[1:]))


def document_windows(documents: Documents, length: int, windows: int | None) -> tuple[list[int], int]:
    """(start offsets, number of documents too short): one window of `length + 1` bytes at the start of each
    document that holds one, `windows` of them (None: all) spread evenly over the documents in order."""
    long_enough = np.flatnonzero(documents.lengths() >= length + 1)
    total = len(long_enough)
    chosen = range(total) if windows is None or windows >= total else (int(i * total / windows) for i in range(windows))
    return [int(documents.offsets[long_enough[i]]) for i in chosen], len(documents) - total


@torch.no_grad()
def position_nll(model: torch.nn.Module, data: torch.Tensor, length: int, windows: int | None, batch_size: int,
                 device: torch.device | str, amp: bool = False, amp_dtype: str = "bf16",
                 documents: Documents | None = None) -> tuple[torch.Tensor, int]:
    """Summed NLL per position over windows of `length + 1` bytes of `data`: evenly spread, or with `documents`
    (the boundaries of `data`'s documents) the start of each document long enough (`document_windows`).

    Returns (sums (length,) float64 on CPU, number of windows). Each window starts from a fresh state.
    """
    device = torch.device(device)
    if documents is None:
        starts = eval_windows(len(data), length, windows)
        if not starts:
            raise DataError(f"the validation split has {len(data)} bytes, fewer than max(lengths) + 1 = "
                            f"{length + 1} (use a longer file or smaller --lengths)")
    else:
        starts, _ = document_windows(documents, length, windows)
        if not starts:
            longest = int(documents.lengths().max()) if len(documents) else 0
            raise DataError(f"no validation document has max(lengths) + 1 = {length + 1} bytes (the longest has "
                            f"{longest}; use smaller --lengths)")
    was_training = model.training
    model.eval()
    sums = torch.zeros(length, dtype=torch.float64, device=device)
    try:
        for i in range(0, len(starts), batch_size):
            rows = torch.stack([data[s:s + length + 1] for s in starts[i:i + batch_size]]).long().to(device)  # (B, L+1)
            with autocast(device, amp, amp_dtype):
                logits, _, _ = model(rows[:, :-1])  # (B, L, 256)
            nll = F.cross_entropy(logits.float().transpose(1, 2), rows[:, 1:], reduction="none")  # (B, L)
            sums += nll.double().sum(dim=0)
    finally:
        model.train(was_training)
    return sums.cpu(), len(starts)


def binned_loss(model: torch.nn.Module, data: torch.Tensor, lengths: Sequence[int], windows: int | None = 64,
                batch_size: int = 8, device: torch.device | str = "cpu", amp: bool = False,
                amp_dtype: str = "bf16", documents: Documents | None = None) -> list[dict[str, float | int]]:
    """Rows {bin_start, bin_end, loss, ppl, tokens}, one per bin, over `windows` validation windows (None: all),
    one per document from its start when `documents` gives `data`'s document boundaries."""
    lengths = parse_lengths(lengths)
    if windows is not None and windows <= 0:
        raise HopeError(f"--samples (--windows) must be > 0, got {windows}")
    if batch_size <= 0:
        raise HopeError(f"--batch_size must be > 0, got {batch_size}")
    sums, n_windows = position_nll(model, data, lengths[-1], windows, batch_size, device, amp, amp_dtype, documents)
    rows = []
    for lo, hi in bins_of(lengths):
        tokens = n_windows * (hi - lo)
        loss = float(sums[lo:hi].sum()) / tokens
        rows.append({"bin_start": lo, "bin_end": hi, "loss": loss, "ppl": math.exp(min(loss, 50.0)),
                     "tokens": tokens})
    return rows


def binned_rows(checkpoints: Sequence[str], data: str | None, lengths: Sequence[int], windows: int | None = 64,
                batch_size: int = 8, device: str = "auto", amp: bool = False, amp_dtype: str = "bf16",
                log: Callable[[str], None] = print, mem_write: float | None = None) -> list[dict]:
    """Rows {bin_start, bin_end, loss, ppl, tokens, model_type, checkpoint, step, data, max_len, attn_window,
    mem_write} for every checkpoint (step: its training step; max_len/attn_window: how far its attention sees).

    `mem_write` gates every memory write of a HOPE model during the evaluation (0: the memories stay at their
    learned initial state, so the difference to the default shows what the in-context writes carry, bin by
    bin); None keeps the checkpoint's schedule. The baseline has no memory: its rows say None.

    Windows come from the validation split of `data`, else of each checkpoint's training data, else the synthetic
    corpus (then the one it was trained on, by its seed); on a collection of documents, one window per validation
    document from its start (the documents too short for max(lengths) + 1 bytes are counted in a note).
    """
    from hope.checkpoint import load_model
    from hope.runtime import resolve_device

    lengths = parse_lengths(lengths)
    dev = resolve_device(device)
    rows = []
    for path in checkpoints:
        model, cfg, ckpt = load_model(path, dev)
        gate = None if cfg.model_type != "hope" else model.mem_gate if mem_write is None else mem_write
        if gate is not None:
            if not 0.0 <= gate <= 1.0:
                raise HopeError(f"--mem_write is a gate in [0, 1], got {gate}")
            model.set_schedules(gate, model.surprise_scale)
        if not data and cfg.data and not data_exists(cfg.data):
            raise HopeError(f"the checkpoint's training data {cfg.data} is not there; pass --data PATH")
        corpus = load_corpus(data if data else cfg.data, seed=cfg.seed)
        if cfg.model_type == "baseline" and lengths[-1] > cfg.max_len:
            log(f"note: the baseline attends to the last max_len={cfg.max_len} bytes only; positions past it see a "
                "sliding window")
        if corpus.val_docs is not None:
            used, short = document_windows(corpus.val_docs, lengths[-1], windows)
            log(f"note: {corpus.name}: {len(used)} validation documents read from their start; {short} of "
                f"{len(corpus.val_docs)} shorter than max(lengths) + 1 = {lengths[-1] + 1} bytes left out")
        for row in binned_loss(model, corpus.val, lengths, windows, batch_size, dev, amp, amp_dtype,
                               corpus.val_docs):
            rows.append({**row, "model_type": cfg.model_type, "checkpoint": str(path), "step": ckpt.get("step"),
                         "data": str(data or cfg.data or "synthetic"), "max_len": cfg.max_len,
                         "attn_window": cfg.attn_window, "mem_write": gate})
            log(f"{cfg.model_type} {path} [{row['bin_start']}, {row['bin_end']}): loss {row['loss']:.4f} "
                f"ppl {row['ppl']:.3f}")
        del model
    return rows


__all__ = ["parse_lengths", "bins_of", "document_windows", "position_nll", "binned_loss", "binned_rows"]
