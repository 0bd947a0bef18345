"""Models: `build_model(cfg)` and parameter matching between HOPE and the baseline."""

from __future__ import annotations

import dataclasses

import torch

from hope.config import Config
from hope.layers.episodic import EpisodicBank
from hope.layers.smt import SelfModifyingMemory
from hope.models.baseline import swiglu_hidden
from hope.models.lm import LanguageModel
from hope.tokenizer import VOCAB_SIZE


def build_model(cfg: Config) -> LanguageModel:
    return LanguageModel(cfg)


def compile_model(model: LanguageModel, **compile_kwargs) -> torch.nn.Module:
    """`compile: true`: torch.compile the model with each memory's per-chunk step compiled once and its chunk loop
    left eager (`SelfModifyingMemory.compile_step`, `EpisodicBank.compile_step`), so the graph does not unroll
    every chunk of every layer. The schedules are tensors read by the graph, so a ramping schedule recompiles
    nothing. `compile_kwargs` go to every `torch.compile` (e.g. ``backend="eager"`` in tests)."""
    for module in model.modules():
        if isinstance(module, (SelfModifyingMemory, EpisodicBank)):
            module.compile_step(**compile_kwargs)
    return torch.compile(model, **compile_kwargs)


def count_params(cfg: Config) -> int:
    """Parameter count of the model `cfg` describes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        return build_model(cfg).num_params()


def matched_baseline_config(hope_cfg: Config, tolerance: float = 0.10) -> Config:
    """A baseline config with the same width, heads, max_len and training settings whose parameter count is
    within `tolerance` of `hope_cfg`'s.

    HOPE blocks hold more parameters than Transformer blocks (memories, bank, CMS levels), so the baseline gets
    more depth and/or a wider SwiGLU. Search depth in [1, 4 * depth] and ff_mult on a 0.25 grid in [1, 16]; among
    the candidates within tolerance keep the most conventional shape (ff_mult closest to HOPE's, then the
    closest count), so the opponent is a normal Transformer rather than a two-layer model with a huge MLP.
    If nothing is within tolerance, return the closest count.
    """
    target = count_params(dataclasses.replace(hope_cfg, model_type="hope"))
    dim = hope_cfg.dim
    candidates = []
    for depth in range(1, 4 * hope_cfg.depth + 1):
        for ff_quarters in range(4, 65):
            # cms_objective is HOPE's (the baseline has no fast CMS level): back to its default so the config validates
            cand = dataclasses.replace(hope_cfg, model_type="baseline", depth=depth, ff_mult=ff_quarters / 4,
                                       cms_objective="surrogate")
            # embedding (tied head) + final norm + per block: 2 norms, qkv + proj, SwiGLU (gate_up + down)
            params = VOCAB_SIZE * dim + dim + depth * (2 * dim + 4 * dim * dim + 3 * dim * swiglu_hidden(dim, cand.ff_mult))
            candidates.append((abs(params - target) / target, cand))
    within = [(abs(c.ff_mult - hope_cfg.ff_mult), gap, c.depth, c) for gap, c in candidates if gap <= tolerance]
    if within:
        return min(within, key=lambda item: item[:3])[3]
    return min(candidates, key=lambda item: item[0])[1]


__all__ = ["LanguageModel", "build_model", "compile_model", "count_params", "matched_baseline_config"]
