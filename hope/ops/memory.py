"""Fast-weight neural memory: the write (inner gradient step) and the read, as pure tensor math.

One memory per (batch, head); its fast weights are *state*, passed in and returned, never parameters
(architecture.md §4, "Fast weights are state"). Two kinds of memory `M`:

- ``"mlp"``:    ``M(z) = z + W1 @ silu(W2 @ z)``, weights ``(W1, W2)``, ``W1: (B, H, d, h)``, ``W2: (B, H, h, d)``
- ``"linear"``: ``M(z) = W @ z``, weights ``(W,)``, ``W: (B, H, d, d)``

The write rule for token t of a chunk whose start state is ``W_c`` (the state left by the *previous* chunk:
Nested Learning eq. 90 read literally uses the end of the current chunk, which leaks the future):
```
y_t = M_c(v_t) if self_target else v_t          self-generated target v_hat (HOPE §SMT), a constant for the inner grad
G_t = grad_W 0.5 ||M_c(k_t) - y_t||^2  (+ (W_c k_t) k_t^T on the weight whose input is k, if precondition)
momentum on:  S_t = beta_t S_{t-1} - eta_t G_t ;  W_t = alpha_t W_{t-1} + S_t       (Titans momentum)
momentum off: W_t = alpha_t W_{t-1} - eta_t G_t
o_t = M_t(q_t)                                   (read after the write of token t)
```
The precondition term turns the plain step into HOPE's delta gradient descent (eq. 88),
``W <- W (alpha I - eta k k^T) - eta grad``. alpha follows the Hope convention (retention, 1 = keep).

Two implementations with the same signature:

- :func:`memory_reference`, a per-token loop, the test oracle;
- :func:`memory_chunked`, the fast path: one batched gradient pass per chunk, and the decay/momentum recurrence
  solved in closed form with per-chunk decay matrices, so that reads inside a chunk are C x C attention-like
  matmuls and no per-token outer product is ever materialised.

Nothing is detached: the outer optimiser trains projections, gates and initial states through the writes.
Everything also runs under ``torch.no_grad()``, since the inner gradient is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Kind = Literal["mlp", "linear"]
Weights = tuple[Tensor, ...]

# Number of weight tensors of each kind, and the index of the one whose input is k: the preconditioner
# (alpha I - eta k k^T) of eq. 88 right-multiplies that weight (W2 of the MLP, the only W of the linear map).
_NUM_WEIGHTS = {"mlp": 2, "linear": 1}
_KEY_INPUT = {"mlp": 1, "linear": 0}


def _silu_grad(z: Tensor, a: Tensor) -> Tensor:
    """d silu(z) / dz, written out so the inner gradient needs no autograd; ``a = silu(z)`` is reused.

    silu'(z) = s (1 + z (1 - s)) = s + a - a s, with s = sigmoid(z) and a = z s.
    """
    s = torch.sigmoid(z)
    return s + a - a * s


def memory_apply(weights: Weights, z: Tensor, kind: Kind) -> Tensor:
    """Read the memory at a fixed state: ``z (B, H, T, d) -> M(z) (B, H, T, d)``."""
    if kind == "mlp":
        w1, w2 = weights  # (B, H, d, h), (B, H, h, d)
        return z + F.silu(z @ w2.mT) @ w1.mT
    if kind == "linear":
        (w,) = weights  # (B, H, d, d)
        return z @ w.mT
    raise ValueError(f"unknown memory kind {kind!r}; expected one of {sorted(_NUM_WEIGHTS)}")


def inner_grads(weights: Weights, k: Tensor, target: Tensor, kind: Kind) -> Weights:
    """Hand-written gradient of ``0.5 * sum_t ||M(k_t) - target_t||^2`` w.r.t. each weight, summed over t.

    ``k, target: (B, H, T, d)``. ``target`` is treated as a constant (the stop-grad on the self-generated target
    v_hat); outer autograd still flows through it and through everything else. Returns a tuple shaped like
    ``weights``.
    """
    if kind == "mlp":
        w1, w2 = weights  # (B, H, d, h), (B, H, h, d)
        z = k @ w2.mT  # (B, H, T, h)
        a = F.silu(z)  # (B, H, T, h)
        e = k + a @ w1.mT - target  # (B, H, T, d) error M(k) - target
        u = (e @ w1) * _silu_grad(z, a)  # (B, H, T, h) error backpropagated to the hidden pre-activation
        return e.mT @ a, u.mT @ k  # sum_t e_t a_t^T (B, H, d, h); sum_t u_t k_t^T (B, H, h, d)
    if kind == "linear":
        (w,) = weights
        e = k @ w.mT - target  # (B, H, T, d)
        return (e.mT @ k,)  # sum_t e_t k_t^T (B, H, d, d)
    raise ValueError(f"unknown memory kind {kind!r}; expected one of {sorted(_NUM_WEIGHTS)}")


def _check_inputs(
    weights: Weights,
    momentum: Weights | None,
    k: Tensor,
    v: Tensor,
    q: Tensor | None,
    gates: tuple[Tensor, ...],
    chunk_size: int,
    kind: str,
) -> None:
    if kind not in _NUM_WEIGHTS:
        raise ValueError(f"unknown memory kind {kind!r}; expected one of {sorted(_NUM_WEIGHTS)}")
    if len(weights) != _NUM_WEIGHTS[kind]:
        raise ValueError(f"kind {kind!r} takes {_NUM_WEIGHTS[kind]} weight tensors, got {len(weights)}")
    if momentum is not None and [m.shape for m in momentum] != [w.shape for w in weights]:
        raise ValueError("momentum must be None or shaped like weights")
    if k.dim() != 4 or k.shape[2] < 1:
        raise ValueError(f"k must be (B, H, T, d) with T >= 1, got {tuple(k.shape)}")
    if v.shape != k.shape or (q is not None and q.shape != k.shape):
        raise ValueError("k, v and q must share the shape (B, H, T, d)")
    if any(g.shape != k.shape[:3] for g in gates):
        raise ValueError(f"gates must be (B, H, T) = {tuple(k.shape[:3])}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _write_grads(w_c: Weights, k: Tensor, v: Tensor, kind: Kind, self_target: bool, precondition: bool) -> Weights:
    """Full write gradient G at the chunk-start state ``w_c`` for the tokens in ``k, v``, summed over them."""
    target = memory_apply(w_c, v, kind) if self_target else v  # v_hat = M_c(v), constant for the inner grad
    grads = list(inner_grads(w_c, k, target, kind))
    if precondition:
        # W (alpha I - eta k k^T) = alpha W - eta (W k) k^T: fold (W_c k) k^T into the gradient (eq. 88).
        i = _KEY_INPUT[kind]
        grads[i] = grads[i] + (k @ w_c[i].mT).mT @ k  # (B, H, out, d)
    return tuple(grads)


def memory_reference(
    weights: Weights,
    momentum: Weights | None,
    k: Tensor,
    v: Tensor,
    q: Tensor | None,
    eta: Tensor,
    alpha: Tensor,
    beta: Tensor,
    chunk_size: int,
    *,
    kind: Kind,
    self_target: bool,
    precondition: bool,
) -> tuple[Tensor | None, Weights, Weights | None]:
    """Per-token loop of the write rule (module docstring); the oracle for :func:`memory_chunked`.

    ``k, v, q: (B, H, T, d)`` (``q`` may be None: write only, ``o`` is None); ``eta, alpha, beta: (B, H, T)``
    gates in [0, 1] (``beta`` unused when ``momentum`` is None). Gradients are taken at the state snapshotted
    every ``chunk_size`` tokens counted from position 0 of this call; a last partial chunk is committed the same
    way. Returns ``(o (B, H, T, d) | None, weights_T, momentum_T | None)``.
    """
    _check_inputs(weights, momentum, k, v, q, (eta, alpha, beta), chunk_size, kind)
    w, s = tuple(weights), None if momentum is None else tuple(momentum)
    outputs = []
    for t in range(k.shape[2]):
        if t % chunk_size == 0:
            w_c = w  # gradients of the whole chunk are taken here, never at a later state
        g = _write_grads(w_c, k[:, :, t : t + 1], v[:, :, t : t + 1], kind, self_target, precondition)
        e_t, a_t, b_t = (x[:, :, t, None, None] for x in (eta, alpha, beta))  # (B, H, 1, 1)
        if s is None:
            w = tuple(a_t * wi - e_t * gi for wi, gi in zip(w, g))
        else:
            s = tuple(b_t * si - e_t * gi for si, gi in zip(s, g))
            w = tuple(a_t * wi + si for wi, si in zip(w, s))
        if q is not None:
            outputs.append(memory_apply(w, q[:, :, t : t + 1], kind))  # read after the write of token t
    o = torch.cat(outputs, dim=2) if q is not None else None
    return o, w, s


# ----------------------------------------------------------------------------------------------------------
# Chunked fast path
# ----------------------------------------------------------------------------------------------------------


def _segment_products(x: Tensor) -> Tensor:
    """``x (..., C) -> P (..., C, C)``: ``P[t, s] = prod_{r=s+1..t} x_r`` for ``s <= t`` (1 on the diagonal), 0 above.

    A masked cumulative product down the columns: exact for x = 0 or 1, no division or log (a log-space segment
    sum would give NaN gradients at x = 0), and cumprod's backward handles zeros. O(C^2) per (b, h), negligible
    next to the C^2 d matmuls of the reads.
    """
    C = x.shape[-1]
    below = torch.ones(C, C, dtype=torch.bool, device=x.device).tril(-1)
    one = torch.ones((), dtype=x.dtype, device=x.device)
    factors = torch.where(below, x.unsqueeze(-1), one)  # (..., C, C) [t, s] = x_t if t > s else 1
    return factors.cumprod(dim=-2).tril()  # (..., C, C)


@dataclass
class _Coefficients:
    """Closed form of the decay/momentum recurrence inside each chunk, gradients frozen at ``W_c``:

    ``W_t = decay_t W_c + carry_t S_c + sum_s coef[t, s] G_s`` and ``S_t = mom_decay_t S_c + sum_s mom_coef[t, s] G_s``.
    Leading dims are (B, H, N) over all chunks, or (B, H) once a chunk is selected.
    """

    decay: Tensor  # (..., C)     prod_{r<=t} alpha_r
    coef: Tensor  # (..., C, C)   c_{t,s}, lower triangular
    carry: Tensor | None  # (..., C)      sum_{j<=t} (prod_{r=j+1..t} alpha_r)(prod_{r<=j} beta_r)
    mom_decay: Tensor | None  # (..., C)  prod_{r<=t} beta_r
    mom_coef: Tensor | None  # (..., C, C) -eta_s prod_{r=s+1..t} beta_r

    def select(self, n: int) -> _Coefficients:
        """The coefficients of chunk n (drop the N axis, dim 2)."""
        return _Coefficients(*(None if (x := getattr(self, f.name)) is None else x[:, :, n] for f in fields(self)))


def _coefficients(eta: Tensor, alpha: Tensor, beta: Tensor | None) -> _Coefficients:
    """Build the per-chunk recurrence coefficients from gates shaped ``(..., C)`` (beta None = momentum off)."""
    decay = alpha.cumprod(dim=-1)  # (..., C)
    keep_w = _segment_products(alpha)  # (..., C, C) prod_{r=j+1..t} alpha_r
    neg_eta = -eta.unsqueeze(-2)  # (..., 1, C) scales column s by -eta_s
    if beta is None:
        # W_t = alpha_t W_{t-1} - eta_t G_t  =>  c_{t,s} = -eta_s prod_{r=s+1..t} alpha_r
        return _Coefficients(decay, keep_w * neg_eta, None, None, None)
    # S_j = prod_{r<=j} beta_r S_c - sum_{s<=j} eta_s prod_{r=s+1..j} beta_r G_s, and W_t = sum_{j<=t} keep_w[t, j] S_j
    # + decay_t W_c, so the two lower-triangular decay matrices compose by a matmul.
    keep_s = _segment_products(beta)  # (..., C, C) prod_{r=s+1..j} beta_r
    mom_decay = beta.cumprod(dim=-1)  # (..., C)
    carry = (keep_w @ mom_decay.unsqueeze(-1)).squeeze(-1)  # (..., C)
    return _Coefficients(decay, (keep_w @ keep_s) * neg_eta, carry, mom_decay, keep_s * neg_eta)


Factors = tuple[tuple[Tensor, Tensor], ...]  # per weight (l, r) with G_s = l_s r_s^T, l (B, H, C, out), r (B, H, C, in)


def _read(wx: Tensor, x: Tensor, s: Tensor | None, left: Tensor, scores: Tensor, co: _Coefficients) -> Tensor:
    """``W_t x_t`` for every t of a chunk, without forming ``W_t``.

    ``W_t x_t = decay_t W_c x_t + carry_t S_c x_t + sum_s coef[t, s] (r_s . x_t) l_s`` where ``G_s = l_s r_s^T``.
    ``wx = W_c x`` and ``x (B, H, C, in)``; ``left`` stacks the ``l_s`` ``(B, H, C, out)``;
    ``scores = coef * (x r^T)`` ``(B, H, C, C)``.
    """
    out = co.decay.unsqueeze(-1) * wx + scores @ left  # (B, H, C, out)
    if s is not None:
        out = out + co.carry.unsqueeze(-1) * (x @ s.mT)
    return out


def _commit(
    w: Weights, s: Weights | None, factors: Factors, co: _Coefficients, end: int
) -> tuple[Weights, Weights | None]:
    """State after token ``end`` of the chunk; ``sum_s c[end, s] l_s r_s^T = L^T diag(c[end]) R`` is one matmul."""
    c_end = co.coef[..., end, :, None]  # (B, H, C, 1)
    a_end = co.decay[..., end, None, None]  # (B, H, 1, 1)
    new_w = [a_end * wi + (l * c_end).mT @ r for wi, (l, r) in zip(w, factors)]  # (B, H, out, in)
    if s is None:
        return tuple(new_w), None
    m_end = co.carry[..., end, None, None]
    b_end = co.mom_decay[..., end, None, None]
    cs_end = co.mom_coef[..., end, :, None]  # (B, H, C, 1)
    new_w = [nw + m_end * si for nw, si in zip(new_w, s)]
    new_s = tuple(b_end * si + (l * cs_end).mT @ r for si, (l, r) in zip(s, factors))
    return tuple(new_w), new_s


# A chunk's inputs are stacked along the token axis as [v; k; q] (B, H, 2C or 3C, d), so that the first layer at
# W_c sees every stream it needs in one matmul: [v; k; q] with a self-generated target, [k; q] without (contiguous
# either way); q is absent when only writing.


def _chunk_linear(
    w: Weights, s: Weights | None, vkq: Tensor, qk: Tensor | None, co: _Coefficients,
    self_target: bool, precondition: bool,
) -> tuple[Tensor | None, Factors]:
    """One chunk of the linear memory: rank-1 gradient factors at ``W_c`` and the reads ``W_t q_t``."""
    C = co.decay.shape[-1]
    (w0,) = w  # (B, H, d, d)
    first = 0 if self_target else C
    wx = vkq[..., first:, :] @ w0.mT  # (B, H, ., d) W_c [v;] k [; q]
    k = vkq[..., C : 2 * C, :]
    mk = wx[..., C - first : 2 * C - first, :]  # (B, H, C, d) W_c k_t
    e = mk - (wx[..., :C, :] if self_target else vkq[..., :C, :])  # (B, H, C, d)
    left = e + mk if precondition else e  # G_t = (e_t + W_c k_t) k_t^T with the eq. 88 term
    o = None
    if qk is not None:
        o = _read(wx[..., 2 * C - first :, :], vkq[..., 2 * C :, :], None if s is None else s[0], left, qk, co)
    return o, ((left, k),)


def _chunk_mlp(
    w: Weights, s: Weights | None, vkq: Tensor, qk: Tensor | None, co: _Coefficients,
    self_target: bool, precondition: bool,
) -> tuple[Tensor | None, Factors]:
    """One chunk of the MLP memory: rank-1 gradient factors at ``W_c`` and the reads ``M_t(q_t)``."""
    C = co.decay.shape[-1]
    w1, w2 = w  # (B, H, d, h), (B, H, h, d)
    first = 0 if self_target else C
    z = vkq[..., first:, :] @ w2.mT  # (B, H, ., h) W2_c [v;] k [; q]
    n_mem = 2 * C - first  # rows [v;] k go through the whole memory at W_c
    a = F.silu(z[..., :n_mem, :])  # (B, H, n_mem, h)
    m = vkq[..., first : 2 * C, :] + a @ w1.mT  # (B, H, n_mem, d) M_c([v;] k)
    k = vkq[..., C : 2 * C, :]
    zk, ak = z[..., n_mem - C : n_mem, :], a[..., n_mem - C :, :]  # (B, H, C, h)
    y = m[..., :C, :] if self_target else vkq[..., :C, :]  # target: v_hat = M_c(v) or v
    e = m[..., n_mem - C :, :] - y  # (B, H, C, d) gW1_t = e_t ak_t^T
    u = (e @ w1) * _silu_grad(zk, ak)  # (B, H, C, h) gW2_t = u_t k_t^T
    if precondition:
        u = u + zk  # (W2_c k_t) k_t^T shares the right factor k_t (eq. 88)
    o = None
    if qk is not None:
        q = vkq[..., 2 * C :, :]
        s1, s2 = (None, None) if s is None else s
        aq = F.silu(_read(z[..., n_mem:, :], q, s2, u, qk, co))  # (B, H, C, h) silu(W2_t q_t)
        o = q + _read(aq @ w1.mT, aq, s1, e, co.coef * (aq @ ak.mT), co)  # q_t + W1_t aq_t, (B, H, C, d)
    return o, ((e, ak), (u, k))


def memory_chunked(
    weights: Weights,
    momentum: Weights | None,
    k: Tensor,
    v: Tensor,
    q: Tensor | None,
    eta: Tensor,
    alpha: Tensor,
    beta: Tensor,
    chunk_size: int,
    *,
    kind: Kind,
    self_target: bool,
    precondition: bool,
) -> tuple[Tensor | None, Weights, Weights | None]:
    """Same contract and result as :func:`memory_reference`, looping over chunks only.

    Inside a chunk all gradients are rank-1 factors at ``W_c`` computed in one batched pass; the decay/momentum
    recurrence has the closed form of :class:`_Coefficients`, so the reads are C x C attention-like matmuls and
    the committed state is one matmul per weight. A last partial chunk is zero-padded and committed at its last
    real token (the recurrence is causal, so padded tokens never reach it).
    """
    _check_inputs(weights, momentum, k, v, q, (eta, alpha, beta), chunk_size, kind)
    B, H, T, d = k.shape
    C = min(chunk_size, T)  # a single short chunk needs no padding
    N = -(-T // C)
    pad = N * C - T

    def chunked(x: Tensor) -> Tensor:  # (B, H, T, *) -> (B, H, N, C, *)
        if pad:
            x = F.pad(x, (0, 0, 0, pad) if x.dim() == 4 else (0, pad))
        return x.reshape(B, H, N, C, *x.shape[3:])

    k_c = chunked(k)  # (B, H, N, C, d)
    coeffs = _coefficients(chunked(eta), chunked(alpha), None if momentum is None else chunked(beta))
    streams, qk = [chunked(v), k_c], None
    if q is not None:
        q_c = chunked(q)
        streams.append(q_c)
        qk = coeffs.coef * (q_c @ k_c.mT)  # (B, H, N, C, C) independent of the state: all chunks at once
    vkq = torch.cat(streams, dim=3)  # (B, H, N, 2C or 3C, d)
    step = _chunk_mlp if kind == "mlp" else _chunk_linear

    w, s = tuple(weights), None if momentum is None else tuple(momentum)
    outputs = []
    for n in range(N):
        co = coeffs.select(n)
        o_n, factors = step(w, s, vkq[:, :, n], None if qk is None else qk[:, :, n], co, self_target, precondition)
        w, s = _commit(w, s, factors, co, C - 1 if n < N - 1 else C - 1 - pad)
        if o_n is not None:
            outputs.append(o_n)
    o = torch.cat(outputs, dim=2)[:, :, :T] if q is not None else None  # (B, H, T, d)
    return o, w, s
