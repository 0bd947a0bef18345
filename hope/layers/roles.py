"""Parameter roles: each layer says what its own parameters are (docs/architecture.md, "Parameter roles").

A layer lists roles of its parameters in a class attribute ``PARAM_ROLES`` (name inside the layer -> roles), and
:func:`parameter_roles` collects them over a model's module tree under the modules' own names. The training loop
(the slow level), the optimiser groups (no weight decay), meta-learning (meta-parameters) and the initialisation
read this one map, so renaming a module carries its parameters' roles along instead of silently changing how they
train (the alternative, matching name fragments in each of those places, breaks on a rename without a word).
"""

from __future__ import annotations

from torch import nn

SLOW = "slow"  # the CMS slow level: its own optimiser, stepped every update_frequencies.optimizer_step steps
META = "meta"  # a fast memory's initial state or rate: what the meta-learning outer loop updates
NO_DECAY = "no_decay"  # no weight decay even as a matrix (priors, gates: decay would pull them to zero)
RESIDUAL_OUT = "residual_out"  # a residual branch's output projection: GPT-2's scaled init
OWN_INIT = "own_init"  # initialised by its layer; the model's default init leaves it alone
ROLES = (SLOW, META, NO_DECAY, RESIDUAL_OUT, OWN_INIT)


def parameter_roles(model: nn.Module) -> dict[str, frozenset[str]]:
    """``{parameter name: roles}`` for every parameter of `model` some layer declares a role for (names as
    `model.named_parameters()` gives them; roles of parameters a configuration does not build are dropped)."""
    present = {name for name, _ in model.named_parameters()}
    roles: dict[str, frozenset[str]] = {}
    for prefix, module in model.named_modules():
        for local, declared in getattr(type(module), "PARAM_ROLES", {}).items():
            name = f"{prefix}.{local}" if prefix else local
            if name in present:
                roles[name] = roles.get(name, frozenset()) | frozenset(declared)
    return roles


def with_role(model: nn.Module, role: str) -> list[tuple[str, nn.Parameter]]:
    """`model`'s named parameters that have `role`, in `named_parameters()` order."""
    if role not in ROLES:
        raise ValueError(f"unknown parameter role {role!r}; roles: {', '.join(ROLES)}")
    roles = parameter_roles(model)
    return [(n, p) for n, p in model.named_parameters() if role in roles.get(n, ())]
