"""On a CUDA GPU: the chunked memory equals the per-token reference in float64, a HOPE model's forward and backward
equal the CPU's in float64, and the float32 fast-weight path's error against float64 is measured with TF32 off and
on (training turns TF32 on for CUDA, hope.runtime.allow_tf32) and stated.

Marked `cuda` (`python -m pytest -q -m cuda`, which scripts/gpu_check.sh runs) and skipped without a GPU. They are
also in the default suite, where they skip on a CPU-only machine.
"""

from __future__ import annotations

import copy

import pytest
import torch

from hope.ops.memory import memory_chunked, memory_reference
from test_memory_ops import _make as make_memory_inputs
from test_memory_ops import _run as run_memory
from test_models import leaves, random_bytes, tiny_model

pytestmark = pytest.mark.cuda

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
KINDS = ("linear", "mlp")


@pytest.fixture
def device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device("cuda")


@pytest.fixture
def no_tf32():
    """TF32 off for the test (float64 never uses it; the float32 case sets it itself); restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def memory_inputs(kind: str, device: torch.device, *, T: int = 37, d: int = 6, h: int = 8, dtype: torch.dtype = DT
                  ) -> dict:
    """`test_memory_ops`'s random memory inputs (gates exactly 0 or 1 at a few positions), made in float64 on the
    CPU (the same numbers on every device and dtype), then moved to `device` as `dtype`."""
    move = lambda x: x.to(device, dtype)  # noqa: E731
    return {name: tuple(map(move, x)) if isinstance(x, tuple) else move(x)
            for name, x in make_memory_inputs(kind, T=T, d=d, h=h).items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
def test_chunked_equals_per_token_on_gpu(device, no_tf32, kind, chunk_size):
    """Outputs, final state and the gradients of every input, the prior and the initial change (float64)."""
    inp = memory_inputs(kind, device)
    flat = [*inp["prior"], *(inp[n] for n in ("change", "k", "v", "q", "eta", "alpha"))]
    for x in flat:
        x.requires_grad_()
    results = []
    for fn, c in ((memory_reference, None), (memory_chunked, chunk_size)):
        o, d = run_memory(fn, inp, kind, c)
        w = torch.randn(o.shape, generator=torch.Generator().manual_seed(3), dtype=DT).to(device)
        loss = (o * w).sum() + d.pow(2).sum()
        results.append((o, d, torch.autograd.grad(loss, flat)))
    (o_ref, d_ref, g_ref), (o, d, g) = results
    assert o.device.type == device.type
    torch.testing.assert_close(o, o_ref, **TOL)
    torch.testing.assert_close(d, d_ref, **TOL)
    for a, b in zip(g, g_ref):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_gpu_memory_equals_cpu_memory(device, no_tf32, kind):
    cpu = run_memory(memory_chunked, memory_inputs(kind, torch.device("cpu")), kind, 16)
    gpu = run_memory(memory_chunked, memory_inputs(kind, device), kind, 16)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, **TOL)


def fp32_error(kind: str, device: torch.device, tf32: bool) -> float:
    """Max abs error of the float32 chunked memory (a training-sized head: d 32, T 256, chunk 16) against the
    float64 reference, relative to the reference's max abs output."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        ref, _ = run_memory(memory_reference, memory_inputs(kind, device, T=256, d=32, h=64), kind)
        o, _ = run_memory(memory_chunked, memory_inputs(kind, device, T=256, d=32, h=64, dtype=torch.float32), kind, 16)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return ((o.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_fast_weight_error_is_stated(device, kind):
    """The fast weights stay float32 under autocast; training allows TF32 on CUDA. This states the relative error
    of the float32 chunked memory against float64 with TF32 off and on (printed: run pytest with -s to see it;
    scripts/gpu_check.sh does) and bounds it: float32 rounding without TF32, TF32's 10-bit mantissa with it."""
    off, on = fp32_error(kind, device, False), fp32_error(kind, device, True)
    print(f"\nfp32 fast-weight error ({kind}, rel. to max |o|, T 256, chunk 16): tf32 off {off:.2e}, tf32 on {on:.2e}")
    assert off < 1e-5
    assert on < 3e-2


@pytest.mark.parametrize("overrides", [{}, {"memory_kind": "mlp"}], ids=["hope", "hope-mlp-memory"])
def test_hope_forward_backward_on_gpu_equals_cpu(device, no_tf32, overrides):
    """A randomised tiny HOPE model (every component on; 40 bytes: streaming segments, block-local attention, bank
    writes), float64, training mode: logits, the final state and every parameter's gradient agree to 1e-9."""
    cpu_model = tiny_model("hope", **overrides).train()
    gpu_model = copy.deepcopy(cpu_model).to(device)
    idx = random_bytes(2, 40)
    w = torch.randn(2, 40, 256, generator=torch.Generator().manual_seed(1), dtype=DT)
    outs = []
    for model, dev in ((cpu_model, torch.device("cpu")), (gpu_model, device)):
        logits, _, state = model(idx.to(dev))
        (logits * w.to(dev)).sum().backward()  # a float64 loss (the model's own loss is taken in float32)
        outs.append((logits, state, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (l_cpu, s_cpu, g_cpu), (l_gpu, s_gpu, g_gpu) = outs
    tol = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(l_gpu.cpu(), l_cpu, **tol)
    assert g_gpu.keys() == g_cpu.keys() and len(g_cpu) > 10
    for name, grad in g_cpu.items():
        torch.testing.assert_close(g_gpu[name].cpu(), grad, **tol, msg=lambda m, name=name: f"{name}: {m}")
    (paths_cpu, leaves_cpu), (paths_gpu, leaves_gpu) = (zip(*leaves(s)) for s in (s_cpu, s_gpu))
    assert paths_gpu == paths_cpu
    for path, a, b in zip(paths_cpu, leaves_gpu, leaves_cpu):
        if isinstance(b, torch.Tensor):
            torch.testing.assert_close(a.detach().cpu(), b.detach(), **tol, msg=lambda m, path=path: f"{path}: {m}")
        else:
            assert a == b, path
