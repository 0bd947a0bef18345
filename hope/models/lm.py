"""One language-model shell for both models: byte embedding -> blocks -> RMSNorm -> tied head -> loss.

    logits, loss, state = model(idx, targets=None, state=None)

`state` carries everything a stream needs (attention caches, fast weights, episodic bank, partial-chunk tails,
the absolute position); None starts a fresh stream. Inputs longer than one segment (`seq_len`) are processed
segment by segment with the state carried, so one call equals a sequence of shorter calls (HOPE: memories
carry information; baseline: its attention window slides).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hope.config import Config
from hope.models.baseline import TransformerBlock
from hope.models.hope import HopeBlock
from hope.tokenizer import VOCAB_SIZE


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
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual output projections
            if name.endswith(("attn.proj.weight", "smt.proj.weight", "mlp.down.weight", "slow.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.depth))
        # Schedules set by the training loop every step (architecture.md §5); evaluation uses their final values.
        self.mem_gate = cfg.mem_write.end
        self.surprise_scale = cfg.surprise_scale.end

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if getattr(module, "zero_init", False):
            return  # deliberately silent at init (e.g. the episodic bank's output)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None and not getattr(module, "keep_bias", False):
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters counted once (the tied head is the embedding)."""
        return sum(p.numel() for p in self.parameters())

    def set_schedules(self, mem_gate: float, surprise_scale: float) -> None:
        self.mem_gate, self.surprise_scale = float(mem_gate), float(surprise_scale)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> dict:
        device = torch.device(device) if device is not None else self.embed.weight.device
        dtype = self.embed.weight.dtype
        return {"pos": 0, "layers": [b.init_state(batch, device, dtype) for b in self.blocks]}

    def _segment(self, idx: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        x = self.embed(idx)  # (B, T, C)
        layers = []
        for block, layer_state in zip(self.blocks, state["layers"]):
            x, new_state = block(x, state["pos"], layer_state, self.mem_gate, self.surprise_scale)
            layers.append(new_state)
        return self.head(self.norm(x)), {"pos": state["pos"] + idx.shape[1], "layers": layers}

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """idx (B, T) int64 bytes; targets (B, T) or None; returns logits (B, T, 256), mean loss, new state."""
        if state is None:
            state = self.init_state(idx.shape[0], idx.device)
        logits = []
        for start in range(0, idx.shape[1], self.cfg.seq_len):
            seg_logits, state = self._segment(idx[:, start:start + self.cfg.seq_len], state)
            logits.append(seg_logits)
        logits = logits[0] if len(logits) == 1 else torch.cat(logits, dim=1)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, VOCAB_SIZE), targets.reshape(-1))
        return logits, loss, state
