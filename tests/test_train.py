"""The training loop `train(cfg)`: numerics (accumulation, clipping, schedules, EMA, nested level stepping, AMP,
optimisers, the non-finite guard), outputs (progress, metrics.jsonl, checkpoint) and exact resume.

Everything runs tiny models (dim 32, depth 1, seq_len 32, batch 2) for a handful of steps on the CPU.
"""

from __future__ import annotations

import json
import math
import traceback
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from torch.utils._python_dispatch import TorchDispatchMode

import hope.train.loop as loop
from hope.checkpoint import load_checkpoint
from hope.config import load_config
from hope.data.corpus import Corpus, synthetic_corpus
from hope.errors import HopeError
from hope.eval.lm import evaluate_lm
from hope.models import build_model
from hope.runtime import allow_tf32, resolve_device
from hope.train.loop import TrainingInterrupted, train
from hope.train.schedule import lr_at

TINY = dict(dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2, steps=3,
            log_interval=1, eval_interval=1000, eval_batches=2, memory_capacity=8, top_k=2, device="cpu",
            warmup_steps=1, update_frequencies={"mem_write": 8, "error_update": 8, "optimizer_step": 2})


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_bytes(synthetic_corpus(20_000, seed=3), name="tiny synthetic")


def tiny(tmp_path: Path, model_type: str = "baseline", **overrides) -> "loop.Config":
    return load_config(None, [dict(TINY, model_type=model_type, out=str(tmp_path / "ck.pt")), overrides])


def records(cfg) -> list[dict]:
    return [json.loads(line) for line in loop.metrics_path(cfg).read_text().splitlines()]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- outputs and seeding


def test_seeded_runs_are_identical_and_write_metrics_and_checkpoint(tmp_path, corpus):
    cfg = tiny(tmp_path / "a", steps=4, eval_interval=2, warmup_steps=2, lr=2e-3, min_lr=1e-4)
    first = train(cfg, corpus=corpus, verbose=False)
    second = train(tiny(tmp_path / "b", steps=4, eval_interval=2, warmup_steps=2, lr=2e-3, min_lr=1e-4),
                   corpus=corpus, verbose=False)
    assert first.losses == second.losses and len(first.losses) == 4
    assert all(math.isfinite(x) for x in first.losses)
    assert first.dist.is_main and first.step == 4

    recs = records(cfg)
    train_recs = [r for r in recs if r["split"] == "train" and "final" not in r]
    assert [r["step"] for r in train_recs] == [1, 2, 3, 4]
    for r in train_recs:  # the record of step s is about the step taken from s - 1: its rate is lr_at(s - 1)
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, 2e-3, 2, 4, 1e-4), rel=1e-12)
        assert {"step", "split", "tokens", "lr", "loss", "ppl", "accuracy", "top5_acc", "top10_acc", "grad_norm",
                "tokens_per_s"} <= r.keys()
        assert r["tokens"] == r["step"] * cfg.batch_size * cfg.seq_len
    assert [r["step"] for r in recs if r["split"] == "val" and "final" not in r] == [2]  # periodic, not at the end
    final_val, final_train = recs[-2:]  # one schema: flat records, split val then train, marked final
    assert final_val["final"] and final_train["final"] and final_val["step"] == final_train["step"] == 4
    assert (final_val["split"], final_train["split"]) == ("val", "train")
    for rec, metrics in ((final_val, first.val), (final_train, first.train)):
        assert {k: rec[k] for k in metrics if k != "tokens"} == {k: v for k, v in metrics.items() if k != "tokens"}
        assert rec["eval_tokens"] == metrics["tokens"] and rec["tokens"] == 4 * cfg.batch_size * cfg.seq_len
    assert {"loss", "ppl", "bpb", "accuracy", "top5_acc", "top10_acc"} <= final_val.keys()

    assert first.checkpoint == Path(cfg.out) and not list(Path(cfg.out).parent.glob(".*.tmp"))  # atomic: no leftovers
    ckpt = torch.load(cfg.out, weights_only=True)
    assert {"model", "ema", "optimizer", "scaler", "step", "rng", "config"} <= ckpt.keys()
    assert ckpt["step"] == 4 and ckpt["config"]["steps"] == 4 and ckpt["config"]["lr"] == 2e-3


