"""`distributed: fsdp` under `torchrun --nproc_per_node=2` on the CPU (gloo): FSDP2 trains as DDP does (both
models; bit for bit without gradient clipping, to float32 rounding with it), its checkpoint is the single-process
format (loads with weights_only=True into a plain model), and it resumes exactly, from its own checkpoint and from
a DDP one.

Each run exercises what touches the model outside forward: two micro-batches per step (FSDP's no-sync), EMA of
the weights, evaluation (EMA swapped in), gradient clipping (on by default: every step clips here) and, for HOPE,
its scalar parameters (left replicated by fully_shard) and the slow CMS level stepping every 3 optimiser steps on
its accumulated gradients (so a checkpoint at step 2 holds a half-full period and a slow optimiser that has not
stepped yet). The global gradient norm is the one thing FSDP sums in another order (per shard, then across
ranks), so with clipping the runs differ in the last bits, which Adam amplifies in near-zero gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_PROBE

from hope.checkpoint import load_model
from hope.config import ConfigError, load_config
from hope.data.corpus import synthetic_corpus

FLAGS = ["--seq_len", "32", "--batch_size", "2", "--steps", "4", "--device", "cpu", "--set", "dim=32",
         "--set", "depth=2", "--set", "num_heads=2", "--set", "max_len=32", "--set", "attn_window=16",
         "--set", "memory_capacity=8", "--set", "top_k=2", "--set", "eval_batches=2", "--set", "warmup_steps=1",
         "--set", "log_interval=1", "--set", "eval_interval=2", "--set", "grad_accum_steps=2",
         "--set", "ema_decay=0.5", "--set", "update_frequencies.optimizer_step=3", "--set", "lr=0.01"]
FSDP = ["--set", "distributed=fsdp"]
NO_CLIP = ["--set", "grad_clip_norm=0"]


class Runs:
    """Two-process training runs of one model type, each launched once and shared by the tests below."""

    def __init__(self, root: Path, torchrun, model_type: str):
        self.root, self.torchrun, self.model_type = root, torchrun, model_type
        self.data = root / "text.txt"
        self.data.write_bytes(bytes(synthetic_corpus(20_000, seed=7).tolist()))
        self.probe = root / "probe.py"
        self.probe.write_text(TRAIN_PROBE)
        self.done: dict[str, dict] = {}

    def ckpt(self, tag: str) -> Path:
        return self.root / tag / "ck.pt"

    def get(self, tag: str, *extra: str, stop_at: int = 0) -> dict:
        """Rank 0's {losses, weights, val} of run `tag` (ranks 0 and 1 must agree), launched on first use."""
        if tag not in self.done:
            proc = self.torchrun(self.probe, self.root, "--model_type", self.model_type, *FLAGS, "--data", self.data,
                                 *extra, env={"HOPE_TEST_TAG": tag, "HOPE_TEST_STOP_AT": str(stop_at)})
            if stop_at:
                assert proc.returncode != 0 and "interrupted by SIGINT" in proc.stdout + proc.stderr, proc.stderr[-3000:]
                self.done[tag] = {}
            else:
                assert proc.returncode == 0, proc.stderr[-3000:]
                r0, r1 = (json.loads((self.root / f"{tag}{r}.json").read_text()) for r in (0, 1))
                assert r0 == r1  # identical (all-reduced) losses and metrics, identical full weights on every rank
                self.done[tag] = r0
        return self.done[tag]


@pytest.fixture(scope="module")
def hope_runs(tmp_path_factory, torchrun):
    return Runs(tmp_path_factory.mktemp("hope"), torchrun, "hope")


@pytest.fixture(scope="module")
def baseline_runs(tmp_path_factory, torchrun):
    return Runs(tmp_path_factory.mktemp("baseline"), torchrun, "baseline")


def close(a: list[float], b: list[float], rel: float) -> bool:
    return a == pytest.approx(b, rel=rel, abs=1e-7)


