"""FSDP2 (`distributed: fsdp`): shard the model, and move full (unsharded) state in and out of it.

`shard_model` applies `torch.distributed.fsdp.fully_shard` to every block, then to the root (the embedding, the
tied head and the final norm form the root's group), as PyTorch's FSDP2 docs recommend: a block's parameters are
all-gathered just before its forward and backward and resharded after, so a rank holds one block in full at a
time. Every parameter becomes a DTensor sharded along dim 0; its gradient and optimiser state are sharded alike.
Except the scalar (0-dim) parameters (the bank's temperature and null logit, the fast CMS level's step size),
which fully_shard refuses ("doesn't support scalar parameters"): they stay plain, replicated tensors, kept equal
across ranks as DDP would, by averaging their gradients (`average_gradients`) before every optimiser step. Making
them 1-element vectors instead would change the checkpoint format of every model.

Checkpoints stay the single-process format (hope.checkpoint): the model's full state dict comes from
`get_model_state_dict(full_state_dict=True, cpu_offload=True)`; the optimisers, the EMA and the slow level's
gradient sums are gathered here tensor by tensor (`gather_full`). The optimiser is not gathered with
`get_optimizer_state_dict`: that one keys the state by parameter name (not the integer ids `Optimizer.state_dict`
writes) and, for an optimiser that has not stepped yet (the slow CMS level before its first period ends), first
runs a zero-gradient step to create its state, which would change the resumed run. Loading goes the other way:
full tensors in, each rank keeps its shard (`shard_like`, no communication: every rank read the checkpoint).

Every function that gathers is a collective: all ranks call it, in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # a PyTorch built without torch.distributed: nothing is ever sharded
    class DTensor:  # type: ignore[no-redef]  (no instance exists, so every isinstance check is False)
        pass


def shard_model(model: nn.Module) -> list[nn.Parameter]:
    """fully_shard each block, then the root, in place (FSDP2 swaps the parameters for DTensors); returns the
    scalar parameters it leaves replicated (their gradients need `average_gradients`).

    Build optimisers, EMA shadows and gradient buffers after this: they must hold the sharded parameters."""
    from torch.distributed.fsdp import fully_shard

    scalars = [p for p in model.parameters() if p.dim() == 0]
    for block in model.blocks:
        fully_shard(block, ignored_params=set(scalars))
    fully_shard(model, ignored_params=set(scalars))
    return scalars


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Average the gradients of replicated `params` over the ranks, in one all-reduce (each divided first, then
    summed, as DDP does). Collective; parameters without a gradient (on every rank alike) are left out."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.stack([g.reshape(()) for g in grads]) / world_size
    dist.all_reduce(flat)
    for g, mean in zip(grads, flat):
        g.copy_(mean)


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a plain tensor as it is): for checks that are all-reduced afterwards."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value as a plain tensor (a gather for a sharded one; none for a replicated one, such as
    the global gradient norm `clip_grad_norm_` returns); a plain tensor as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `like`: this rank's shard when `like` is a DTensor (cut locally: every rank holds the
    same `full`), else `full` on `like`'s device."""
    if isinstance(like, DTensor):
        return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
    return full.to(like.device)


def gather_full(tree: Any, keep: bool = True) -> Any:
    """`tree` (nested dicts/lists/tuples, e.g. an optimiser state dict) with every DTensor gathered to its full
    value on the CPU; other leaves as they are. Collective. With `keep=False` (ranks that do not save) the
    gathered tensors are dropped as they come and None is returned."""
    def walk(node: Any) -> Any:
        if isinstance(node, DTensor):
            full = node.full_tensor()
            return full.cpu() if keep else None
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    out = walk(tree)
    return out if keep else None


def full_model_state(model: nn.Module, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """The model's full state dict on the CPU, keyed as `model.state_dict()`: on rank 0 only (others get {}),
    or on every rank with `all_ranks`. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (every rank holds it) into the sharded `model`; strict, like `load_state_dict`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


@torch.no_grad()
def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict(full)`: cut every per-parameter state tensor shaped like its (DTensor)
    parameter to this rank's shard (scalars such as AdamW's step count stay as they are)."""
    state = optimizer.state
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, DTensor) or p not in state:
                continue
            slots = state[p]
            for key, value in slots.items():
                if (isinstance(value, torch.Tensor) and not isinstance(value, DTensor) and value.dim() > 0
                        and value.shape == p.shape):
                    slots[key] = shard_like(value, p)