def test_metrics_flags_off_remove_figures(tmp_path, corpus):
    cfg = tiny(tmp_path, steps=2, metrics={"track_ppl": False, "track_accuracy": False})
    result = train(cfg, corpus=corpus, verbose=False)
    for r in records(cfg):
        assert not {"ppl", "accuracy", "top5_acc", "top10_acc"} & r.keys()
    assert not {"ppl", "accuracy", "top5_acc", "top10_acc"} & result.val.keys()
    assert "loss" in result.val


def test_plain_log_lines_off_a_terminal_and_a_bar_on_one(tmp_path, corpus, capsys, monkeypatch):
    train(tiny(tmp_path / "plain", steps=2), corpus=corpus)
    out = capsys.readouterr().out
    assert "step 1/2 loss" in out and "step 2/2 loss" in out and "tok/s" in out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    train(tiny(tmp_path / "bar", steps=2), corpus=corpus)
    out = capsys.readouterr().out
    assert "train:" in out and "loss=" in out and "top10=" in out and "tok/s=" in out  # the tqdm bar's postfix
    assert "step 1/2 loss" not in out


def test_device_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(HopeError, match="no CUDA device"):
            resolve_device(name)
    with pytest.raises(HopeError, match="auto, cpu, cuda"):
        resolve_device("gpu")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


def test_tf32_is_allowed_for_cuda_only():
    """A CUDA device allows TF32 cuBLAS matmuls; a CPU device leaves every precision flag (oneDNN's too) alone."""
    matmul, saved = torch.backends.cuda.matmul, torch.backends.cuda.matmul.allow_tf32
    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        matmul.allow_tf32 = False
        assert allow_tf32(torch.device("cpu")) == torch.device("cpu")
        assert matmul.allow_tf32 is False
        allow_tf32(torch.device("cuda", 0))  # sets a flag only: runs on a build without CUDA too
        assert matmul.allow_tf32 is True
        assert torch.backends.mkldnn.matmul.fp32_precision == before
    finally:
        matmul.allow_tf32 = saved


# ----------------------------------------------------------------------------- numerics of one step


def _fixed_rows(steps: int, rows: int, seq_len: int) -> torch.Tensor:
    return torch.randint(0, 256, (steps, rows, seq_len + 1), generator=torch.Generator().manual_seed(5))


def test_grad_accum_equals_the_big_batch(tmp_path, corpus, monkeypatch):
    """accum 2 x batch 2 == accum 1 x batch 4 over the same rows (float64 baseline, SGD so the step is linear)."""
    rows = _fixed_rows(2, 4, 32)

    def fake_loader(data, batch_size, seq_len, seed, start, stop, **kwargs):
        per_step = 4 // batch_size
        for i in range(start, stop):
            chunk = rows[i // per_step, (i % per_step) * batch_size:(i % per_step + 1) * batch_size]
            yield chunk[:, :-1], chunk[:, 1:]

    monkeypatch.setattr(loop, "make_loader", fake_loader)
    results = []
    for batch, accum in ((4, 1), (2, 2)):
        cfg = tiny(tmp_path / f"b{batch}", steps=2, batch_size=batch, grad_accum_steps=accum, optimizer_type="sgd",
                   lr=0.5, min_lr=0.5, grad_clip_norm=0.0, weight_decay=0.0)
        torch.manual_seed(0)
        model = build_model(cfg).double()
        results.append(train(cfg, corpus=corpus, model=model, verbose=False, save=False, final_eval=False))
    big, small = results
    assert small.losses == pytest.approx(big.losses, rel=1e-6, abs=0)
    for (name, a), (_, b) in zip(big.model.named_parameters(), small.model.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=name)
    torch.manual_seed(0)
    init = build_model(cfg).double()
    moved = [(a - b).abs().max().item() for a, b in zip(big.model.parameters(), init.parameters())]
    assert max(moved) > 1e-3  # the steps were real, so the equality above is not vacuous


def test_grad_clip_norm_bounds_the_step(tmp_path, corpus):
    cfg = tiny(tmp_path, steps=1, optimizer_type="sgd", base_momentum=0.0, weight_decay=0.0, lr=0.1, min_lr=0.1,
               grad_clip_norm=1e-3)
    torch.manual_seed(0)
    model = build_model(cfg)
    before = snapshot(model)
    train(cfg, corpus=corpus, model=model, verbose=False, save=False, final_eval=False)
    step = torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters()])
    assert step.norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # |lr * clipped grad| = lr * max_norm