@pytest.mark.parametrize("model_type", ["hope", "baseline"])
def test_fsdp_trains_like_ddp(model_type, hope_runs, baseline_runs):
    runs = hope_runs if model_type == "hope" else baseline_runs
    exact = runs.get("fsdp_noclip", "--out", runs.ckpt("fsdp_noclip"), *FSDP, *NO_CLIP)
    assert exact == runs.get("ddp_noclip", "--out", runs.ckpt("ddp_noclip"), *NO_CLIP)  # losses, weights, val
    ddp = runs.get("ddp", "--out", runs.ckpt("ddp"))
    fsdp = runs.get("fsdp", "--out", runs.ckpt("fsdp"), *FSDP)
    assert len(fsdp["losses"]) == 4 and close(fsdp["losses"], ddp["losses"], rel=1e-6)
    assert close(list(fsdp["val"].values()), list(ddp["val"].values()), rel=1e-5)
    assert fsdp["losses"] != exact["losses"]  # clipping changed the run

    # The checkpoint is the single-process format: the same keys, tensor shapes, dtypes and values as DDP's.
    a, b = (torch.load(runs.ckpt(tag), weights_only=True) for tag in ("fsdp_noclip", "ddp_noclip"))
    flat = lambda tree: {k: v for k, v in _leaves(tree)}  # noqa: E731
    for key in ("model", "ema", "optimizer", "slow_optimizer", "slow_grads"):
        fa, fb = flat(a[key]), flat(b[key])
        assert fa.keys() == fb.keys(), key
        for name, value in fa.items():
            if isinstance(value, torch.Tensor):
                assert value.shape == fb[name].shape and value.dtype == fb[name].dtype, (key, name)
                assert torch.equal(value, fb[name]), (key, name)
            else:
                assert value == fb[name], (key, name)
    assert a["step"] == b["step"] == 4 and a["slow_count"] == b["slow_count"]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{prefix}/{i}")
    else:
        yield prefix, tree


def test_fsdp_checkpoint_loads_in_one_process_and_resumes_exactly(hope_runs):
    """Stopped after step 2 (mid-period of the slow level) and resumed under FSDP: the continued run equals the
    uninterrupted one bit for bit; the checkpoint loads (weights_only) into a plain single-process model."""
    runs = hope_runs
    whole = runs.get("fsdp", "--out", runs.ckpt("fsdp"), *FSDP)
    split = runs.ckpt("fsdp_split")
    runs.get("fsdp_stop", "--out", split, *FSDP, stop_at=1)
    ckpt = torch.load(split, weights_only=True)
    assert ckpt["step"] == 2 and ckpt["slow_count"] == 2 and ckpt["slow_optimizer"]["state"] == {}
    assert any(g.abs().sum() > 0 for g in ckpt["slow_grads"].values())
    model, cfg, _ = load_model(split)  # one process, no process group
    assert cfg.distributed == "fsdp" and model.state_dict().keys() == ckpt["model"].keys()
    logits, loss, _ = model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    assert torch.isfinite(loss)

    rest = runs.get("fsdp_rest", "--out", split, "--resume", split, *FSDP)
    assert rest["losses"] == whole["losses"][2:]
    assert rest["weights"] == whole["weights"] and rest["val"] == whole["val"]


def test_ddp_checkpoint_resumes_under_fsdp(hope_runs):
    """A DDP checkpoint continued under FSDP equals it continued under DDP, bit for bit (without clipping: see the
    module docstring). Both end within float32 rounding of the uninterrupted run, not on it: HOPE's resume under
    DDP alone already differs there in the last bits for this config (found while writing this test, not
    investigated here)."""
    runs = hope_runs
    whole = runs.get("ddp_noclip", "--out", runs.ckpt("ddp_noclip"), *NO_CLIP)
    split = runs.ckpt("ddp_split")
    runs.get("ddp_stop", "--out", split, *NO_CLIP, stop_at=1)
    as_fsdp = runs.get("ddp_to_fsdp", "--out", runs.ckpt("ddp_to_fsdp"), "--resume", split, *FSDP)
    as_ddp = runs.get("ddp_to_ddp", "--out", runs.ckpt("ddp_to_ddp"), "--resume", split)
    assert as_fsdp == as_ddp
    assert close(as_fsdp["losses"], whole["losses"][2:], rel=1e-5)


@pytest.mark.parametrize("override, words", [
    ({"distributed": "zero3"}, ["distributed must be one of ddp, fsdp", "'zero3'"]),
    ({"distributed": "fsdp", "optimizer_type": "muon"}, ["distributed: fsdp", "muon", "Newton-Schulz"]),
    ({"distributed": "fsdp", "cms_objective": "task"}, ["distributed: fsdp", "cms_objective: task"]),
    ({"distributed": "fsdp", "meta": {"use": True}}, ["distributed: fsdp", "meta.use"]),
    ({"distributed": "fsdp", "amp": True, "amp_dtype": "fp16"}, ["distributed: fsdp", "GradScaler"]),
])
def test_distributed_key_is_validated(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_fsdp_refusal_is_exit_status_2_without_traceback(capsys):
    from hope.cli.train import main

    assert main(["--set", "distributed=fsdp", "--set", "optimizer_type=m3", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "distributed: fsdp" in err and "Traceback" not in err
