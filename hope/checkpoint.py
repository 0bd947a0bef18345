"""Checkpoints: atomic save, safe load (`weights_only=True`), and model + config round-trip.

A checkpoint is a plain dict of tensors and Python primitives, so `torch.load(weights_only=True)` can read it
and a checkpoint from a stranger cannot run code. Keys:
  format, model_type, config (resolved config as a dict), model (state_dict), ema (state_dict or None),
  optimizer, slow_optimizer / slow_grads / slow_count (the slow CMS level's optimiser and the gradients summed
  so far in its period), scaler, step, rng, meta, stream (with `stream.use`: per rank and micro-batch slot, the
  stream's cycle, offsets and carried model state as a list of pytree leaves; else None), and free-form extras
  (e.g. params).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from hope.atomic import atomic_open
from hope.config import Config, ConfigError, config_from_dict, config_to_dict
from hope.errors import HopeError
from hope.runs import resolve_data

FORMAT = "hope-checkpoint-v1"


class CheckpointError(HopeError):
    """A missing, corrupt or mismatched checkpoint."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically (`hope.atomic`: temp file in the same directory, fsync, rename over the target), with the
    mode a plain `open()` would give it (0644 under umask 022), not mkstemp's 0600, so a teammate can read it."""
    payload = {"format": FORMAT, **payload}
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`; every failure becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train one with hope-train, or pass --ckpt PATH)")
    try:
        with warnings.catch_warnings():  # junk input makes torch warn about pickle protocols: the error says enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch.load of arbitrary bytes can raise nearly anything)
        if "Unsupported global" in str(exc):  # a class or function reference: code the file would run
            why = "it contains Python objects that safe (weights_only) loading refuses to run"
        else:
            why = "the file is corrupt, truncated or not a PyTorch checkpoint"
        raise CheckpointError(f"cannot read checkpoint {path}: {why}") from None
    if (not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or not isinstance(ckpt.get("model"), dict)
            or not isinstance(ckpt.get("config"), dict)):
        raise CheckpointError(f"{path} is not a hope checkpoint (expected format '{FORMAT}')")
    return ckpt


def stored_config(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's config dict, its data path made usable from here (`hope.runs.resolve_data`: stored
    absolute; older relative paths are looked up beside the checkpoint, then in the current folder)."""
    config = dict(ckpt["config"])
    if isinstance(config.get("data"), str):
        config["data"] = resolve_data(config["data"], path)
    return config


def checkpoint_config(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The checkpoint's resolved Config (data path as in `stored_config`)."""
    try:
        return config_from_dict(stored_config(ckpt, path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: stored config is invalid: {exc}") from None


# Config keys that size only the carried state, not any parameter: a trained model can be evaluated with other values.
STATE_SIZE_KEYS = ("memory_capacity",)


def load_model(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True,
               state_sizes: dict[str, int] | None = None):
    """Checkpoint -> (model in eval mode on `device`, its Config, the raw checkpoint dict).

    Uses the EMA weights when the checkpoint has them (they are what evaluation is meant to see), and sets the
    `surprise_scale`/`mem_write` schedules to their values at the checkpoint's step, as training evaluated it.
    `state_sizes` replaces keys of STATE_SIZE_KEYS (e.g. a larger episodic bank than the model trained with).
    """
    from hope.models import build_model  # models sit below checkpoint users, not below this module's import

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    if state_sizes:
        unknown = sorted(set(state_sizes) - set(STATE_SIZE_KEYS))
        if unknown:
            raise CheckpointError(f"only {', '.join(STATE_SIZE_KEYS)} can change after training, not {', '.join(unknown)}")
        cfg = config_from_dict({**config_to_dict(cfg), **state_sizes})
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
        ema = ckpt.get("ema") if use_ema else None
        if ema and ema.get("shadow"):  # EMA shadows are fp32 copies of the parameters, by name
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(ema["shadow"][name])
                for name, buf in model.named_buffers():
                    if name in (ema.get("buffers") or {}):
                        buf.copy_(ema["buffers"][name])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match its config ({' '.join(first[:2])[:200]})") from None
    step = ckpt.get("step")
    if isinstance(step, int) and hasattr(model, "set_schedules"):
        model.set_schedules(cfg.mem_write.at(step), cfg.surprise_scale.at(step))
    return model.to(device).eval(), cfg, ckpt


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict of the underlying model (unwraps DDP and torch.compile)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return inner.state_dict()


__all__ = ["CheckpointError", "STATE_SIZE_KEYS", "save_checkpoint", "load_checkpoint", "stored_config",
           "checkpoint_config", "load_model", "model_state", "config_to_dict"]
