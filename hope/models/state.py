"""Generic helpers for a model's carried state, treated as an opaque pytree.

`model(idx, targets, state=state) -> (logits, loss, state)` returns whatever its layers carry (`LMState`:
an int position and per block a `BlockState` NamedTuple of the KV-cache dict, `SMTState`, `BankState` and `CMSState`
for HOPE, a KV-cache dict for the baseline). The training loop carries it across
optimiser steps (`stream.use`, truncated backpropagation through time) and saves it in checkpoints, so it needs
three operations that never look inside: detach every tensor, flatten to leaves a `torch.load(weights_only=True)`
can read, and rebuild from those leaves. `torch.utils._pytree` flattens dicts, lists, tuples, NamedTuples and
None; a dataclass state needs registering first (`torch.utils._pytree.register_dataclass`), or its instances
become single opaque leaves that `state_to_checkpoint` refuses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

_PLAIN = (int, float, bool, type(None))  # non-tensor leaves a weights_only load accepts


def detach_state(state: Any) -> Any:
    """The same pytree with every tensor detached: later steps read it but backpropagate no further."""
    return pytree.tree_map(lambda leaf: leaf.detach() if isinstance(leaf, torch.Tensor) else leaf, state)


def state_to_checkpoint(state: Any) -> list[Any]:
    """The state's leaves in pytree order (detached tensors and Python numbers/None): a plain list that
    `torch.load(weights_only=True)` reads. Raises TypeError for a leaf of another type (e.g. an unregistered
    dataclass), which would be pickled as code."""
    leaves = pytree.tree_leaves(state)
    for leaf in leaves:
        if not isinstance(leaf, (torch.Tensor, *_PLAIN)):
            raise TypeError(f"state leaf of type {type(leaf).__name__} cannot be saved safely; register its type "
                            "with torch.utils._pytree")
    return [leaf.detach().clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]


def state_from_checkpoint(template: Any, leaves: list[Any]) -> Any:
    """Rebuild a state from `state_to_checkpoint` leaves, in the structure of `template` (e.g. a fresh
    `model.init_state(batch)`: tensor shapes and dtypes may differ, the structure, the kind and the number of
    dimensions of each leaf may not).
    Tensors land on the template's device. Raises ValueError when the leaves do not fit the structure."""
    slots, spec = pytree.tree_flatten(template)
    if len(slots) != len(leaves):
        raise ValueError(f"the saved state has {len(leaves)} leaves, the model's state {len(slots)}")
    rebuilt = []
    for i, (slot, leaf) in enumerate(zip(slots, leaves)):
        if isinstance(slot, torch.Tensor) != isinstance(leaf, torch.Tensor):
            raise ValueError(f"state leaf {i}: saved a {type(leaf).__name__}, the model carries a "
                             f"{type(slot).__name__}")
        if isinstance(slot, torch.Tensor):
            if slot.ndim != leaf.ndim:  # (dtypes may differ: a state written under autocast)
                raise ValueError(f"state leaf {i}: saved with {leaf.ndim} dims, the model carries {slot.ndim}")
            leaf = leaf.to(slot.device)
        rebuilt.append(leaf)
    return pytree.tree_unflatten(rebuilt, spec)
