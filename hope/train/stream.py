"""Where the training loop's micro-batches come from, and what state each one starts from.

`WindowBatches`: independent random windows of `seq_len` bytes, each from a fresh state (`stream.use: false`).
`StreamBatches`: long streams read `bptt_segments * seq_len` bytes per optimiser step (hope.data.stream), the
model's state carried from step to step per micro-batch slot and detached in between, so backpropagation runs
through the state across the `bptt_segments` segments of one step and no further (truncated BPTT). The model
splits the piece into `seq_len` segments itself, carrying the state between them (hope.models.lm), so one
forward call per micro-batch is the whole truncated window.

For exact resume the checkpoint's "stream" entry holds, for every rank (gathered to rank 0) and every slot, the
stream's cycle, its offsets and the carried state as plain leaves (hope.models.state); the streams themselves are
rebuilt from the seed. On a collection of documents the schedule draws streams inside documents only
(hope.data.stream), so a carried state never reads into the next document and `fresh` (a None state) marks both a
reset and a new document; nothing here changes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from hope.data.stream import StreamSchedule
from hope.models.state import detach_state, state_from_checkpoint, state_to_checkpoint


class WindowBatches:
    """The loader's independent windows: every micro-batch starts a fresh state, nothing is carried."""

    def __init__(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]):
        self.batches = batches

    def take(self, step: int, slot: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        x, y = next(self.batches)
        return x, y, None

    def carry(self, slot: int, state: Any) -> None:
        pass

    def state_dict(self, step: int) -> None:
        return None


class StreamBatches:
    """Pieces of long streams with the model state carried per micro-batch slot (`stream.use: true`)."""

    def __init__(self, schedule: StreamSchedule, slots: int, rank: int = 0, world_size: int = 1):
        self.schedule, self.rank, self.world_size = schedule, rank, world_size
        self.states: list[Any] = [None] * slots  # detached state after the slot's last piece

    def take(self, step: int, slot: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """x, y (B, bptt_segments * seq_len) and the state to start from (None: a stream starts, fresh state)."""
        x, y, fresh = self.schedule.piece(step, slot)
        return x, y, None if fresh else self.states[slot]

    def carry(self, slot: int, state: Any) -> None:
        self.states[slot] = detach_state(state)

    def state_dict(self, step: int) -> dict[str, Any]:
        """What resuming after `step` completed optimiser steps needs; a collective under torchrun (every rank
        calls it, rank 0 gets every rank's entry)."""
        last = max(step - 1, 0)  # the last step read: its streams are the ones carried
        per_slot = []  # per slot: (offsets per rank, state leaves per leaf and rank or None)
        for slot, state in enumerate(self.states):
            offsets = _gather_ints(self.schedule.streams(last, slot)[1], self.world_size)
            leaves = None if state is None else _gather_leaves(state_to_checkpoint(state), self.world_size)
            per_slot.append((offsets, leaves))
        ranks = [[{"cycle": last // self.schedule.steps_per_stream, "offsets": offsets[r],
                   "state": None if leaves is None else [leaf[r] for leaf in leaves]} for offsets, leaves in per_slot]
                 for r in range(self.world_size)]
        return {"piece_len": self.schedule.piece_len, "steps_per_stream": self.schedule.steps_per_stream,
                "ranks": ranks}

    def load_state_dict(self, saved: dict[str, Any], step: int, template: Callable[[], Any]) -> None:
        """Continue the streams saved by `state_dict(step)`; `template()` gives a fresh state of the model's
        structure. Raises ValueError when the checkpoint's streams do not fit this run."""
        if (saved["piece_len"], saved["steps_per_stream"]) != (self.schedule.piece_len,
                                                               self.schedule.steps_per_stream):
            raise ValueError(f"its streams read {saved['piece_len']} bytes per step for {saved['steps_per_stream']} "
                             f"steps, this config {self.schedule.piece_len} for {self.schedule.steps_per_stream} "
                             "(seq_len, stream.bptt_segments or stream.reset_bytes changed?)")
        if len(saved["ranks"]) != self.world_size:
            raise ValueError(f"it holds the streams of {len(saved['ranks'])} processes, this run has "
                             f"{self.world_size}")
        if step % self.schedule.steps_per_stream == 0:
            return  # the next step starts new streams: nothing carried is read again
        mine = saved["ranks"][self.rank]
        if len(mine) != len(self.states):
            raise ValueError(f"it holds {len(mine)} micro-batch streams, this run has {len(self.states)} "
                             "(grad_accum_steps changed?)")
        for slot, entry in enumerate(mine):
            _, offsets = self.schedule.streams(step - 1, slot)
            if list(entry["offsets"]) != list(offsets):
                raise ValueError("its stream offsets differ from this run's (data or seed changed?)")
            self.states[slot] = None if entry["state"] is None else state_from_checkpoint(template(), entry["state"])


def _gather_ints(values: list[int], world_size: int) -> list[list[int]]:
    if world_size == 1:
        return [list(values)]
    mine = _on_backend_device(torch.tensor(values, dtype=torch.int64))
    out = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(out, mine)
    return [t.tolist() for t in out]


def _gather_leaves(leaves: list[Any], world_size: int) -> list[list[Any]]:
    """Per leaf, its value on every rank (tensors all-gathered; numbers and None are the same on every rank,
    since all ranks read pieces of the same length at the same steps)."""
    if world_size == 1:
        return [[leaf] for leaf in leaves]
    out = []
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            out.append([leaf] * world_size)
            continue
        send = leaf.to(torch.uint8) if leaf.dtype == torch.bool else leaf  # gloo has no bool collectives
        send = _on_backend_device(send.contiguous())
        parts = [torch.empty_like(send) for _ in range(world_size)]
        dist.all_gather(parts, send)
        out.append([(p.bool() if leaf.dtype == torch.bool else p).to(leaf.device) for p in parts])
    return out


def _on_backend_device(tensor: torch.Tensor) -> torch.Tensor:
    """NCCL gathers CUDA tensors only; gloo takes CPU ones."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()))
    return tensor
