"""Block-local sliding-window attention (hope.ops.attention) equals the dense-mask formula it replaced, in outputs
and gradients (float64), with and without a carried cache; the layer still streams exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hope.layers.attention import SlidingWindowAttention
from hope.ops.attention import sliding_window_attention


def dense_reference(q, k, v, window):
    """The old formula: one (T, L+T) boolean mask, causal and inside the window (the test oracle)."""
    T, past = q.shape[2], k.shape[2] - q.shape[2]
    qpos = torch.arange(past, past + T)[:, None]
    kpos = torch.arange(0, past + T)[None, :]
    mask = (kpos <= qpos) & (kpos > qpos - window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("T, window, past", [
    (16, 4, 0), (17, 4, 0), (5, 1, 0), (6, 1, 3), (13, 5, 4), (9, 4, 7), (3, 8, 7), (1, 8, 7), (1, 1, 0),
    (20, 8, 2), (7, 16, 0), (40, 6, 5),
])
def test_block_local_equals_dense_mask(T, window, past):
    torch.manual_seed(T * 100 + window * 10 + past)
    B, H, d = 2, 3, 4
    q = torch.randn(B, H, T, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, H, past + T, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, H, past + T, d, dtype=torch.float64, requires_grad=True)
    out = sliding_window_attention(q, k, v, window)
    ref = dense_reference(q, k, v, window)
    assert out.shape == ref.shape == (B, H, T, d)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    theirs = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_no_dense_mask_is_built(monkeypatch):
    """The masks SDPA sees are per block (S, S + window), never (T, L + T)."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append(None if attn_mask is None else tuple(attn_mask.shape))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k = torch.randn(1, 2, 64, 4), torch.randn(1, 2, 64 + 7, 4)
    sliding_window_attention(q, k, k, 8)
    assert seen == [(1, 8, 8, 16)]


@pytest.mark.parametrize("T, window, past", [(64, 8, 7), (64, 8, 8), (13, 5, 4), (3, 8, 7), (1, 1, 0)])
def test_sdpa_gets_4d_inputs_and_a_4d_or_2d_mask(monkeypatch, T, window, past):
    """PyTorch's fused kernels (CUDA flash / memory-efficient, CPU flash) take 4-D (N, H, L, d) inputs only (5-D
    sends SDPA to the math backend) and a 2-D or 4-D mask (3-D sends the CPU to the math backend)."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append((q.dim(), k.dim(), v.dim(), None if attn_mask is None else attn_mask.dim()))
        assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1  # what the fused kernels also require
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k = torch.randn(2, 3, T, 4), torch.randn(2, 3, past + T, 4)
    sliding_window_attention(q, k, k, window)
    assert len(seen) == 1 and seen[0][:3] == (4, 4, 4) and seen[0][3] in (2, 4)


def test_cpu_uses_a_fused_kernel():
    """With 4-D inputs and mask, the CPU's SDPA picks its flash kernel, not the math backend."""
    q, k = torch.randn(2, 3, 64, 4, requires_grad=True), torch.randn(2, 3, 64 + 7, 4)
    names, todo = [], [sliding_window_attention(q, k, k, 8).grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None:
            names.append(type(fn).__name__)
            todo += [f for f, _ in fn.next_functions]
    assert any("FlashAttentionForCpu" in name for name in names), names


def test_dropout_runs():
    """Dropout (training) takes the math backend on the same 4-D tensors; the output and gradients are finite."""
    torch.manual_seed(0)
    q = torch.randn(2, 3, 20, 4, requires_grad=True)
    k = torch.randn(2, 3, 22, 4, requires_grad=True)
    out = sliding_window_attention(q, k, k, 8, dropout_p=0.5)
    assert out.shape == q.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


@pytest.mark.parametrize("window, sizes", [(4, [5, 1, 7, 3]), (1, [3, 2]), (6, [2, 2, 9, 13])])
def test_layer_streaming_equals_one_pass(window, sizes):
    """Segment by segment with the carried cache (the last window - 1 keys) equals one pass over the stream."""
    torch.manual_seed(0)
    layer = SlidingWindowAttention(dim=16, num_heads=2, window=window).double()
    x = torch.randn(2, sum(sizes), 16, dtype=torch.float64)
    whole, _ = layer(x, 0, None)
    cache, outs, pos = layer.empty_cache(2, x.device, x.dtype), [], 0
    for n in sizes:
        y, cache = layer(x[:, pos:pos + n], pos, cache)
        outs.append(y)
        pos += n
        assert cache["k"].shape[2] == min(window - 1, pos)
    torch.testing.assert_close(torch.cat(outs, dim=1), whole, rtol=0, atol=1e-10)
