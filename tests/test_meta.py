"""Meta-learning outer loop (architecture.md, "Meta-parameters"): what a meta-update may touch, where its data comes from,
and that its gradient really flows through the in-context adaptation. Tiny models (dim 32, depth 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hope.cli.meta_train import main
from hope.config import Config, Meta, UpdateFrequencies, validate
from hope.data.corpus import Corpus, synthetic_corpus
from hope.errors import HopeError
from hope.models import build_model
from hope.train.meta import (GAIN_KEYS, MetaLearner, adaptation_gain, hold_out_meta, meta_loss,
                             meta_parameters, sample_meta_pairs)


def tiny_config(**meta: object) -> Config:
    meta_kw = dict(use=True, inner_steps=1, outer_steps=1, outer_frequency=1, lr=1e-2, support_len=16, query_len=16)
    meta_kw.update(meta)
    cfg = Config(dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=8, memory_capacity=8, top_k=2,
                 batch_size=2, device="cpu",
                 update_frequencies=UpdateFrequencies(mem_write=4, error_update=8, optimizer_step=2), meta=Meta(**meta_kw))
    validate(cfg)
    return cfg


def tiny_model(cfg: Config) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # the fast CMS level starts silent; open it so its meta-parameters get gradients too
        for block in model.blocks:
            block.cms.fast_gain.fill_(1.0)
    return model


def marked_corpus() -> tuple[Corpus, torch.Tensor]:
    """20000 bytes: training text in lowercase, the future meta split (last 5% of train) in uppercase, validation
    in digits, so every byte tells which split it came from."""
    gen = torch.Generator().manual_seed(0)
    n, n_val = 20_000, 2_000
    n_meta = round((n - n_val) * 0.05)
    data = torch.cat([torch.randint(ord("a"), ord("z") + 1, (n - n_val - n_meta,), generator=gen),
                      torch.randint(ord("A"), ord("Z") + 1, (n_meta,), generator=gen),
                      torch.randint(ord("0"), ord("9") + 1, (n_val,), generator=gen)]).to(torch.uint8)
    return Corpus.from_bytes(data, "marked"), data


def record_inputs(model: torch.nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].clone()), with_kwargs=True)
    return seen, handle


def in_range(t: torch.Tensor, lo: str, hi: str) -> bool:
    return bool(((t >= ord(lo)) & (t <= ord(hi))).all())


# ----------------------------------------------------------------------------------------------- tests


def test_round_changes_meta_parameters_and_nothing_else():
    cfg = tiny_config(outer_steps=2)
    model = tiny_model(cfg)
    corpus = hold_out_meta(Corpus.from_bytes(synthetic_corpus(20_000), "synthetic"), cfg.meta.split)
    learner = MetaLearner(model, cfg, corpus, "cpu")
    meta_names = {n for n, _ in meta_parameters(model)}
    # the memories' initial states and rates (the SMT's linear prior, gate biases, k/v rates; the CMS fast level's)
    assert meta_names == {f"blocks.0.{s}" for s in ("smt.prior_w", "smt.gates.bias", "smt.kv_rate_logit",
                                                    "cms.prior_w1", "cms.prior_w2", "cms.eta_logit")}
    # Gradients the training loop may hold at this point (e.g. the slow CMS level's accumulation) must survive.
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    out = learner.round(1)
    assert set(GAIN_KEYS) <= out.keys() and all(torch.isfinite(torch.tensor(out[k])) for k in GAIN_KEYS)
    assert out["meta_skipped"] == 0
    assert out["meta_gain"] == pytest.approx(out["meta_query_loss_init"] - out["meta_query_loss_adapted"])
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == (name in meta_names), f"{name}: changed={changed}"
        assert torch.equal(p.grad, grads[name]), f"{name}: .grad was modified by the meta-update"
    assert model.training  # mode restored


def test_meta_pairs_come_from_the_meta_split_only():
    corpus, data = marked_corpus()
    split = hold_out_meta(corpus, 0.05)
    assert hold_out_meta(split, 0.05) is split  # idempotent
    assert torch.equal(torch.cat([split.train, split.meta]), corpus.train) and torch.equal(split.val, corpus.val)
    assert in_range(split.meta, "A", "Z") and in_range(split.train, "a", "z")  # no meta byte left in training data
    # The query is the segment that directly follows the support.
    positions = (torch.arange(500) % 256).to(torch.uint8)
    for index in range(50):
        s, qx, qy = sample_meta_pairs(positions, 4, 16, 8, seed=3, index=index)
        assert s.shape == (4, 16) and qx.shape == qy.shape == (4, 8)
        assert torch.equal(qx[:, 0], (s[:, -1] + 1) % 256) and torch.equal(qy, (qx + 1) % 256)
    # Every byte the model reads during meta rounds is a meta-split byte, never validation or training text.
    cfg = tiny_config(outer_steps=3, inner_steps=2)
    model = tiny_model(cfg)
    learner = MetaLearner(model, cfg, split, "cpu")
    seen, handle = record_inputs(model)
    try:
        for step in (1, 2):
            learner.round(step)
        assert len(seen) == 2 * 3 * (2 + 2)  # rounds x outer steps x (support passes + adapted + cold query)
        assert all(in_range(x, "A", "Z") for x in seen)
        seen.clear()
        adaptation_gain(model, split.val, cfg, n_pairs=3)  # evaluation reads validation text only
        assert seen and all(in_range(x, "0", "9") for x in seen)
    finally:
        handle.remove()


def test_zero_inner_steps_means_no_adaptation():
    cfg = tiny_config(inner_steps=0, outer_steps=2)
    model = tiny_model(cfg)
    corpus = hold_out_meta(Corpus.from_bytes(synthetic_corpus(20_000), "synthetic"), cfg.meta.split)
    out = MetaLearner(model, cfg, corpus, "cpu").round(1)
    assert out["meta_query_loss_adapted"] == out["meta_query_loss_init"] and out["meta_gain"] == 0.0
    gain = adaptation_gain(model, corpus.val, cfg, n_pairs=4)
    assert torch.equal(gain.loss_adapted, gain.loss_init) and gain.summary()["gain"] == 0.0


def test_query_gradient_reaches_initial_states_through_adaptation():
    cfg = tiny_config()
    model = tiny_model(cfg)
    data = synthetic_corpus(2_000)
    support, qx, qy = sample_meta_pairs(data, 2, 16, 16, seed=0, index=0)
    smt = model.blocks[0].smt
    adapted = torch.autograd.grad(meta_loss(model, support, qx, qy, inner_steps=2), [smt.prior_w])
    cold = torch.autograd.grad(meta_loss(model, support, qx, qy, inner_steps=0), [smt.prior_w])
    for g, g0 in zip(adapted, cold):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        assert not torch.allclose(g, g0)  # the support writes are part of the gradient's path


def test_plain_corpus_warns_and_short_meta_split_fails():
    cfg = tiny_config()
    corpus = Corpus.from_bytes(synthetic_corpus(20_000), "synthetic")
    with pytest.warns(UserWarning, match="meta split"):
        MetaLearner(tiny_model(cfg), cfg, corpus, "cpu")
    with pytest.raises(HopeError, match="meta split has"):
        MetaLearner(tiny_model(cfg), cfg, hold_out_meta(Corpus.from_bytes(synthetic_corpus(400), "tiny"), 0.05), "cpu")


TINY_YAML = """\
dim: 32
depth: 1
num_heads: 2
max_len: 32
seq_len: 32
attn_window: 8
memory_capacity: 8
top_k: 2
batch_size: 2
steps: 2
warmup_steps: 1
log_interval: 1
eval_interval: 100
eval_batches: 1
device: cpu
update_frequencies: {mem_write: 4, error_update: 8, optimizer_step: 2}
meta: {outer_frequency: 1, support_len: 16, query_len: 16, lr: 0.01}
"""


def test_cli_end_to_end_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    data = tmp_path / "data.txt"
    data.write_bytes(bytes(synthetic_corpus(12_000).tolist()))
    out_dir = tmp_path / "reports"
    argv = ["--config", str(config), "--data", str(data), "--out", str(tmp_path / "ckpt.pt"),
            "--out_dir", str(out_dir), "--eval_pairs", "2"]
    assert main(argv) == 0
    metrics = json.loads((out_dir / "meta_metrics.json").read_text())
    assert set(metrics["models"]) == {"init", "plain", "meta"}
    for m in metrics["models"].values():
        assert m["pairs"] == 2 and m["gain"] == pytest.approx(m["query_loss_init"] - m["query_loss_adapted"])
    assert metrics["config"]["meta"]["use"] is True and metrics["comparison"]["before"] == "plain"
    assert [r["step"] for r in metrics["rounds"]] == [1, 2]
    report = (out_dir / "meta_report.md").read_text()
    assert "hope-meta-train --config" in report and "trained with meta-learning" in report
    assert (tmp_path / "ckpt.pt").is_file()
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) == {"init", "plain", "meta"}


def test_baseline_is_a_one_line_error(capsys: pytest.CaptureFixture):
    assert main(["--model_type", "baseline", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HOPE" in err
