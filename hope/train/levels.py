"""Nested level stepping (architecture.md, "Slow level"): the slow CMS level's parameters live in their own
optimiser that steps only every `update_frequencies.optimizer_step` steps on the average of the finite gradients
of the steps in between (kept in an accumulator that the checkpoint carries); the fast levels (SMT, bank, fast
CMS) learn in context inside `forward`. Used by hope.train.loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hope.config import Config
from hope.layers.roles import SLOW, with_role
from hope.train.guard import masked_step

if TYPE_CHECKING:
    from hope.train.loop import _Run


def split_slow_params(model: torch.nn.Module, cfg: Config) -> tuple[list, list]:
    """(fast/normal named params, slow-level named params); slow only with a CMS chain stepping every N > 1."""
    named = list(model.named_parameters())
    if cfg.model_type != "hope" or cfg.cms != "chain" or cfg.update_frequencies.optimizer_step <= 1:
        return named, []
    slow = with_role(model, SLOW)  # the layers say which (hope.layers.roles)
    slow_ids = {id(p) for _, p in slow}
    return [(n, p) for n, p in named if id(p) not in slow_ids], slow


def add_slow_gradients(run: _Run, ok: torch.Tensor) -> None:
    """Add this step's slow-level gradients, unscaled, to the period's sums where `ok` (on the device), and count
    the step when it was finite."""
    inv_scale = run.scaler._get_scale_async().double().reciprocal() if run.use_scaler else 1.0
    for n, p in run.slow_named:
        if p.grad is not None:
            run.slow_grads[n].add_(torch.where(ok, p.grad * inv_scale, 0.0).to(p.grad.dtype))
    run.slow_count = run.slow_count + ok.to(torch.int64)


def step_slow_level(run: _Run) -> None:
    """The slow CMS level's step: the average of its period's finite gradients, clipped, skipped (on the device)
    when the period had none; then a fresh period."""
    count = torch.as_tensor(run.slow_count, device=run.device)
    for n, p in run.slow_named:
        p.grad = run.slow_grads[n] / count.clamp(min=1).to(run.slow_grads[n].dtype)
    if run.cfg.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.slow_params, run.cfg.grad_clip_norm)
    masked_step(run.slow_optimizer, count > 0)
    run.slow_optimizer.zero_grad(set_to_none=True)
    for buf in run.slow_grads.values():
        buf.zero_()
    run.slow_count = torch.zeros((), dtype=torch.int64, device=run.device)
