"""Checkpoint and resume of the training loop (hope.train.loop): resume is exact. The checkpoint holds model, EMA,
optimisers, the slow level's accumulated gradients, scaler, step, RNG states and the carried stream states;
under FSDP it is gathered to the single-process format, and loaded under DDP, FSDP or one process alike.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hope.checkpoint import CheckpointError, checkpoint_config, model_state
from hope.config import Config, config_to_dict
from hope.train.guard import device_resident
from hope.train.sharding import (full_model_state, gather_full, load_full_model_state, shard_like,
                                 shard_optimizer_state)

if TYPE_CHECKING:
    from hope.train.loop import _Run


def rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and primitives (so `torch.load(weights_only=True)` reads it)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(py[1]), "python_gauss": py[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_gauss": [int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state`'s RNGs, from whatever device its tensors were loaded onto (RNG states are CPU byte
    tensors to torch, CUDA's included)."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((3, tuple(int(x) for x in state["python"]), state.get("python_gauss")))
    has_gauss, cached = state.get("numpy_gauss", (0, 0.0))
    np.random.set_state(("MT19937", state["numpy"].cpu().numpy().astype(np.uint32), int(state.get("numpy_pos", 624)),
                         int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def check_resumable(ckpt: dict[str, Any], stored: Config, model: torch.nn.Module, cfg: Config, path: Any) -> None:
    """The checkpoint must hold the same model type with the same tensor shapes as the config builds."""
    if stored.model_type != cfg.model_type:
        raise CheckpointError(f"{path}: the checkpoint holds a {stored.model_type} model but the config asks for "
                              f"{cfg.model_type}")
    ours = {k: tuple(v.shape) for k, v in model_state(model).items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in ckpt["model"].items()}
    if ours != theirs:
        name = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))[0]
        raise CheckpointError(f"{path}: the checkpoint's model has a different shape than the config ({name}: "
                              f"checkpoint {theirs.get(name, 'absent')}, config {ours.get(name, 'absent')}); use the "
                              f"checkpoint's dim/depth/num_heads/ff_mult/memory settings, or omit --config to "
                              f"continue with its own")


def restore(run: _Run, ckpt: dict[str, Any], resume: Any) -> None:
    """Load a checkpoint `ckpt` read from `resume` (written by `checkpoint_payload`) into `run` (weights,
    optimisers, slow level, scaler, EMA, meta-learner, step, RNG states)."""
    check_resumable(ckpt, checkpoint_config(ckpt, resume), run.model, run.cfg, resume)
    try:
        if run.sharded:
            load_full_model_state(run.model, ckpt["model"])
        else:
            run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        if run.slow_optimizer is not None:
            if not ckpt.get("slow_optimizer"):
                raise ValueError("it has no slow-level optimiser (was update_frequencies.optimizer_step 1?)")
            run.slow_optimizer.load_state_dict(ckpt["slow_optimizer"])
            for name, saved in (ckpt.get("slow_grads") or {}).items():
                run.slow_grads[name].copy_(shard_like(saved, run.slow_grads[name]))
            run.slow_count = torch.tensor(int(ckpt.get("slow_count") or 0), device=run.device)
        for opt in (run.optimizer, run.slow_optimizer):
            if opt is not None and run.sharded:
                shard_optimizer_state(opt)
        if run.use_scaler and ckpt.get("scaler"):
            run.scaler.load_state_dict(ckpt["scaler"])
        if run.ema.enabled and ckpt.get("ema"):
            run.ema.load_state_dict(ckpt["ema"])
        if run.meta is not None and ckpt.get("meta"):
            run.meta.load_state_dict(ckpt["meta"])
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        why = " ".join(str(exc).strip().splitlines()[:1])[:200]
        raise CheckpointError(f"{resume}: cannot continue this checkpoint with this config (optimizer_type or "
                              f"update_frequencies.optimizer_step changed?): {why}") from None
    device_resident(run)  # a checkpoint's optimiser groups say capturable=False: set it again
    run.start_step = int(ckpt["step"])
    run.saved_rng = ckpt.get("rng")
    run.saved_streams = ckpt.get("stream")


def checkpoint_payload(run: _Run, step: int) -> dict[str, Any] | None:
    """What a resumable checkpoint at `step` holds (rank 0, when saving; None elsewhere): the keys are listed in
    hope.checkpoint. Collective under torchrun."""
    if not run.save:
        return None
    streams = run.batches.state_dict(step) if run.batches is not None else None  # collective under torchrun
    cfg, model = run.cfg, run.model
    has_slow = run.slow_optimizer is not None
    state = {"ema": run.ema.state_dict() if run.ema.enabled else None, "optimizer": run.optimizer.state_dict(),
             "slow_optimizer": run.slow_optimizer.state_dict() if has_slow else None,
             "slow_grads": dict(run.slow_grads) if has_slow else None}
    if run.sharded:  # gathered on every rank (collectives), kept on rank 0: the single-process format
        full = {"model": full_model_state(model), **(gather_full(state, keep=run.info.is_main) or {})}
    if not run.info.is_main:
        return None
    if not run.sharded:
        full = {"model": model_state(model), **state}
    payload = {"model_type": cfg.model_type, "config": config_to_dict(cfg), **full, "slow_count": int(run.slow_count),
               "scaler": run.scaler.state_dict() if run.use_scaler else None, "step": step, "rng": rng_state(),
               "meta": run.meta.state_dict() if run.meta is not None else None, "stream": streams,
               "params": model.num_params()}
    return payload
