"""Exponential moving average of the model's weights, used for evaluation and saved alongside (``ema_decay``).

After each optimiser step, ``shadow <- decay * shadow + (1 - decay) * weight`` for every parameter, in float32
whatever the parameter's dtype (a bf16 shadow would round away updates smaller than its 8-bit mantissa resolves).
Buffers (normalisation statistics, caches) are not averaged: the shadow keeps a copy of their latest value.

Under FSDP (`distributed: fsdp`) the model's parameters are sharded DTensors and so are their shadows: every
update is elementwise on each rank's shard. `state_dict` then holds DTensors (the training loop gathers them for
the checkpoint, hope.train.sharding) and `load_state_dict` takes full tensors and keeps each rank's shard.

``decay = 0`` disables the EMA (README.md, "Configuration"): no shadow is kept, ``update`` and ``copy_to`` do nothing and
``swapped_in`` yields the live weights unchanged, so evaluation "with EMA" is evaluation of the live weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from hope.train.sharding import shard_like


def saved_buffers(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The buffers a state_dict saves: non-persistent ones (the schedules of `LanguageModel`) belong to the run,
    not to the weights, so the EMA neither averages nor restores them."""
    for prefix, mod in module.named_modules():
        for name, buf in mod._buffers.items():
            if buf is not None and name not in mod._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buf


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DistributedDataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers,
    so parameter names are the same however the model is wrapped."""
    while True:
        if isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


class EMA:
    """Float32 shadow copies of a model's parameters, averaged by :meth:`update`.

    Usage: ``ema = EMA(model, cfg.ema_decay)``; ``ema.update(model)`` after every optimiser step;
    ``with ema.swapped_in(model): evaluate(model)``; save ``ema.state_dict()`` in the checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self._num_updates = 0
        self._pending: Tensor | None = None  # updates counted on the device (`update(..., ok=)`) not yet read
        self.shadow: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        if self.enabled:
            base = unwrap(model)
            with torch.no_grad():
                self.shadow = {n: p.detach().float().clone() for n, p in base.named_parameters()}
                self.buffers = {n: b.detach().clone() for n, b in saved_buffers(base)}

    @property
    def enabled(self) -> bool:
        return self.decay > 0.0

    @property
    def num_updates(self) -> int:
        """Updates applied so far (reads the device counter of `update(..., ok=)`: call at log/save time)."""
        if self._pending is not None:
            self._num_updates += int(self._pending)
            self._pending = None
        return self._num_updates

    @num_updates.setter
    def num_updates(self, value: int) -> None:
        self._num_updates, self._pending = int(value), None

    @torch.no_grad()
    def update(self, model: nn.Module, ok: Tensor | None = None) -> None:
        """``shadow <- decay * shadow + (1 - decay) * weight``; buffers copied. No-op when disabled.

        ``ok`` (a 0-dim bool tensor) gates the update on the device without reading it: where it is False the
        shadow and buffers keep their values bit for bit and the update is not counted (a skipped step)."""
        if not self.enabled:
            return
        if ok is not None:
            self._gated_update(unwrap(model), ok)
            return
        base = unwrap(model)
        names, shadows, weights = [], [], []
        for n, p in base.named_parameters():
            names.append(n)
            shadows.append(self._get(self.shadow, n))
            weights.append(p.detach().float())
        # two foreach passes rather than lerp_, so the result is exactly d * old + (1 - d) * new as documented
        torch._foreach_mul_(shadows, self.decay)
        torch._foreach_add_(shadows, torch._foreach_mul(weights, 1.0 - self.decay))
        for n, b in saved_buffers(base):
            self._get(self.buffers, n).copy_(b)
        self.num_updates += 1

    def _gated_update(self, base: nn.Module, ok: Tensor) -> None:
        for n, p in base.named_parameters():
            shadow = self._get(self.shadow, n)
            new = shadow * self.decay + p.detach().float() * (1.0 - self.decay)  # the same two roundings as update
            shadow.copy_(torch.where(ok, new, shadow))
        for n, b in saved_buffers(base):
            saved = self._get(self.buffers, n)
            saved.copy_(torch.where(ok, b, saved))
        counted = ok.to(torch.int64)
        self._pending = counted if self._pending is None else self._pending + counted

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters (cast to their dtype) and buffers with the shadow. No-op when disabled."""
        if not self.enabled:
            return
        base = unwrap(model)
        for n, p in base.named_parameters():
            p.copy_(self._get(self.shadow, n))
        for n, b in saved_buffers(base):
            b.copy_(self._get(self.buffers, n))

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run the block with the EMA weights in ``model``, then put the originals back bit for bit.

        The originals are kept as clones for the duration (one extra copy of the weights). Yields ``model``.
        """
        if not self.enabled:
            yield model
            return
        base = unwrap(model)
        with torch.no_grad():
            saved_params = {n: p.detach().clone() for n, p in base.named_parameters()}
            kept_buffers = {n: b.detach().clone() for n, b in saved_buffers(base)}
        self.copy_to(base)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in base.named_parameters():
                    p.copy_(saved_params[n])
                for n, b in saved_buffers(base):
                    b.copy_(kept_buffers[n])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": dict(self.shadow), "buffers": dict(self.buffers)}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved EMA into this one (built for the same model); tensors are copied onto its devices.

        The averages and ``num_updates`` come from the checkpoint; ``decay`` stays the constructor's, so a resumed
        run follows its own config.
        """
        if self.enabled != bool(state_dict["shadow"]):
            raise ValueError(f"cannot load a {'disabled' if self.enabled else 'enabled'} saved EMA into "
                             f"{'an enabled' if self.enabled else 'a disabled'} one (ema_decay 0 disables it)")
        if not self.enabled:
            return
        for kind, ours in (("shadow", self.shadow), ("buffers", self.buffers)):
            theirs = state_dict[kind]
            if set(theirs) != set(ours):
                missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
                raise ValueError(f"EMA {kind} names do not match the model: missing {missing[:5]}, "
                                 f"unexpected {extra[:5]}")
            for n, t in theirs.items():
                ours[n].copy_(shard_like(t, ours[n]))  # a full tensor: cut to this rank's shard under FSDP
        self.num_updates = int(state_dict["num_updates"])

    @staticmethod
    def _get(table: dict[str, Tensor], name: str) -> Tensor:
        try:
            return table[name]
        except KeyError:
            raise KeyError(f"EMA has no entry for {name!r}: was the model changed after the EMA was built?") from None
