"""One language-model shell for both models: byte embedding -> blocks -> RMSNorm -> tied head -> loss.

    logits, loss, state = model(idx, targets=None, state=None)

`state` carries everything a stream needs (attention caches, fast weights, episodic bank, their state inside the
current chunk, the absolute position); None starts a fresh stream. Inputs longer than one segment (`seq_len`) are
processed segment by segment with the state carried, so one call equals a sequence of shorter calls (HOPE: memories
carry information; baseline: its attention window slides).

`cms_objective: task` (the paper's CMS objective, Nested Learning eq. 71) writes the fast CMS level of every
block here, because only the whole model sees the task loss: the stream is processed in chunks of
`update_frequencies.error_update` tokens counted from its start (`_task_chunk`), each read at the fast weights
committed before it; after a chunk, every block's fast weights take one gradient step on the next-byte loss
of that chunk, backpropagated through all the layers above and the head. The step is first-order: its
gradient is a constant of the outer graph (no create_graph), so training reaches the initial fast weights
through the reads and the step size through the step, but not through the inner gradient itself.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hope.config import Config
from hope.layers.roles import OWN_INIT, RESIDUAL_OUT, parameter_roles
from hope.models.baseline import TransformerBlock
from hope.models.hope import HopeBlock
from hope.tokenizer import VOCAB_SIZE


class LMState(NamedTuple):
    """A stream's state: what every block carries, and where the stream is."""

    pos: int  # absolute position of the next byte
    layers: list  # one state per block (HOPE: `BlockState`; baseline: {"attn": KV cache})
    task_tail: torch.Tensor | None = None  # (B, t) cms_objective: task: bytes of the incomplete fast-CMS chunk