def test_schedules_are_applied_every_step(tmp_path, corpus):
    cfg = tiny(tmp_path, "hope", steps=5, mem_write={"start": 0.0, "end": 1.0, "warmup_steps": 4},
               surprise_scale={"start": 0.5, "end": 2.0, "warmup_steps": 2})
    model = build_model(cfg)
    seen = []
    forward = model.forward

    def recording(*args, **kwargs):
        if model.training:
            seen.append((model.mem_gate, model.surprise_scale))
        return forward(*args, **kwargs)

    model.forward = recording
    train(cfg, corpus=corpus, model=model, verbose=False, save=False, final_eval=False)
    assert seen == [(0.0, 0.5), (0.25, 1.25), (0.5, 2.0), (0.75, 2.0), (1.0, 2.0)]


def test_slow_cms_level_steps_every_n_optimizer_steps(tmp_path, corpus):
    cfg = tiny(tmp_path, "hope", steps=6, update_frequencies={"mem_write": 8, "error_update": 8, "optimizer_step": 3})
    torch.manual_seed(cfg.seed)  # the model is built before train() seeds: do not depend on earlier tests' RNG use
    model = build_model(cfg)
    snaps = [snapshot(model)]
    train(cfg, corpus=corpus, model=model, verbose=False, save=False, final_eval=False,
          on_step=lambda step, record: snaps.append(snapshot(model)))
    slow = [n for n in snaps[0] if ".cms.slow." in n]  # the CMS slow level's MLP (tests/test_roles.py)
    assert slow and len(slow) < len(snaps[0])
    for step in range(1, 7):
        changed = {n for n in snaps[0] if not torch.equal(snaps[step][n], snaps[step - 1][n])}
        if step % 3 == 0:
            assert set(slow) <= changed, step
        else:
            assert not set(slow) & changed, step
        if step > 1:  # (at step 1 the zero-initialised bank output still blocks the bank's gradients)
            assert set(snaps[0]) - set(slow) <= changed, step  # every other parameter moves every step


def test_ema_is_used_for_evaluation_and_saved(tmp_path, corpus):
    cfg = tiny(tmp_path, steps=3, ema_decay=0.5, lr=1e-2, min_lr=1e-2)
    result = train(cfg, corpus=corpus, verbose=False)
    ckpt = load_checkpoint(cfg.out)
    shadow = ckpt["ema"]["shadow"]
    assert ckpt["ema"]["num_updates"] == 3
    for name, p in result.model.named_parameters():  # the returned model holds the EMA weights...
        torch.testing.assert_close(p.detach(), shadow[name], rtol=0, atol=0)
    assert any(not torch.equal(ckpt["model"][n], shadow[n]) for n in shadow)  # ...which differ from the raw ones
    again = evaluate_lm(result.model, corpus.val, cfg.seq_len, cfg.batch_size, torch.device("cpu"),
                        max_windows=cfg.eval_batches * cfg.batch_size)
    assert again["loss"] == pytest.approx(result.val["loss"], rel=1e-6)


