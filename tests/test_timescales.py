"""Timescale heads and sparse writes (docs/architecture.md, "Timescale heads and sparse writes"): the bounds' known
values, the overwriting law they rest on, and the config switches end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hope.config import Config, ConfigError, validate
from hope.layers.smt import timescale_bounds
from hope.models import build_model


def test_bounds_known_values():
    floor, cap = timescale_bounds((0.0, 64.0, 4096.0), head_dim=32)
    assert floor[0] == 0 and cap[0] == 1  # a free head
    # retention floor: a half-life of exactly T bytes
    assert floor[1] ** 64 == pytest.approx(0.5) and floor[2] ** 4096 == pytest.approx(0.5, rel=1e-4)
    # rate ceiling d ln2 / T (capped at 1)
    assert cap[1] == pytest.approx(32 * math.log(2) / 64) and cap[2] == pytest.approx(32 * math.log(2) / 4096)
    assert timescale_bounds((8.0,), head_dim=32)[1] == 1  # d ln2 / 8 > 1


def test_overwriting_law():
    """The ceiling's premise: delta-rule writes at rate eta with random unit keys in d dims halve an association
    stored along another random key after ~d ln2 / eta writes (the mean over many memories)."""
    g = torch.Generator().manual_seed(0)
    d, eta, trials = 32, 0.2, 400
    writes = round(d * math.log(2) / eta)
    k0, v0 = (F.normalize(torch.randn(trials, d, generator=g), dim=-1) for _ in range(2))
    mem = v0[:, :, None] * k0[:, None, :]  # (trials, d, d): v0 k0^T stored
    for _ in range(writes):
        k, v = (F.normalize(torch.randn(trials, d, generator=g), dim=-1) for _ in range(2))
        mem = mem + eta * (v - (mem @ k[..., None])[..., 0])[..., None] * k[:, None, :]
    kept = ((mem @ k0[..., None])[..., 0] * v0).sum(-1).mean()
    assert kept == pytest.approx(0.5, abs=0.06)
    # at a tenth of the rate the same number of writes keeps most of it
    assert (1 - eta / 10 / d) ** writes > 0.9


def test_config_switches_build_and_validate():
    cfg = Config(dim=32, num_heads=4, depth=1, seq_len=16, max_len=16, memory_timescales=[0, 64, 512, 4096],
                 write_threshold=1.0)
    validate(cfg)
    smt = build_model(cfg).blocks[0].smt
    assert smt.rate_cap.tolist()[0] == 1 and smt.retention_floor[3] ** 4096 == pytest.approx(0.5, rel=1e-4)
    assert smt.write_threshold == 1.0
    assert "retention_floor" not in build_model(cfg).state_dict().keys()  # derived from the config, not saved
    for bad, message in (({"memory_timescales": [0, 64]}, "one entry per head"),
                         ({"memory_timescales": [0, 64, -1, 8]}, "bytes >= 0"),
                         ({"write_threshold": 3.5}, "write_threshold")):
        with pytest.raises(ConfigError, match=message):
            validate(Config(dim=32, num_heads=4, **bad))


def test_timescale_head_keeps_a_planted_pair_longer():
    """Store and retrieve: a model whose heads all have a 4096-byte timescale keeps more of what it wrote over 512
    bytes of other text than the same model with free heads (whose rate starts at 0.5 and retention at 1)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 576, 32, generator=g)
    kept = {}
    for name, scales in (("free", []), ("slow", [4096.0] * 4)):
        torch.manual_seed(0)
        smt = build_model(Config(dim=32, num_heads=4, depth=1, seq_len=64, max_len=64,
                                 memory_timescales=scales)).blocks[0].smt.eval()
        with torch.no_grad():
            state = smt.init_state(1, x.device)
            _, _, state = smt(x[:, :64], state, 0, 1.0, 1.0)
            planted = state.change.clone()
            _, _, later = smt(x[:, 64:], state, 0, 1.0, 1.0)
        kept[name] = F.cosine_similarity(planted.flatten(), later.change.flatten(), dim=0).item()
    assert kept["slow"] > 0.9 > kept["free"]
