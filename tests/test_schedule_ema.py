"""Schedules at their documented points, and the weight EMA: exact update, bit-identical swap, state round-trip."""

from __future__ import annotations

import io

import pytest
import torch
import torch.distributed as dist
from torch import nn

from hope.config import Schedule
from hope.train.ema import EMA, unwrap
from hope.train.schedule import lr_at, ramp

BASE, MIN, WARMUP, TOTAL = 1e-3, 1e-4, 10, 110


def test_lr_warmup_values() -> None:
    assert lr_at(0, BASE, WARMUP, TOTAL, MIN) == BASE / WARMUP  # step 0 already trains
    assert lr_at(4, BASE, WARMUP, TOTAL, MIN) == pytest.approx(BASE * 5 / WARMUP)
    assert lr_at(WARMUP - 1, BASE, WARMUP, TOTAL, MIN) == BASE  # end of warmup
    assert lr_at(WARMUP, BASE, WARMUP, TOTAL, MIN) == BASE  # cosine phase 0


def test_lr_cosine_midpoint_and_end() -> None:
    mid = WARMUP + (TOTAL - WARMUP) // 2
    assert lr_at(mid, BASE, WARMUP, TOTAL, MIN) == pytest.approx((BASE + MIN) / 2, rel=1e-12)
    assert lr_at(TOTAL, BASE, WARMUP, TOTAL, MIN) == MIN
    assert lr_at(TOTAL + 50, BASE, WARMUP, TOTAL, MIN) == MIN
    decay = [lr_at(s, BASE, WARMUP, TOTAL, MIN) for s in range(WARMUP, TOTAL + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))  # strictly decreasing from base to min


def test_lr_edge_cases() -> None:
    assert lr_at(0, BASE, 0, TOTAL, MIN) == BASE  # no warmup: cosine from step 0
    assert lr_at(WARMUP, BASE, WARMUP, WARMUP, MIN) == MIN  # no decay phase
    with pytest.raises(ValueError):
        lr_at(0, BASE, 20, 10, MIN)


def test_ramp() -> None:
    assert ramp(0, 0.0, 1.0, 100) == 0.0
    assert ramp(25, 0.0, 1.0, 100) == 0.25
    assert ramp(100, 0.0, 1.0, 100) == 1.0
    assert ramp(1000, 0.2, 0.8, 100) == 0.8
    assert ramp(0, 0.2, 0.8, 0) == 0.8  # warmup 0: end from the first step
    for step in (0, 3, 7, 10, 50):  # one rule for the config's Schedule and the train loop
        assert ramp(step, 0.5, 2.0, 10) == Schedule(0.5, 2.0, 10).at(step)


# ----------------------------------------------------------------------------- EMA


def _model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).to(dtype)


@torch.no_grad()
def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g).to(p.dtype))
    model.train()
    model(torch.randn(16, 4, generator=g).to(next(model.parameters()).dtype))  # moves BatchNorm running stats


def test_one_update_is_exact() -> None:
    model, d = _model(), 0.9
    ema = EMA(model, d)
    old = {n: t.clone() for n, t in ema.shadow.items()}
    _perturb(model, 1)
    ema.update(model)
    for n, p in model.named_parameters():
        assert torch.equal(ema.shadow[n], d * old[n] + (1 - d) * p.detach())
    for n, b in model.named_buffers():
        assert torch.equal(ema.buffers[n], b)  # buffers copied, not averaged
    assert ema.num_updates == 1


def test_update_gated_on_the_device() -> None:
    """`update(model, ok)`: ok True is the plain update bit for bit, ok False leaves shadow, buffers and the count
    alone (a skipped training step), without reading `ok` on the host."""
    model, d = _model(), 0.9
    plain, gated = EMA(model, d), EMA(model, d)
    _perturb(model, 1)
    plain.update(model)
    gated.update(model, torch.tensor(True))
    assert all(torch.equal(plain.shadow[n], gated.shadow[n]) for n in plain.shadow)
    before = {n: t.clone() for n, t in gated.shadow.items()}
    buffers = {n: t.clone() for n, t in gated.buffers.items()}
    _perturb(model, 2)
    gated.update(model, torch.tensor(False))
    assert all(torch.equal(before[n], gated.shadow[n]) for n in before)
    assert all(torch.equal(buffers[n], gated.buffers[n]) for n in buffers)
    assert gated.num_updates == 1 and gated.state_dict()["num_updates"] == 1


def test_shadow_is_float32_for_low_precision_params() -> None:
    model = _model(torch.bfloat16)
    ema = EMA(model, 0.99)
    _perturb(model, 1)
    ema.update(model)
    assert all(t.dtype == torch.float32 for t in ema.shadow.values())


def test_swapped_in_uses_shadow_and_restores_bit_identically() -> None:
    model = _model()
    ema = EMA(model, 0.5)
    _perturb(model, 1)
    ema.update(model)
    _perturb(model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swapped_in(model) as m:
        assert m is model
        for n, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[n])
        for n, b in model.named_buffers():
            assert torch.equal(b, ema.buffers[n])
        with torch.no_grad():  # whatever the block does to the weights is undone too
            next(model.parameters()).mul_(0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_swapped_in_restores_after_an_exception() -> None:
    model = _model()
    ema = EMA(model, 0.5)
    _perturb(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        with ema.swapped_in(model):
            raise RuntimeError("evaluation failed")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_state_dict_round_trip() -> None:
    model = _model()
    ema = EMA(model, 0.8)
    for seed in range(3):
        _perturb(model, seed)
        ema.update(model)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    restored = EMA(_model(), 0.8)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert restored.num_updates == 3
    _perturb(model, 9)
    ema.update(model)
    restored.update(model)
    for n in ema.shadow:
        assert torch.equal(ema.shadow[n], restored.shadow[n])
    with pytest.raises(ValueError):
        EMA(nn.Linear(2, 2), 0.8).load_state_dict(ema.state_dict())  # another model


def test_decay_zero_disables() -> None:
    model = _model()
    ema = EMA(model, 0.0)
    assert not ema.enabled and ema.shadow == {}
    _perturb(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema.update(model)
    ema.copy_to(model)
    with ema.swapped_in(model):
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # live weights
    EMA(model, 0.0).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError):
        EMA(model, 0.5).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError):
        EMA(model, 1.0)


def test_works_through_distributed_data_parallel(tmp_path) -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this session")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        assert unwrap(ddp) is model
        ema = EMA(ddp, 0.5)
        assert set(ema.shadow) == {n for n, _ in model.named_parameters()}  # no "module." prefix
        _perturb(model, 1)
        ema.update(ddp)
        plain = EMA(_model(), 0.5)
        plain.update(model)
        assert all(torch.equal(ema.shadow[n], plain.shadow[n]) for n in ema.shadow)
        with ema.swapped_in(ddp):
            assert torch.equal(model[0].weight, ema.shadow["0.weight"])
    finally:
        dist.destroy_process_group()