@pytest.mark.parametrize("model_type, amp_dtype", [("baseline", "bf16"), ("hope", "bf16"), ("baseline", "fp16")])
def test_autocast_on_cpu_trains(tmp_path, corpus, model_type, amp_dtype):
    cfg = tiny(tmp_path, model_type, steps=2, amp=True, amp_dtype=amp_dtype)
    result = train(cfg, corpus=corpus, verbose=False)
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)
    assert math.isfinite(result.val["loss"])
    assert next(result.model.parameters()).dtype == torch.float32  # autocast, not a half-precision model
    scaler = load_checkpoint(cfg.out)["scaler"]  # a GradScaler for fp16 on every device (fp16's range), never bf16
    assert (scaler is None) == (amp_dtype == "bf16") and (scaler is None or scaler["scale"] > 0)


def test_fp32_on_cpu_unless_asked(tmp_path, corpus):
    cfg = tiny(tmp_path, steps=1)
    model = build_model(cfg)
    seen = []
    forward = model.forward

    def recording(*args, **kwargs):
        logits, loss, state = forward(*args, **kwargs)
        seen.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        return logits, loss, state

    model.forward = recording
    train(cfg, corpus=corpus, model=model, verbose=False, save=False, final_eval=False)
    assert seen == [(False, torch.float32)]


@pytest.mark.parametrize("optimizer_type", ["adamw", "sgd", "muon", "m3"])
def test_every_optimizer_type_trains(tmp_path, corpus, optimizer_type):
    cfg = tiny(tmp_path, "hope", steps=2, optimizer_type=optimizer_type)
    result = train(cfg, corpus=corpus, verbose=False, final_eval=False)
    assert all(math.isfinite(x) for x in result.losses)
    ckpt = torch.load(cfg.out, weights_only=True)  # optimiser states of every kind load safely
    assert ckpt["optimizer"] and ckpt["slow_optimizer"]


def test_debug_anomaly_is_on_during_the_run_only(tmp_path, corpus):
    seen = []
    result = train(tiny(tmp_path, steps=1, debug_anomaly=True), corpus=corpus, verbose=False, save=False,
                   final_eval=False, on_step=lambda step, record: seen.append(torch.is_anomaly_enabled()))
    assert seen == [True] and math.isfinite(result.losses[0])
    assert not torch.is_anomaly_enabled()


# ----------------------------------------------------------------------------- non-finite guard


def _nan_at(model: torch.nn.Module, bad_calls: set[int] | None) -> None:
    """Make the training forward return a NaN loss at the given call numbers (None = always)."""
    forward, calls = model.forward, [0]

    def patched(*args, **kwargs):
        logits, loss, state = forward(*args, **kwargs)
        if model.training:
            calls[0] += 1
            if bad_calls is None or calls[0] in bad_calls:
                loss = loss * float("nan")
        return logits, loss, state

    model.forward = patched


def test_non_finite_steps_are_skipped_and_counted(tmp_path, corpus):
    cfg = tiny(tmp_path, steps=5, max_bad_steps=3)
    model = build_model(cfg)
    _nan_at(model, {2, 3})
    snaps = [snapshot(model)]
    result = train(cfg, corpus=corpus, model=model, verbose=False,
                   on_step=lambda step, record: snaps.append(snapshot(model)))
    assert result.skipped_steps == 2 and result.step == 5
    assert [math.isfinite(x) for x in result.losses] == [True, False, False, True, True]
    for step in (2, 3):  # skipped: the weights do not move
        assert all(torch.equal(snaps[step][n], snaps[step - 1][n]) for n in snaps[0])
    assert not all(torch.equal(snaps[4][n], snaps[3][n]) for n in snaps[0])
    assert math.isfinite(result.val["loss"])
    assert records(cfg)[-1]["skipped_steps"] == 2


def test_too_many_bad_steps_in_a_row_abort(tmp_path, corpus):
    cfg = tiny(tmp_path, steps=10, max_bad_steps=3)
    model = build_model(cfg)
    _nan_at(model, None)
    with pytest.raises(HopeError, match="3 non-finite steps in a row at step 3: training diverged"):
        train(cfg, corpus=corpus, model=model, verbose=False)


# ----------------------------------------------------------------------------- exact resume


def _interrupt_at(stop_step: int):
    def on_step(step: int, record: dict) -> None:
        if step == stop_step:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step


