"""Models: `build_model(cfg)` and parameter matching between HOPE and the baseline."""

from __future__ import annotations

import dataclasses

from hope.config import Config
from hope.models.lm import LanguageModel


def build_model(cfg: Config) -> LanguageModel:
    return LanguageModel(cfg)


def count_params(cfg: Config) -> int:
    """Parameter count of the model `cfg` describes (built on the meta device: no memory, no time)."""
    import torch

    with torch.device("meta"):
        return build_model(cfg).num_params()


def matched_baseline_config(hope_cfg: Config, tolerance: float = 0.10) -> Config:
    """A baseline config with the same width, heads, max_len and training settings whose parameter count is
    as close as possible to `hope_cfg`'s (within `tolerance` when the search space allows).

    HOPE blocks hold more parameters than Transformer blocks (memories, bank, CMS levels), so the baseline
    gets more depth and/or a wider SwiGLU: search depth in [1, 4 * depth] and ff_mult on a 0.25 grid in
    [1, 16], and keep the closest count, preferring the original ff_mult on ties.
    """
    target = count_params(dataclasses.replace(hope_cfg, model_type="hope"))
    best, best_gap = None, float("inf")
    for depth in range(1, 4 * hope_cfg.depth + 1):
        for ff_quarters in range(4, 65):
            cand = dataclasses.replace(hope_cfg, model_type="baseline", depth=depth, ff_mult=ff_quarters / 4)
            gap = abs(count_params(cand) - target) / target
            if gap < best_gap - 1e-9 or (abs(gap - best_gap) < 1e-9 and cand.ff_mult == hope_cfg.ff_mult):
                best, best_gap = cand, gap
            if gap <= 0.01 and depth >= hope_cfg.depth:
                return cand
    return best


__all__ = ["LanguageModel", "build_model", "count_params", "matched_baseline_config"]
