"""What a GPU run needs that a CPU fp32 run does not exercise: fp16 training (the GradScaler path) and resuming a
checkpoint written on another device (architecture.md, "Half precision")."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hope.train.loop as loop
from hope.config import load_config
from hope.data.corpus import Corpus, synthetic_corpus
from hope.layers.episodic import EpisodicBank
from hope.ops.norm import unit
from hope.train.loop import TrainingInterrupted, train


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_bytes(synthetic_corpus(20_000, seed=5), name="tiny synthetic")


def test_unit_of_a_zero_vector_is_zero_with_zero_gradient():
    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]], requires_grad=True)
    y = unit(x)
    assert torch.equal(y.detach(), torch.tensor([[0.0, 0.0, 0.0], [0.6, 0.0, 0.8]]))
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad[0], torch.zeros(3))  # F.normalize: 1e12 x the upstream gradient
    ref = torch.tensor([3.0, 0.0, 4.0], requires_grad=True)
    (F.normalize(ref, dim=-1) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad[1], ref.grad)


def test_fresh_stream_bank_keys_are_finite_with_finite_gradients_under_fp16():
    """A fresh stream's first write key is K(0) = 0. Under fp16 autocast and a GradScaler-sized loss scale its
    gradient used to overflow in the key projection's backward (inf x 0 = NaN in the weight gradient)."""
    torch.manual_seed(0)
    bank = EpisodicBank(dim=16, capacity=4, top_k=2, chunk=4, writes_per_chunk=4)  # every token written
    torch.nn.init.normal_(bank.out.weight, std=0.02)  # let the second chunk's read of the first reach the loss
    x = torch.randn(2, 8, 16, requires_grad=True)
    state = bank.init_state(2, torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.float16):
        out, new = bank(x, torch.zeros(2, 8), state, offset=0, mem_gate=1.0, surprise_scale=1.0)
        loss = out.float().pow(2).sum()
    assert torch.isfinite(new.keys).all()
    (loss * 65536.0).backward()  # GradScaler's initial scale
    for name, p in bank.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    assert torch.isfinite(x.grad).all()


def tiny(tmp_path: Path, **overrides):
    base = dict(model_type="hope", dim=32, depth=2, num_heads=2, seq_len=32, max_len=32, attn_window=16,
                batch_size=2, steps=4, log_interval=10, eval_interval=1000, eval_batches=2, memory_capacity=8,
                top_k=2, device="cpu", warmup_steps=1, out=str(tmp_path / "ck.pt"),
                update_frequencies={"mem_write": 8, "error_update": 8, "optimizer_step": 2})
    return load_config(None, [base, overrides])


def test_fp16_training_runs_50_steps_without_a_non_finite_step(tmp_path, corpus):
    """`--amp fp16` (autocast + GradScaler, on the CPU here as on a GPU) used to stop at step 11 with ten
    non-finite steps in a row."""
    cfg = tiny(tmp_path, steps=50, amp=True, amp_dtype="fp16", lr=3e-3, log_interval=25)
    result = train(cfg, corpus=corpus, verbose=False, final_eval=False, save=False)
    assert result.skipped_steps == 0
    assert len(result.losses) == 50 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.losses[-1] < result.losses[0]


def test_resume_loads_the_checkpoint_on_the_host(tmp_path, corpus, monkeypatch):
    """A checkpoint is loaded on the CPU whatever the training device (`map_location=device` put the saved RNG
    states on the GPU, where `torch.set_rng_state` raises), and the resumed run continues exactly."""
    whole = train(tiny(tmp_path / "whole", steps=4), corpus=corpus, verbose=False)
    cfg = tiny(tmp_path / "split", steps=4)

    def stop_at_2(step, record):
        if step == 2:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(cfg, corpus=corpus, verbose=False, on_step=stop_at_2)
    seen, real = [], loop.load_checkpoint

    def spy(path, map_location=None, **kwargs):
        seen.append(map_location)
        ckpt = real(path, map_location=map_location, **kwargs)
        ckpt["rng"]["torch"] = ckpt["rng"]["torch"].clone()  # what set_rng_state gets: a CPU byte tensor
        return ckpt

    monkeypatch.setattr(loop, "load_checkpoint", spy)
    rest = train(cfg, corpus=corpus, verbose=False, resume=cfg.out)
    assert seen == ["cpu"]
    assert rest.losses == whole.losses[2:]


def test_rng_state_restores_from_any_device_it_arrives_on():
    """`_set_rng_state` hands torch CPU tensors (`.cpu()`), whatever device the checkpoint's tensors were mapped
    to: a tensor that reports another device until moved stands in for a CUDA-mapped one."""
    moved = []

    class Elsewhere(torch.Tensor):
        def cpu(self, *args, **kwargs):
            moved.append(True)
            return self.as_subclass(torch.Tensor)

    state = loop._rng_state()
    expected = torch.rand(3)  # what the restored generator must draw next
    state["torch"] = state["torch"].as_subclass(Elsewhere)
    loop._set_rng_state(state)
    assert moved == [True]
    assert torch.equal(torch.rand(3), expected)