@pytest.mark.parametrize("model_type, overrides", [
    ("baseline", dict(num_workers=2, dropout=0.1, ema_decay=0.9, grad_accum_steps=2)),
    ("hope", dict(ema_decay=0.9, update_frequencies={"mem_write": 8, "error_update": 8, "optimizer_step": 4})),
], ids=["baseline-workers-dropout", "hope-slow-level-mid-period"])
def test_resume_continues_exactly(tmp_path, corpus, model_type, overrides):
    """6 steps == 3 steps, SIGINT, resume to 6: per-step losses, metrics records and final metrics alike."""
    whole_cfg = tiny(tmp_path / "whole", model_type, steps=6, warmup_steps=2, **overrides)
    whole = train(whole_cfg, corpus=corpus, verbose=False)
    cfg = tiny(tmp_path / "split", model_type, steps=6, warmup_steps=2, **overrides)
    with pytest.raises(TrainingInterrupted, match="interrupted by SIGINT at step 3/6") as info:
        train(cfg, corpus=corpus, verbose=False, on_step=_interrupt_at(3))
    assert info.value.signum == signal.SIGINT
    ckpt = load_checkpoint(cfg.out)
    assert ckpt["step"] == 3
    if model_type == "hope":  # the slow level is mid-period: its summed gradients travel in the checkpoint
        assert ckpt["slow_count"] == 3 and any(g.abs().sum() > 0 for g in ckpt["slow_grads"].values())
    rest = train(cfg, corpus=corpus, verbose=False, resume=cfg.out)
    assert whole.losses[:3] + rest.losses == whole.losses[:3] + whole.losses[3:]
    assert rest.losses == whole.losses[3:]
    assert rest.val == whole.val
    strip = [{k: v for k, v in r.items() if k not in ("tok/s", "tokens_per_s")} for r in records(whole_cfg)]
    assert strip == [{k: v for k, v in r.items() if k not in ("tok/s", "tokens_per_s")} for r in records(cfg)]
    for name, p in whole.model.named_parameters():
        assert torch.equal(p, dict(rest.model.named_parameters())[name]), name


@pytest.mark.slow
def test_compile_opt_in_trains(tmp_path, corpus):
    """`compile: true` (TorchInductor; minutes on a CPU) gives the eager losses up to kernel rounding."""
    eager = train(tiny(tmp_path / "eager", steps=2), corpus=corpus, verbose=False, final_eval=False)
    compiled = train(tiny(tmp_path / "compiled", steps=2, compile=True), corpus=corpus, verbose=False)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
    assert math.isfinite(compiled.val["loss"])
    assert not any(k.startswith("_orig_mod") for k in load_checkpoint(compiled.checkpoint)["model"])


# ----------------------------------------------------------------------------- no host reads between log steps

HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")
# aten ops that need a value (or a data-dependent size) on the host: what item()/bool() dispatch to, and the
# implicit ones (boolean-mask indexing -> nonzero, ...) that no Python method shows
SYNCING_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive",
                         "repeat_interleave", "equal", "is_nonzero", "allclose", "masked_scatter"})
# aten ops that turn host data into a tensor (torch.tensor(...), torch.as_tensor(float, device=...)): on a GPU a
# host-to-device copy, and a value a CUDA graph would freeze
HOST_DATA_OPS = frozenset({"lift_fresh", "lift_fresh_copy"})
HOPE_DIR = str(Path(loop.__file__).resolve().parent.parent)
DATA_DIR = str(Path(HOPE_DIR, "data"))


class _SyncingOps(TorchDispatchMode):
    def __init__(self, seen: list, step: list) -> None:
        super().__init__()
        self.seen, self.step = seen, step

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        masked = name in ("index", "index_put", "index_put_") and any(  # x[mask]: a nonzero inside the kernel
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ())
        if name in SYNCING_OPS or masked:
            self.seen.append((self.step[0], name))
        if name in HOST_DATA_OPS:  # torch.tensor(host data): a host-to-device copy inside the step, unless it is
            where = [f.filename for f in traceback.extract_stack() if f.filename.startswith(HOPE_DIR)]  # the batch
            if where and not where[-1].startswith(DATA_DIR):
                self.seen.append((self.step[0], name))
        return func(*args, **(kwargs or {}))


