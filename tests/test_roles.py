"""Parameter roles (hope.layers.roles): each group is what docs/architecture.md, "Parameter roles", says, for both
models and every memory variant, and renaming a module carries its roles along."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hope.config import Config, UpdateFrequencies, validate
from hope.layers.roles import META, NO_DECAY, OWN_INIT, RESIDUAL_OUT, SLOW, parameter_roles, with_role
from hope.models import build_model
from hope.train.loop import split_slow_params
from hope.train.optim import build_optimizer

BASE = Config(dim=16, depth=2, num_heads=2, seq_len=16, max_len=16, attn_window=8, memory_capacity=4, top_k=2,
              update_frequencies=UpdateFrequencies(mem_write=8, error_update=8, optimizer_step=2))


def names(cfg: Config, role: str) -> set[str]:
    validate(cfg)
    torch.manual_seed(0)
    return {n for n, _ in with_role(build_model(cfg), role)}


def per_block(depth: int, *locals_: str) -> set[str]:
    return {f"blocks.{i}.{n}" for i in range(depth) for n in locals_}


@pytest.mark.parametrize("memory_kind, self_modifying, cms", [
    ("linear", True, "chain"), ("mlp", True, "chain"), ("linear", False, "chain"), ("linear", True, "mlp")])
def test_hope_roles(memory_kind, self_modifying, cms):
    cfg = dataclasses.replace(BASE, memory_kind=memory_kind, self_modifying=self_modifying, cms=cms)
    priors = ("smt.prior_w",) if memory_kind == "linear" else ("smt.prior_w1", "smt.prior_w2")
    rates = ("smt.kv_rate_logit",) if self_modifying else ()
    fast_cms = ("cms.prior_w1", "cms.prior_w2", "cms.eta_logit") if cms == "chain" else ()
    assert names(cfg, META) == per_block(2, *priors, "smt.gates.bias", *rates, *fast_cms)
    assert names(cfg, NO_DECAY) == per_block(2, *priors, "smt.gates.weight", "smt.gates.bias", *rates,
                                             "bank.write_score.weight", "bank.write_score.bias",
                                             *(p for p in fast_cms if "prior" in p))
    assert names(cfg, SLOW) == per_block(2, "cms.slow.up.weight", "cms.slow.down.weight")
    assert names(cfg, RESIDUAL_OUT) == per_block(2, "attn.proj.weight", "smt.proj.weight", "cms.slow.down.weight")
    assert names(cfg, OWN_INIT) == per_block(2, "smt.q_proj.weight", "smt.gates.weight", "smt.gates.bias",
                                             "bank.out.weight")


def test_baseline_roles():
    cfg = dataclasses.replace(BASE, model_type="baseline")
    assert names(cfg, META) == names(cfg, NO_DECAY) == names(cfg, SLOW) == names(cfg, OWN_INIT) == set()
    assert names(cfg, RESIDUAL_OUT) == per_block(2, "attn.proj.weight", "mlp.down.weight")


def test_roles_reach_the_optimiser_the_slow_level_and_the_init():
    """The loop's groups follow the roles: no decay on priors and gates, the slow level in its own optimiser; the
    layers' own inits survive the model's (the bank's output at 0, W_q the identity)."""
    validate(BASE)
    torch.manual_seed(0)
    model = build_model(BASE)
    roles = parameter_roles(model)
    main, slow = split_slow_params(model, BASE)
    assert {n for n, _ in slow} == {n for n, r in roles.items() if SLOW in r}
    no_decay = {n for n, r in roles.items() if NO_DECAY in r}
    opt = build_optimizer(main, "adamw", 1e-3, 0.9, 0.1, no_decay=no_decay)
    decayed = {n for g in opt.param_groups if g["weight_decay"] > 0 for n in g["param_names"]}
    assert decayed and not decayed & no_decay and "blocks.0.smt.gates.weight" not in decayed
    assert "blocks.0.attn.qkv.weight" in decayed
    block = model.blocks[0]
    assert torch.equal(block.bank.out.weight, torch.zeros_like(block.bank.out.weight))
    assert torch.equal(block.smt.q_proj.weight, torch.eye(BASE.dim))


def test_renaming_a_module_carries_its_roles():
    """Roles come from the layer, not from a name: the same layer under another attribute name keeps them."""
    validate(BASE)
    model = build_model(BASE)
    block = model.blocks[0]
    block.memory = block.smt  # the same module reachable under a second name
    del block.smt
    roles = parameter_roles(model)
    assert META in roles["blocks.0.memory.gates.bias"] and "blocks.0.smt.gates.bias" not in roles
