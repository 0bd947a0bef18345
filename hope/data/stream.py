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

On a collection of documents (`documents`: `Corpus.train_docs`) a stream never crosses a document boundary: it
starts at a document's start, or `stream_len`, `2 * stream_len`, ... bytes into it (where one stream reading the
document from its start would have been restarted after `reset_bytes`), and it lies inside that document with
its last target (`stream_starts`). So the carried state's position is always the position in one document, as
`hope-eval-binned` counts it, and a stream that reaches its document's end is over: the next cycle starts a fresh
state at a newly drawn document. The design keeps the batch-wide restart. Restarting one row alone (masking its
state to a fresh one) is not possible with today's state, whose position and chunk boundaries are shared by the
batch; restarting every row when any row's document ends would cut the long documents short at the shortest
one drawn; padding a short document's row with unscored bytes would waste compute and leave pieces with no scored
byte. So each row draws one of the stream-long windows that fit in a document, uniformly over all of them (every
window equally likely, as every offset is on a single file): every byte of a document is trained on except
its tail after the last whole window, and documents shorter than `stream_len + 1` bytes are not streamed at all
(`StreamSchedule.note` says how many bytes that leaves out; lower `stream.reset_bytes` to stream short documents).
Streams are as long as `reset_bytes` allows within the longest training document. A recall row takes its filler
text from the window it replaces, so it too reads one document.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from hope.data.corpus import DataError, Documents
from hope.data.recall import training_row

RECALL = -1  # the offset recorded for a recall stream (it is built, not cut out of the split)


def steps_per_stream(n_bytes: int, piece_len: int, reset_bytes: int) -> int:
    """Optimiser steps one stream lasts: whole pieces within `reset_bytes` and within the data (at least 1)."""
    return max(1, min(reset_bytes, n_bytes - 1) // piece_len)


def stream_starts(documents: Documents, stream_len: int) -> np.ndarray:
    """The offsets where a stream of a collection may start, (n,) int64 ascending: each document's start and every
    `stream_len` bytes after it, as long as the stream and its last target (`stream_len + 1` bytes) end inside
    the document."""
    lengths = documents.lengths()
    per_doc = np.maximum((lengths - 1) // stream_len, 0)  # whole streams in each document
    first = np.cumsum(per_doc) - per_doc  # index of each document's first stream
    within = np.arange(int(per_doc.sum()), dtype=np.int64) - np.repeat(first, per_doc)
    return np.repeat(documents.offsets[:-1], per_doc) + within * stream_len


def _stream_seed(seed: int, rank: int, slot: int, cycle: int) -> int:
    return (seed * 1_000_003 + cycle * 7_919 + slot * 15_485_863 + rank * 104_729 + 17) % (2**63)


def stream_rows(data: torch.Tensor, batch_size: int, stream_len: int, seed: int, rank: int = 0, slot: int = 0,
                cycle: int = 0, recall_fraction: float = 0.0, recall_episodes: int = 1,
                starts: np.ndarray | None = None) -> tuple[torch.Tensor, list[int]]:
    """The `batch_size` streams of one (rank, slot, cycle): rows (B, stream_len + 1) int64 (one byte more for
    the last target) and each row's offset in `data` (RECALL for a recall stream).

    `starts` (`stream_starts` of a collection's documents): the offsets a stream may start at, one drawn per row;
    None: any offset of `data` where the stream fits."""
    gen = torch.Generator().manual_seed(_stream_seed(seed, rank, slot, cycle))
    if starts is None:
        offsets = torch.randint(0, len(data) - stream_len, (batch_size,), generator=gen).tolist()
    else:
        offsets = starts[torch.randint(0, len(starts), (batch_size,), generator=gen).numpy()].tolist()
    rows = torch.stack([data[o:o + stream_len + 1] for o in offsets]).long()  # (B, L + 1)
    if recall_fraction > 0:
        rng = random.Random(_stream_seed(seed, rank, slot, cycle) + 1)
        for b in range(batch_size):
            if rng.random() < recall_fraction:
                # The filler of a collection's recall row: the window it replaces (one document's text).
                filler = data if starts is None else data[offsets[b]:offsets[b] + stream_len + 1]
                rows[b] = training_row(rng, stream_len + 1, filler, recall_episodes)
                offsets[b] = RECALL
    return rows, offsets


class StreamSchedule:
    """Which bytes each micro-batch slot reads at each optimiser step; keeps the current cycle's rows per slot.

    `piece(step, slot) -> (x, y, fresh)`: x, y (B, bptt_segments * seq_len) with y = x shifted by one byte, and
    `fresh` true at the first piece of a stream (the caller starts a fresh model state there). With `documents`
    (the boundaries of `data`'s documents) every stream lies inside one document (see the module docstring);
    `note` then says how much of the split the streams cover (None on a single stream of bytes).
    """

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, bptt_segments: int, reset_bytes: int,
                 seed: int, rank: int = 0, recall_fraction: float = 0.0, recall_episodes: int = 1,
                 documents: Documents | None = None):
        self.data, self.batch_size, self.seed, self.rank = data, batch_size, seed, rank
        self.piece_len = bptt_segments * seq_len
        longest = len(data) if documents is None else int(documents.lengths().max(initial=0))
        self.steps_per_stream = steps_per_stream(longest, self.piece_len, reset_bytes)
        self.stream_len = self.steps_per_stream * self.piece_len
        self.recall_fraction, self.recall_episodes = recall_fraction, recall_episodes
        self.starts: np.ndarray | None = None
        self.note: str | None = None
        if documents is not None:
            if longest < self.piece_len + 1:
                raise DataError(f"no training document holds one optimiser step of a stream, stream.bptt_segments * "
                                f"seq_len + 1 = {self.piece_len + 1} bytes (the longest has {longest})")
            self.starts = stream_starts(documents, self.stream_len)
            lengths = documents.lengths()
            streamed = int(np.count_nonzero(lengths >= self.stream_len + 1))
            covered = len(self.starts) * self.stream_len / max(int(lengths.sum()), 1)
            self.note = (f"note: streams of {self.stream_len} bytes start at a document's start or a multiple of "
                         f"{self.stream_len} bytes into it and never cross into the next document: {streamed} of "
                         f"{len(documents)} training documents hold one, {covered:.1%} of the training bytes are "
                         f"streamed (the rest: shorter documents and tails; a smaller stream.reset_bytes streams more)")
        self._rows: dict[int, tuple[int, torch.Tensor, list[int]]] = {}  # slot -> (cycle, rows, offsets)

    def streams(self, step: int, slot: int) -> tuple[torch.Tensor, list[int]]:
        """(rows, offsets) of the streams `slot` reads at `step`."""
        cycle = step // self.steps_per_stream
        cached = self._rows.get(slot)
        if cached is None or cached[0] != cycle:
            rows, offsets = stream_rows(self.data, self.batch_size, self.stream_len, self.seed, self.rank, slot,
                                        cycle, self.recall_fraction, self.recall_episodes, self.starts)
            cached = self._rows[slot] = (cycle, rows, offsets)
        return cached[1], cached[2]

    def piece(self, step: int, slot: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        rows, _ = self.streams(step, slot)
        k = step % self.steps_per_stream
        start = k * self.piece_len
        window = rows[:, start:start + self.piece_len + 1]  # (B, piece_len + 1)
        return window[:, :-1], window[:, 1:], k == 0