def _watch_host_reads(monkeypatch) -> tuple[list, list, list]:
    """Patch every way a tensor's value reaches Python; record (step, read, function, file:line) for each read
    made by `hope`'s own code (model included) at training step `step` outside the loop's read points
    (`_read_window`, `_log_step`, `_evaluate`, `_checkpoint`). Reads inside torch (e.g. AdamW reading its CPU
    step counter on a CPU run; on CUDA it is `capturable`, on the device) and by the input pipeline in
    `hope/data` (CPU tensors by construction, before the copy to the device) are not the loop's. Also records
    every syncing aten op (`SYNCING_OPS`) that the forward, backward and guard dispatch, torch's internals
    included."""
    reads, step, allowed, syncing = [], [0], [0], []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, __original=original, __name=name, **kwargs):
            caller = sys._getframe(1)
            where = caller.f_code.co_filename
            if step[0] and not allowed[0] and where.startswith(HOPE_DIR) and not where.startswith(DATA_DIR):
                reads.append((step[0], __name, caller.f_code.co_name, f"{Path(where).name}:{caller.f_lineno}"))
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    set_step_lr = loop._set_step_lr

    def at_step(run, s):
        step[0] = s + 1
        return set_step_lr(run, s)

    monkeypatch.setattr(loop, "_set_step_lr", at_step)
    for name in ("_accumulate_gradients", "_guard", "_apply_step"):
        def dispatched(*args, __fn=getattr(loop, name), **kwargs):
            with _SyncingOps(syncing, step):
                return __fn(*args, **kwargs)

        monkeypatch.setattr(loop, name, dispatched)
    for name in ("_read_window", "_log_step", "_evaluate", "_checkpoint"):
        def reading(*args, __fn=getattr(loop, name), **kwargs):
            allowed[0] += 1
            try:
                return __fn(*args, **kwargs)
            finally:
                allowed[0] -= 1

        monkeypatch.setattr(loop, name, reading)
    return reads, step, syncing


@pytest.mark.parametrize("model_type, overrides", [
    ("baseline", dict(ema_decay=0.9, grad_accum_steps=2, grad_clip_norm=1.0)),
    ("hope", dict(ema_decay=0.9, update_frequencies={"mem_write": 8, "error_update": 8, "optimizer_step": 2})),
    ("hope", dict(amp=True, amp_dtype="fp16", mem_write={"start": 0.2, "end": 1.0, "warmup_steps": 6},
                  surprise_scale={"start": 0.5, "end": 2.0, "warmup_steps": 6})),
], ids=["baseline-accum-clip", "hope-slow-level", "hope-fp16-scaler-ramping-schedules"])
def test_no_host_read_between_log_steps(tmp_path, corpus, monkeypatch, model_type, overrides):
    """A training step that is not a log step reads no tensor value on the host (`.item()`, `.tolist()`,
    `.cpu()`, `.numpy()`, `float()`/`int()`/`bool()` of a tensor) anywhere in hope's code, forward and backward
    of the model included, and makes no tensor from host data (the ramping schedules are device tensors set in
    place), so on a GPU the host queues step after step without waiting. No exception: fused AdamW skips a
    non-finite step inside its kernel, even the first, which creates its state (`_masked_step`). Steps 4 and 8
    are log steps: all reads happen there (and the losses still come back)."""
    cfg = tiny(tmp_path, model_type, steps=8, log_interval=4, eval_interval=1000, **overrides)
    reads, step, syncing = _watch_host_reads(monkeypatch)
    result = train(cfg, corpus=corpus, verbose=False)
    assert reads == []
    assert syncing == []  # forward, backward, guard and optimiser step: no host-dependent aten op at any step
    assert len(result.losses) == 8 and all(math.isfinite(x) for x in result.losses)
    assert [r["step"] for r in records(cfg) if r["split"] == "train" and not r.get("final")] == [4, 8]
