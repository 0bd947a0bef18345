"""Training schedules as pure functions of the optimiser step (nanoGPT's ``get_lr`` style).

Steps count from 0, the step about to be taken; nothing here keeps state, so resuming at step ``s`` reproduces the
value exactly.
"""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Linear warmup to ``base_lr``, then half a cosine down to ``min_lr`` at ``total_steps``, then flat.

    Exact values:

    - warmup (``step < warmup_steps``): ``base_lr * (step + 1) / warmup_steps``, so step 0 already moves the
      weights (``base_lr / warmup_steps``) and step ``warmup_steps - 1`` reaches ``base_lr``;
    - ``step == warmup_steps``: ``base_lr`` (cosine at phase 0);
    - ``step == warmup_steps + (total_steps - warmup_steps) / 2``: ``(base_lr + min_lr) / 2``;
    - ``step >= total_steps``: ``min_lr``.

    ``warmup_steps = 0`` starts the cosine at step 0 with ``base_lr``; ``total_steps == warmup_steps`` jumps to
    ``min_lr`` right after the warmup.
    """
    if warmup_steps < 0 or total_steps < warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def ramp(step: int, start: float, end: float, warmup_steps: int) -> float:
    """Linear ramp from ``start`` at step 0 to ``end`` at ``step >= warmup_steps``, then flat.

    Schedules ``surprise_scale`` and the ``mem_write`` gate (README.md, "Configuration"); ``warmup_steps = 0`` gives
    ``end`` from step 0. Same values as ``hope.config.Schedule.at``.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps
