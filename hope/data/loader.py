"""Training batches: random windows of `seq_len + 1` bytes, optionally mixed with recall rows.

A recall row replaces a text row with probability `recall_fraction`: a single-episode row
(`hope.data.recall.training_row`, `recall_task: episodes`) or, given an `MQARSpec`, an MQAR row
(`hope.data.mqar`, `recall_task: mqar`) whose targets are IGNORE (-100) everywhere but at its answers when the
spec says `answers_only` (`loss_on: answers`); text rows keep every target.

Batch i of a run is a pure function of (seed, i, rank), so a resumed run sees exactly the batches the
uninterrupted run would have seen, whatever `num_workers` is, without saving any loader state.

The data is read by offset, a window at a time: over a memory-mapped corpus (hope.data.mapped) a worker reads only
the pages of its windows. Workers share the mapping: a forked worker inherits it, and a `BatchStream` pickles
its data by reference (path, offset, length), so a spawned worker maps the file again instead of receiving a copy.
"""

from __future__ import annotations

import random
import signal

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hope.data import mqar
from hope.data.mapped import share, unshare
from hope.data.recall import training_row


def _batch_seed(seed: int, index: int, rank: int) -> int:
    return (seed * 1_000_003 + index * 7_919 + rank * 104_729) % (2**63)


def sample_batch(data: torch.Tensor, batch_size: int, seq_len: int, seed: int, index: int = 0, rank: int = 0,
                 recall_fraction: float = 0.0, recall_episodes: int = 1, mqar_spec: mqar.MQARSpec | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch number `index`: x, y of shape (B, T) int64 with y = x shifted by one byte (IGNORE where an MQAR
    row's loss is restricted to its answers)."""
    gen = torch.Generator().manual_seed(_batch_seed(seed, index, rank))
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=gen)
    rows = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()]).long()  # (B, T+1)
    targets = rows[:, 1:].clone()  # (B, T)
    if recall_fraction > 0:
        rng = random.Random(_batch_seed(seed, index, rank) + 1)
        for b in range(batch_size):
            if rng.random() >= recall_fraction:
                continue
            if mqar_spec is None:
                rows[b] = training_row(rng, seq_len + 1, data, recall_episodes)
                targets[b] = rows[b, 1:]
            else:
                row = mqar.training_row(rng, seq_len + 1, mqar_spec.pairs, mqar_spec.gap_min, mqar_spec.gap_max,
                                        mqar_spec.hide_answers)
                rows[b], targets[b] = row.tokens, mqar.training_targets(row, mqar_spec.answers_only)
    return rows[:, :-1], targets


class BatchStream(IterableDataset):
    """Yields batches `start .. stop-1`; with several workers, worker w takes indices w, w+n, ... so the
    DataLoader's round-robin order is the index order."""

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, seed: int, start: int, stop: int,
                 rank: int = 0, recall_fraction: float = 0.0, recall_episodes: int = 1,
                 mqar_spec: mqar.MQARSpec | None = None):
        self.data, self.batch_size, self.seq_len = data, batch_size, seq_len
        self.seed, self.start, self.stop, self.rank = seed, start, stop, rank
        self.recall_fraction, self.recall_episodes, self.mqar_spec = recall_fraction, recall_episodes, mqar_spec

    def __getstate__(self) -> dict:
        return {**self.__dict__, "data": share(self.data)}  # a mapped corpus travels as (path, offset, length)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, data=unshare(state["data"]))

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(self.start + wid, self.stop, nw):
            yield sample_batch(self.data, self.batch_size, self.seq_len, self.seed, index, self.rank,
                               self.recall_fraction, self.recall_episodes, self.mqar_spec)


def make_loader(data: torch.Tensor, batch_size: int, seq_len: int, seed: int, start: int, stop: int, *,
                rank: int = 0, recall_fraction: float = 0.0, recall_episodes: int = 1,
                mqar_spec: mqar.MQARSpec | None = None, num_workers: int = 0, pin_memory: bool = False,
                prefetch_factor: int = 2) -> DataLoader:
    """A DataLoader over `BatchStream` honouring num_workers / pin_memory / prefetch_factor."""
    stream = BatchStream(data, batch_size, seq_len, seed, start, stop, rank, recall_fraction, recall_episodes,
                         mqar_spec)
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None,
                      persistent_workers=False, worker_init_fn=_ignore_sigint if num_workers > 0 else None)


def _ignore_sigint(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: workers ignore it so the main process can save a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