class LanguageModel(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.dim)
        block = HopeBlock if cfg.model_type == "hope" else TransformerBlock
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, VOCAB_SIZE, bias=False)
        self.head.weight = self.embed.weight  # tied byte embeddings
        self._init_weights(parameter_roles(self))
        # Schedules set by the training loop every step; evaluation uses their final values (architecture.md,
        # "Execution on accelerators"). 0-dim tensors on the model's device, updated in place: the forward reads no host number (no host-to-device
        # copy per call, nothing for torch.compile to guard on as they ramp). Not persistent: they belong to the run
        # (the checkpoint's step sets them), not to the weights.
        self.register_buffer("_mem_gate", torch.tensor(float(cfg.mem_write.end)), persistent=False)
        self.register_buffer("_surprise_scale", torch.tensor(float(cfg.surprise_scale.end)), persistent=False)

    def _init_weights(self, roles: dict[str, frozenset[str]]) -> None:
        """nanoGPT's init: linear and embedding weights N(0, 0.02), biases 0, except parameters their layer
        initialises itself (role `own_init`); residual output projections N(0, 0.02 / sqrt(2 depth)) (GPT-2)."""
        names = {id(m): n for n, m in self.named_modules()}

        def init(module: nn.Module) -> None:
            if not isinstance(module, (nn.Linear, nn.Embedding)):
                return
            for local, p in module.named_parameters(recurse=False):
                if OWN_INIT not in roles.get(f"{names[id(module)]}.{local}", ()):
                    nn.init.normal_(p, mean=0.0, std=0.02) if local == "weight" else nn.init.zeros_(p)

        self.apply(init)  # children first, as nn.Module.apply goes: the tied head's init is the embedding's
        for name, p in self.named_parameters():
            if RESIDUAL_OUT in roles.get(name, ()):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.cfg.depth))

    def num_params(self) -> int:
        """Parameters counted once (the tied head is the embedding)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def mem_gate(self) -> float:
        """The mem_write gate now in force (a host read: for reports, never inside a step)."""
        return float(self._mem_gate)

    @property
    def surprise_scale(self) -> float:
        return float(self._surprise_scale)

    @torch.no_grad()
    def set_schedules(self, mem_gate: float, surprise_scale: float) -> None:
        """Set both schedules in place (a fill with a scalar argument: no host-to-device copy, no sync)."""
        self._mem_gate.fill_(float(mem_gate))
        self._surprise_scale.fill_(float(surprise_scale))

    def init_state(self, batch: int, device: torch.device | str | None = None) -> LMState:
        device = torch.device(device) if device is not None else self.embed.weight.device
        dtype = self.embed.weight.dtype
        layers = [b.init_state(batch, device, dtype) for b in self.blocks]
        if self.cfg.cms_objective == "task":
            # Bytes of the current, incomplete fast-CMS chunk; "layers" hold the state committed at its start
            # (stream position pos - t), from which the next call replays them (`_task_stream`).
            return LMState(0, layers, torch.zeros(batch, 0, dtype=torch.long, device=device))
        return LMState(0, layers)

    def _segment(self, idx: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        x = self.embed(idx)  # (B, T, C)
        layers = []
        for block, layer_state in zip(self.blocks, state.layers):
            x, new_state = block(x, state.pos, layer_state, self._mem_gate, self._surprise_scale)
            layers.append(new_state)
        return self.head(self.norm(x)), LMState(state.pos + idx.shape[1], layers, state.task_tail)

    def _segments(self, idx: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        """idx (B, T) segment by segment (`seq_len`) with the state carried -> logits (B, T, 256), new state."""
        logits = []
        for start in range(0, idx.shape[1], self.cfg.seq_len):
            seg_logits, state = self._segment(idx[:, start:start + self.cfg.seq_len], state)
            logits.append(seg_logits)
        return (logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)), state

    def _task_stream(self, idx: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        """cms_objective: task. idx (B, T) -> logits (B, T, 256), new state.

        The incomplete chunk left by the previous call (`task_tail`) is replayed from the state committed at its
        start, so each chunk's task loss is always computed over the whole chunk, in one graph, however the stream
        was split into calls: streaming equals one pass. A chunk that stays incomplete is read at the
        committed state and commits nothing; its bytes become the new tail.
        """
        tail = state.task_tail  # (B, t)
        seq = torch.cat([tail, idx], dim=1)  # (B, t + T)
        committed = LMState(state.pos - tail.shape[1], state.layers, tail[:, :0])  # pos: a chunk boundary
        chunk, n_seq = self.cfg.update_frequencies.error_update, seq.shape[1]
        n_commit = (n_seq // chunk) * chunk
        logits = []
        for start in range(0, n_commit, chunk):
            chunk_logits, committed = self._task_chunk(seq[:, start:start + chunk], committed)
            logits.append(chunk_logits)
        if n_commit < n_seq:
            chunk_logits, _ = self._segments(seq[:, n_commit:], committed)
            logits.append(chunk_logits)
        logits = torch.cat(logits, dim=1)[:, tail.shape[1]:]  # (B, T, 256): the replayed tail's were returned before
        return logits, LMState(state.pos + idx.shape[1], committed.layers, seq[:, n_commit:])

    def _task_chunk(self, idx: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        """One complete fast-CMS chunk idx (B, C), read at the committed fast weights w_n of every block, then
        w_{n+1} = w_n - eta * grad_{w_n} L_n (Nested Learning eq. 71) with

            L_n = sum over the chunk's positions t < C - 1 of CE(logits_t, idx_{t+1})

        the next-byte loss of every position whose target lies inside the chunk (the last position's target is
        the next chunk's first byte, not seen yet). A per-sample sum, not a batch mean: each sample's fast
        weights get the gradient of its own loss only. eta is the surrogate's bound and mem_write gate
        (`ContinuumMemory.task_step`); at gate 0 the step changes nothing (the fast level stays at its init).

        The inner gradient is taken with torch.autograd.grad on the committed fast weights: in training they are
        part of the outer graph (retain_graph keeps it for the outer backward); without one (evaluation,
        generation under torch.no_grad) the chunk runs under enable_grad on detached leaves and its outputs are
        detached again, so the fast level keeps learning at inference like the other memories.
        """
        gate = self._mem_gate  # a device tensor: no host branch on its value (gate 0 gives a zero step)
        outer = torch.is_grad_enabled()
        # Without an outer graph, detach even tensors that report requires_grad (a view of a parameter taken
        # under no_grad does, yet carries no graph to differentiate through).
        fast = [layer.cms.change if outer and layer.cms.change.requires_grad else layer.cms.change.detach().requires_grad_()
                for layer in state.layers]  # per block the fast change D (B, 1, C, h)
        start = state._replace(layers=[layer._replace(cms=layer.cms._replace(change=d))
                                       for layer, d in zip(state.layers, fast)])
        with torch.enable_grad():
            logits, end = self._segments(idx, start)  # (B, C, 256)
            at_least_fp32 = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))  # bf16 under autocast
            loss = F.cross_entropy(at_least_fp32.reshape(-1, VOCAB_SIZE), idx[:, 1:].reshape(-1), reduction="sum")
            grads = torch.autograd.grad(loss, fast, retain_graph=outer)
        end = end._replace(layers=[layer._replace(cms=layer.cms._replace(change=block.cms.task_step(d, g, gate)))
                                   for block, layer, d, g in zip(self.blocks, end.layers, fast, grads)])
        if not outer:
            logits, end = logits.detach(), _detached(end)
        return logits, end

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: LMState | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, LMState]:
        """idx (B, T) int64 bytes; targets (B, T) or None (-100: not scored); returns logits (B, T, 256), mean loss
        over the scored targets, new state."""
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        if self.cfg.cms_objective == "task":
            logits, state = self._task_stream(idx, state)
        else:
            logits, state = self._segments(idx, state)
        loss = None
        if targets is not None:
            # Mean over the scored targets: -100 (`loss_on: answers`, hope.data.mqar.IGNORE) counts nowhere.
            loss = F.cross_entropy(logits.float().reshape(-1, VOCAB_SIZE), targets.reshape(-1), ignore_index=-100)
        return logits, loss, state


def _detached(tree: Any) -> Any:
    """A copy of a nested state (NamedTuples, dicts, lists of tensors) with every tensor detached."""
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if isinstance(tree, dict):
        return {key: _detached(value) for key, value in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_detached(value) for value in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detached(value) for value in tree)
    return tree
