"""Long training streams (`stream.use`): every batch row reads consecutive segments of one stream.

A stream is `stream_len` bytes: a random window of the training split or, with probability `recall_fraction`, a
recall row of that length (`hope.data.recall.training_row`: one episode ends the stream, with a gap up to the
whole stream, or `recall_episodes` pairs scattered through it). Optimiser step `s` reads piece
`s % steps_per_stream` of the stream number `s // steps_per_stream` (its *cycle*), `bptt_segments * seq_len`
bytes; the stream restarts (new offset, and in the loop a fresh model state) when a cycle ends, after
`reset_bytes` bytes or, for a training split shorter than that, after the longest whole number of pieces that
fits. Offsets are drawn so the whole stream fits, so no stream ever runs past the end of the data.

All rows of one micro-batch restart together: the model's state is one batch-wide pytree (with one position for
the batch), so restarting one row alone would mean editing it. A stream is a pure function of
(seed, rank, slot, cycle), `slot` being the micro-batch index within the optimiser step, so a resumed run reads
exactly the bytes the uninterrupted run would have read.
"""

from __future__ import annotations

import random

import torch

from hope.data.recall import training_row

RECALL = -1  # the offset recorded for a recall stream (it is built, not cut out of the split)


def steps_per_stream(n_bytes: int, piece_len: int, reset_bytes: int) -> int:
    """Optimiser steps one stream lasts: whole pieces within `reset_bytes` and within the data (at least 1)."""
    return max(1, min(reset_bytes, n_bytes - 1) // piece_len)


def _stream_seed(seed: int, rank: int, slot: int, cycle: int) -> int:
    return (seed * 1_000_003 + cycle * 7_919 + slot * 15_485_863 + rank * 104_729 + 17) % (2**63)


def stream_rows(data: torch.Tensor, batch_size: int, stream_len: int, seed: int, rank: int = 0, slot: int = 0,
                cycle: int = 0, recall_fraction: float = 0.0, recall_episodes: int = 1
                ) -> tuple[torch.Tensor, list[int]]:
    """The `batch_size` streams of one (rank, slot, cycle): rows (B, stream_len + 1) int64 (one byte more for
    the last target) and each row's offset in `data` (RECALL for a recall stream)."""
    gen = torch.Generator().manual_seed(_stream_seed(seed, rank, slot, cycle))
    offsets = torch.randint(0, len(data) - stream_len, (batch_size,), generator=gen).tolist()
    rows = torch.stack([data[o:o + stream_len + 1] for o in offsets]).long()  # (B, L + 1)
    if recall_fraction > 0:
        rng = random.Random(_stream_seed(seed, rank, slot, cycle) + 1)
        for b in range(batch_size):
            if rng.random() < recall_fraction:
                rows[b] = training_row(rng, stream_len + 1, data, recall_episodes)
                offsets[b] = RECALL
    return rows, offsets


class StreamSchedule:
    """Which bytes each micro-batch slot reads at each optimiser step; keeps the current cycle's rows per slot.

    `piece(step, slot) -> (x, y, fresh)`: x, y (B, bptt_segments * seq_len) with y = x shifted by one byte, and
    `fresh` true at the first piece of a stream (the caller starts a fresh model state there).
    """

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, bptt_segments: int, reset_bytes: int,
                 seed: int, rank: int = 0, recall_fraction: float = 0.0, recall_episodes: int = 1):
        self.data, self.batch_size, self.seed, self.rank = data, batch_size, seed, rank
        self.piece_len = bptt_segments * seq_len
        self.steps_per_stream = steps_per_stream(len(data), self.piece_len, reset_bytes)
        self.stream_len = self.steps_per_stream * self.piece_len
        self.recall_fraction, self.recall_episodes = recall_fraction, recall_episodes
        self._rows: dict[int, tuple[int, torch.Tensor, list[int]]] = {}  # slot -> (cycle, rows, offsets)

    def streams(self, step: int, slot: int) -> tuple[torch.Tensor, list[int]]:
        """(rows, offsets) of the streams `slot` reads at `step`."""
        cycle = step // self.steps_per_stream
        cached = self._rows.get(slot)
        if cached is None or cached[0] != cycle:
            rows, offsets = stream_rows(self.data, self.batch_size, self.stream_len, self.seed, self.rank, slot,
                                        cycle, self.recall_fraction, self.recall_episodes)
            cached = self._rows[slot] = (cycle, rows, offsets)
        return cached[1], cached[2]

    def piece(self, step: int, slot: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        rows, _ = self.streams(step, slot)
        k = step % self.steps_per_stream
        start = k * self.piece_len
        window = rows[:, start:start + self.piece_len + 1]  # (B, piece_len + 1)
        return window[:, :-1], window[:, 1:], k == 0
