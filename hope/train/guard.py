"""The device-side step guard of the training loop (hope.train.loop): a step whose mean loss, global gradient
norm or slow-level gradients are not all finite is skipped on the device, without a host read.

`guard_step` decides (unscale, clip, the `ok` flag and the stop flag, all-reduced under torchrun); `masked_step`
applies an optimiser step only where `ok` (parameters and optimiser state keep their values bit for bit
otherwise); `BadSteps` counts skipped steps and runs of bad steps on the device and raises at the next read point
after `max_bad_steps` in a row; `device_resident` keeps AdamW's step counter on the GPU so a step can be undone
there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from hope.errors import HopeError
from hope.train.optim import CombinedOptimizer
from hope.train.sharding import full_value, local

if TYPE_CHECKING:
    from hope.train.loop import _Run
    from hope.train.progress import StopSignal


def global_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global gradient norm of `params`, clipping to `max_norm` when it is > 0."""
    if max_norm > 0:  # FSDP: the norm of the sharded gradients, reduced across ranks (a replicated DTensor)
        return full_value(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    return full_value(torch.nn.utils.get_total_norm(grads)) if grads else torch.zeros(())


def guard_step(run: _Run, loss: torch.Tensor, stop: StopSignal) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Unscale and clip the gradients; decide, on the device, whether the step is finite, and whether to stop.

    Returns (loss, grad norm, ok, stopping): `ok` is a 0-dim bool tensor (loss, global grad norm and the slow
    level's gradients all finite) that `_apply_step` applies without reading it; `stopping` is a host bool (the
    signal flag). Under torchrun the loss is the mean over ranks and `ok` is all ranks' (a device all-reduce,
    not read); the stop flag is all-reduced over a CPU (gloo) group, so no rank reads a device value for it."""
    run.scaler.unscale_(run.optimizer)
    grad_norm = global_grad_norm(run.main_params, run.cfg.grad_clip_norm)
    ok = torch.isfinite(loss) & torch.isfinite(grad_norm.to(run.device))
    slow_grads = [local(p.grad) for p in run.slow_params if p.grad is not None]  # FSDP: this rank's shards,
    if slow_grads:  # and the all-reduce of `ok` below makes it every rank's
        ok = ok & torch.stack([torch.isfinite(g).all() for g in slow_grads]).all()
    stopping = stop.received is not None
    if run.info.enabled:  # every rank must skip, stop and log alike
        flags = torch.stack([loss, (~ok).double()])
        dist.all_reduce(flags)
        loss, ok = flags[0] / run.info.world_size, flags[1] == 0
        stop_flag = torch.tensor([float(stopping)], dtype=torch.float64)
        dist.all_reduce(stop_flag, group=run.control_group)
        stopping = bool(stop_flag[0] > 0)  # a CPU tensor: no device sync
    return loss, grad_norm, ok, stopping


def device_state(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> list[torch.Tensor] | None:
    """Every tensor `optimizer.step()` will change (parameters with a gradient and their state), or None when
    the step cannot be undone on the device: state not created yet (the first step creates it), or state held
    as host numbers or on another device (M3's Python step count; AdamW's CPU step counter on CUDA unless
    `capturable`, which `_setup` turns on there)."""
    tensors, states = [], optimizer.state  # one lookup: CombinedOptimizer.state merges its children's anew
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = states.get(p)
            if not state:
                return None
            tensors.append(p)
            for value in state.values():
                if not isinstance(value, torch.Tensor) or value.device != ok.device:
                    return None
                tensors.append(value)
    return tensors


@torch.no_grad()
def masked_step(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """`optimizer.step()` where `ok`, else nothing, decided without a host read.

    Fused AdamW takes the decision itself: its kernel skips the update where its ``found_inf`` input is 1
    (parameters, moments and the step count keep their values bit for bit), a few launches for the whole model.
    Other optimisers run the step on a copy of what it changes and `torch.where(ok, new, old)` keeps one or the
    other (one extra copy of the parameters and optimiser state per step). Where `device_state` says the step
    cannot be undone on the device, `ok` is read on the host instead (a sync: the first step of a run with such an
    optimiser, and every step of M3)."""
    if isinstance(optimizer, CombinedOptimizer):  # muon/m3: each half decides its own way
        for child in optimizer.optimizers:
            masked_step(child, ok)
        return
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (~ok).to(torch.float32)
        optimizer.step()
        return
    tensors = device_state(optimizer, ok)
    if tensors is None:
        if bool(ok):
            optimizer.step()
        return
    saved = [t.clone() for t in tensors]
    optimizer.step()
    for t, old in zip(tensors, saved):
        t.copy_(torch.where(ok, t, old))


def device_resident(run: _Run) -> None:
    """On CUDA, AdamW (alone or as the other half of muon/m3) keeps its step counter on the GPU (`capturable`),
    so that a skipped step can be undone there (`masked_step`) and bias correction reads no host number."""
    if run.device.type != "cuda":
        return
    for opt in (run.optimizer, run.slow_optimizer):
        if opt is None:
            continue
        for group in opt.param_groups:
            if "capturable" in group:
                group["capturable"] = True
                for p in group["params"]:
                    state = opt.state.get(p, {})
                    if isinstance(state.get("step"), torch.Tensor):
                        state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


class BadSteps:
    """The non-finite-step guard, kept on the device: per step `record(step, ok)` updates the skipped count, the
    current run of bad steps and the first step at which that run reached `max_bad_steps`, all without a read;
    `check()` (at host-read points) reads them and raises when the limit was reached."""

    def __init__(self, device: torch.device, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self._skipped = torch.zeros((), dtype=torch.int64, device=device)
        self._in_row = torch.zeros((), dtype=torch.int64, device=device)
        self._abort_at = torch.zeros((), dtype=torch.int64, device=device)  # 0: not reached
        self.skipped = 0  # host copy, as of the last check
        self.reported = 0  # skipped steps already announced

    def record(self, step: int, ok: torch.Tensor) -> None:
        bad = (~ok).to(torch.int64)
        self._skipped += bad
        self._in_row = (self._in_row + 1) * bad
        reached = (self._in_row >= self.max_bad_steps) & (self._abort_at == 0)
        self._abort_at = torch.where(reached, step, self._abort_at)

    def check(self) -> None:
        self.skipped, abort_at = (int(x) for x in torch.stack([self._skipped, self._abort_at]).tolist())
        if abort_at:
            raise HopeError(f"{self.max_bad_steps} non-finite steps in a row at step {abort_at}: training diverged "
                            "(lower lr or surprise_scale, raise error_decay, enable grad_clip_norm)")
