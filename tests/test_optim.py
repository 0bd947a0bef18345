"""Outer optimisers: each trains, Muon/M3 route parameters as documented, state dicts resume bit-identically,
M3 follows Algorithm 1 of Nested Learning step by step, and Newton-Schulz orthogonalises."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from hope.train.optim import (
    M3,
    OPTIMIZER_TYPES,
    CombinedOptimizer,
    build_optimizer,
    is_embedding_or_head,
    newton_schulz,
    set_lr,
)

# (optimizer_type, lr, M3 variant): rates at which the small regression MLP below trains in 50 steps
CASES = [("adamw", 1e-2, "paper"), ("sgd", 5e-2, "paper"), ("muon", 1e-2, "paper"), ("m3", 3e-3, "paper"),
         ("m3", 3e-3, "ema")]
CASE_IDS = ["adamw", "sgd", "muon", "m3-paper", "m3-ema"]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(64, 8, generator=g)
    return x, torch.sin(x[:, :1] * x[:, 1:2]) + x[:, 2:3]


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> float:
    loss = torch.tensor(float("nan"))
    for step in steps:
        x, y = _batch(step)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def _build(model: nn.Module, kind: str, lr: float, variant: str) -> torch.optim.Optimizer:
    return build_optimizer(model.named_parameters(), kind, lr=lr, base_momentum=0.9, weight_decay=0.01,
                           m3_frequency=3, m3_variant=variant)


def _full_loss(model: nn.Module) -> float:
    x, y = _batch(-1)
    with torch.no_grad():
        return ((model(x) - y) ** 2).mean().item()


@pytest.mark.parametrize("kind,lr,variant", CASES, ids=CASE_IDS)
def test_each_optimizer_trains_a_small_mlp(kind: str, lr: float, variant: str) -> None:
    model = _mlp()
    opt = _build(model, kind, lr, variant)
    before = _full_loss(model)
    _train(model, opt, range(50))
    after = _full_loss(model)
    assert after < 0.5 * before, (kind, before, after)


@pytest.mark.parametrize("kind,lr,variant", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_continues_bit_identically(kind: str, lr: float, variant: str) -> None:
    model = _mlp()
    opt = _build(model, kind, lr, variant)
    _train(model, opt, range(5))
    buf = io.BytesIO()  # through torch.save/weights_only load, as a checkpoint would
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _train(model, opt, range(5, 10))

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = _mlp()
    fresh.load_state_dict(saved["model"])
    fresh_opt = _build(fresh, kind, lr, variant)
    fresh_opt.load_state_dict(saved["opt"])
    _train(fresh, fresh_opt, range(5, 10))

    for (name, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), f"{kind}: {name} differs after resuming"


class _TinyLM(nn.Module):
    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.tok_embed = nn.Embedding(16, 8)
        self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8, bias=False)])
        self.norm = nn.LayerNorm(8)
        self.gate = nn.Parameter(torch.zeros(()))
        self.lm_head = nn.Linear(8, 16, bias=False)
        if tied:
            self.lm_head.weight = self.tok_embed.weight


def _names(opt: torch.optim.Optimizer) -> list[str]:
    return [n for g in opt.param_groups for n in g["param_names"]]


@pytest.mark.parametrize("kind", ["muon", "m3"])
@pytest.mark.parametrize("tied", [False, True])
def test_matrix_optimizer_gets_hidden_matrices_only(kind: str, tied: bool) -> None:
    model = _TinyLM(tied)
    opt = build_optimizer(model.named_parameters(), kind, lr=1e-3, base_momentum=0.9, weight_decay=0.1)
    assert isinstance(opt, CombinedOptimizer)
    matrix_opt, adamw = opt.optimizers
    assert isinstance(matrix_opt, torch.optim.Muon if kind == "muon" else M3)
    assert isinstance(adamw, torch.optim.AdamW)
    assert _names(matrix_opt) == ["blocks.0.weight", "blocks.1.weight"]
    heads = [] if tied else ["lm_head.weight"]
    assert sorted(_names(adamw)) == sorted(["tok_embed.weight", "blocks.0.bias", "norm.weight", "norm.bias",
                                            "gate", *heads])
    # weight decay on every tensor with ndim >= 2 (embedding included), none on 1-D / 0-D
    for group in opt.param_groups:
        expect = 0.1 if all(p.ndim >= 2 for p in group["params"]) else 0.0
        assert group["weight_decay"] == expect and group["lr_scale"] == 1.0


def test_adamw_and_sgd_use_base_momentum_and_decay_grouping() -> None:
    model = _TinyLM(tied=False)
    adamw = build_optimizer(model.named_parameters(), "adamw", 1e-3, 0.8, 0.1, beta2=0.97)
    sgd = build_optimizer(model.named_parameters(), "sgd", 1e-3, 0.8, 0.1)
    assert all(g["betas"] == (0.8, 0.97) for g in adamw.param_groups)
    assert all(g["momentum"] == 0.8 and not g["nesterov"] for g in sgd.param_groups)
    for opt in (adamw, sgd):
        decayed = {n for g in opt.param_groups if g["weight_decay"] > 0 for n in g["param_names"]}
        assert decayed == {"tok_embed.weight", "blocks.0.weight", "blocks.1.weight", "lm_head.weight"}


def test_unknown_type_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="adamw, sgd, muon, m3"):
        build_optimizer(_mlp().named_parameters(), "lion", 1e-3, 0.9, 0.0)


def test_optimizer_types_match_config() -> None:
    from hope.config import OPTIMIZER_TYPES as CONFIG_TYPES

    assert OPTIMIZER_TYPES == CONFIG_TYPES


def test_embedding_or_head_names() -> None:
    for name in ("tok_embed.weight", "embedding.weight", "lm_head.weight", "transformer.wte.weight", "head.weight"):
        assert is_embedding_or_head(name), name
    for name in ("blocks.0.attn.heads.weight", "num_heads_proj.weight", "blocks.1.mlp.fc1.weight", "memory.w1"):
        assert not is_embedding_or_head(name), name


def test_combined_optimizer_behaves_like_one_optimizer() -> None:
    model = _TinyLM(tied=False)
    opt = build_optimizer(model.named_parameters(), "muon", lr=1e-3, base_momentum=0.9, weight_decay=0.0)
    set_lr(opt, 0.5)
    assert all(g["lr"] == 0.5 for o in opt.optimizers for g in o.param_groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1)  # torch schedulers accept it
    assert all(g["lr"] == pytest.approx(0.05) for o in opt.optimizers for g in o.param_groups)
    model.lm_head.weight.sum().backward()
    opt.step()
    sched.step()
    assert len(opt.state) == 1  # only lm_head had a gradient
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())
    opt.load_state_dict(opt.state_dict())  # children replace their group dicts on load: the view must follow
    set_lr(opt, 0.25)
    assert all(g["lr"] == 0.25 for o in opt.optimizers for g in o.param_groups)
    with pytest.raises(NotImplementedError):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))]})


# ----------------------------------------------------------------------------- M3 against Algorithm 1


def _algorithm1(theta0: torch.Tensor, grads: list[torch.Tensor], lr: float, betas: tuple[float, float, float],
                alpha: float, eps: float, f: int, variant: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Algorithm 1 written as printed: an outer loop over chunks k that first writes the slow memory from the
    previous chunk's gradients, an inner loop over the chunk's f steps. Returns the final weights and M2 as seen
    by each step. The "ema" variant swaps X + beta u for bias-corrected beta X + (1 - beta) u."""
    b1, b2, b3 = betas
    theta, m1, m2, v = theta0.clone(), torch.zeros_like(theta0), torch.zeros_like(theta0), torch.zeros_like(theta0)
    o2 = torch.zeros_like(theta0)
    seen_m2 = []
    for k in range(len(grads) // f):
        if k > 0:
            chunk = torch.stack(grads[(k - 1) * f: k * f]).sum(0)
            m2 = b3 * m2 + (1 - b3) * chunk if variant == "ema" else m2 + b3 * chunk
            o2 = newton_schulz(m2) if theta0.ndim == 2 else m2 / ((1 - b3**k) if variant == "ema" else 1.0)
        for t in range(k * f + 1, (k + 1) * f + 1):
            g = grads[t - 1]
            if variant == "ema":
                m1, v = b1 * m1 + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                c1, c2 = 1 - b1**t, 1 - b2**t
            else:
                m1, v = m1 + b1 * g, v + b2 * g * g
                c1 = c2 = 1.0
            o1 = newton_schulz(m1) if theta0.ndim == 2 else m1 / c1
            theta = theta - lr * (o1 + alpha * o2) / torch.sqrt(v / c2 + eps)
            seen_m2.append(m2.clone())
    return theta, seen_m2


@pytest.mark.parametrize("variant", ["paper", "ema"])
@pytest.mark.parametrize("shape", [(6, 4), (5,)], ids=["matrix", "vector"])
def test_m3_matches_algorithm_1(variant: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    f, steps, betas = 3, 12, (0.9, 0.99, 0.8)
    theta0 = torch.randn(shape)
    grads = [torch.randn(shape) for _ in range(steps)]
    expected, expected_m2 = _algorithm1(theta0, grads, 1e-2, betas, 0.5, 1e-8, f, variant)

    p = nn.Parameter(theta0.clone())
    opt = M3([p], lr=1e-2, betas=betas, alpha=0.5, eps=1e-8, frequency=f, variant=variant)
    slow = []
    for g in grads:
        slow.append(opt.state[p]["slow_momentum"].clone() if opt.state[p] else torch.zeros(shape))
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    for t, (ours, ref) in enumerate(zip(slow, expected_m2), start=1):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6, msg=f"M2 seen at step {t}")


def test_m3_slow_momentum_changes_only_every_frequency_steps() -> None:
    torch.manual_seed(0)
    f, beta3 = 4, 0.7
    p = nn.Parameter(torch.randn(5, 3))
    opt = M3([p], lr=1e-3, betas=(0.9, 0.99, beta3), frequency=f)
    grads = [torch.randn(5, 3) for _ in range(3 * f + 2)]
    for t, g in enumerate(grads, start=1):
        p.grad = g
        opt.step()
        m2 = opt.state[p]["slow_momentum"]
        done = (t // f) * f  # gradients of completed chunks: M2 = beta_3 * their sum (Algorithm 1, "paper")
        expected = beta3 * torch.stack(grads[:done]).sum(0) if done else torch.zeros_like(m2)
        torch.testing.assert_close(m2, expected)
        torch.testing.assert_close(opt.state[p]["slow_direction"],
                                   newton_schulz(expected) if done else torch.zeros_like(m2))
        assert opt.state[p]["chunk_grad_sum"].abs().sum() > 0 if t % f else opt.state[p]["chunk_grad_sum"].eq(0).all()


def test_m3_rejects_bad_hyperparameters() -> None:
    p = [nn.Parameter(torch.zeros(2, 2))]
    for kwargs in ({"frequency": 0}, {"betas": (1.0, 0.9, 0.9)}, {"variant": "adam"}, {"eps": 0.0}):
        with pytest.raises(ValueError):
            M3(p, **kwargs)


# ----------------------------------------------------------------------------- Newton-Schulz


@pytest.mark.parametrize("shape", [(64, 32), (32, 96)])
def test_newton_schulz_quintic_lands_singular_values_near_one(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    g = torch.randn(*shape) * 1e-3  # scale must not matter: the input is normalised first
    out = newton_schulz(g)
    assert out.shape == g.shape
    s = torch.linalg.svdvals(out)
    # the quintic coefficients trade exactness for speed: 5 steps leave singular values in about [0.7, 1.2]
    assert s.min() > 0.6 and s.max() < 1.25, (s.min().item(), s.max().item())


def test_newton_schulz_cubic_converges_to_polar_factor() -> None:
    torch.manual_seed(0)
    g = torch.randn(40, 24, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    out = newton_schulz(g, steps=60, coefficients=(1.5, -0.5, 0.0))
    torch.testing.assert_close(out, u @ vh, atol=1e-4, rtol=0)
    assert newton_schulz(g.bfloat16()).dtype == torch.bfloat16
    assert newton_schulz(torch.zeros(3, 4)).eq(0).all()
