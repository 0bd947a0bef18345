"""Causal sliding-window softmax attention, block-local: memory O(T * window), no (T, T) mask.

A query at key position p attends to the keys p - window < j <= p. Split the T queries into blocks of `window`;
every query of block b then finds all its keys among that block's own positions and the previous block's, so
each block attends to 2 * window keys with one (window, 2 * window) band mask shared by all blocks:

    query r of a block (0 <= r < window), key c of its 2 * window keys: allowed iff r < c <= r + window

(only block 0 also masks the zero padding before the stream's first key, when the cache is shorter than window).

All blocks go through one `F.scaled_dot_product_attention` call on 4-D tensors, the only rank its fused kernels
(flash, memory-efficient, and the CPU flash kernel) accept: batch and heads fold into SDPA's batch axis and the
blocks take its head axis, (B * H, n_blocks, S, d). That layout is free: the queries are a view of (B, H, T, d),
and every block's keys are an overlapping view (stride S rows) of one padded (B * H, window + T, d) tensor; folding
the blocks into the batch axis instead ((B * n_blocks, H, ...)) would copy every key twice. The band mask,
(S, S + window) or (n_blocks, S, S + window) when block 0 reaches before the stream, broadcasts over SDPA's
batch axis (B * H) as the memory-efficient kernel accepts; flash takes no mask and is not chosen here.

The scores are T x 2 * window (T / window blocks of window x 2 * window) against T x (L + T) with a dense mask:
for T = 2048 bytes and window = 64, 16x less memory and work, and no (T, L + T) mask is built. The result
is the dense computation's up to the order of floating-point sums (tests/test_attention.py checks outputs and
gradients in float64 against the dense-mask formula).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             dropout_p: float = 0.0) -> torch.Tensor:
    """q (B, H, T, d) for the last T of the L + T keys/values k, v (B, H, L + T, d) (the first L: a carried
    cache) -> (B, H, T, d), each query attending to itself and the window - 1 keys before it.

    Blocks hold S = min(window, T) queries (one block of T when T <= window: a few tokens against a cache pad
    nothing) and see S + window keys: the window before the block's first query and the block itself."""
    B, H, T, d = q.shape
    past, W = k.shape[2] - T, window
    S = min(W, T)
    n_blocks = -(-T // S)
    pad = n_blocks * S - T  # queries (and keys) added at the end so that T fills whole blocks; outputs dropped
    if pad:
        q = F.pad(q, (0, 0, 0, pad))
    q_blocks = q.reshape(B * H, n_blocks, S, d)  # a view of (B, H, T, d) unless B, H cannot merge
    first = past - W  # key index of block 0's first key (negative: before the stream, zero-padded, masked)

    def blocks(x: torch.Tensor) -> torch.Tensor:
        lo = max(first, 0)
        x = F.pad(x[:, :, lo:], (0, 0, lo - first, pad))  # (B, H, W + n_blocks * S, d): keys first..
        x = x.reshape(B * H, W + n_blocks * S, d)  # a view: F.pad's output is contiguous
        return x.unfold(1, S + W, S).transpose(-1, -2)  # (B * H, n_blocks, S + W, d), overlapping views

    # key c of query r: r < c <= r + W (causal and inside the window), the same for every block. An additive mask
    # (0 allowed, -inf not: the log of the 0/1 band), which saves SDPA converting a boolean one (3 ops); 2-D or
    # 4-D, the ranks the fused kernels take (a 3-D mask sends the CPU to the math backend).
    if first >= 0:  # every block's keys exist: one (S, S + W) mask for all
        mask = torch.ones(S, S + W, dtype=q.dtype, device=q.device).triu(1).tril(W).log()
    else:  # block 0's first -first keys are zero padding before the stream's start (only block 0's: when
        # n_blocks > 1, S = W and block 1 starts at key `past` >= 0); every row keeps its own key: none is empty
        mask = torch.ones(1, n_blocks, S, S + W, dtype=q.dtype, device=q.device).triu(1).tril(W).log()
        mask[0, 0, :, :-first].fill_(float("-inf"))
    y = F.scaled_dot_product_attention(q_blocks, blocks(k), blocks(v), attn_mask=mask, dropout_p=dropout_p)
    return y.reshape(B, H, n_blocks * S, d)[:, :, :T]
