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

from dataclasses import dataclass
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


def silu_grad(z: Tensor, a: Tensor) -> Tensor:
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
        u = (e @ w1) * silu_grad(z, a)  # (B, H, T, h) error backpropagated to the hidden pre-activation
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
#
# Inside a chunk every write gradient is taken at the chunk-start state W_c and is a sum of rank-1 terms
# G_s = l_s r_s^T, so the decay/momentum recurrence has a closed form:
#     W_t = decay_t W_c + carry_t S_c + sum_s coef[t, s] l_s r_s^T,   S_t = mom_decay_t S_c + sum_s mom_coef[t, s] l_s r_s^T
# with coef[t, s] = -eta_s keep[t, s] and mom_coef[t, s] = -eta_s keep_s[t, s]. Everything but eta depends only on
# the gates alpha, beta, which never depend on the state: :func:`chunk_decays` builds it for all chunks at once.
# The chunk loop then only computes the gradient factors at W_c (:func:`write_factors`) and commits the state
# (:func:`commit_chunk`, one matmul per weight for W and S together); the reads of every chunk are done after the
# loop in one batched pass from the stacked chunk-start states (:func:`read_chunks`), as C x C attention-like
# matmuls: no per-token outer product is ever materialised. Callers whose inputs depend on the state (the
# self-modifying memory: k, v and eta are read from the memories at W_c) write the loop themselves from these
# pieces; all of them broadcast over any leading dims (e.g. a box axis shared by k, v and the gates).
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
class ChunkDecays:
    """The eta-free part of the closed-form recurrence, for every chunk at once (leading dims ``(..., N)``).

    ``coef[t, s] = -eta_s keep[t, s]`` and ``mom_coef[t, s] = -eta_s keep_s[t, s]``.
    """

    decay: Tensor  # (..., N, C)         prod_{r<=t} alpha_r
    keep: Tensor  # (..., N, C, C)       momentum off: prod_{r=s+1..t} alpha_r; on: sum_j keep_w[t, j] keep_s[j, s]
    carry: Tensor | None  # (..., N, C)   sum_{j<=t} (prod_{r=j+1..t} alpha_r)(prod_{r<=j} beta_r)
    mom_decay: Tensor | None  # (..., N, C)  prod_{r<=t} beta_r
    keep_s: Tensor | None  # (..., N, C, C)  prod_{r=s+1..t} beta_r

    def unbind(self) -> list[ChunkDecays]:
        """Per-chunk views (the N axis dropped), cut with one unbind per tensor so autograd sees one op each."""
        def parts(x: Tensor | None, matrix: bool) -> list[Tensor | None]:
            return [None] * self.decay.shape[-2] if x is None else list(x.unbind(dim=-3 if matrix else -2))

        return [ChunkDecays(*p) for p in zip(parts(self.decay, False), parts(self.keep, True), parts(self.carry, False),
                                              parts(self.mom_decay, False), parts(self.keep_s, True))]


def chunk_decays(alpha: Tensor, beta: Tensor | None) -> ChunkDecays:
    """Decay products from gates chunked as ``(..., N, C)`` (``beta`` None = momentum off)."""
    decay = alpha.cumprod(dim=-1)  # (..., N, C)
    keep_w = _segment_products(alpha)  # (..., N, C, C) prod_{r=j+1..t} alpha_r
    if beta is None:
        # W_t = alpha_t W_{t-1} - eta_t G_t  =>  c_{t,s} = -eta_s prod_{r=s+1..t} alpha_r
        return ChunkDecays(decay, keep_w, None, None, None)
    # S_j = prod_{r<=j} beta_r S_c - sum_{s<=j} eta_s prod_{r=s+1..j} beta_r G_s, and W_t = sum_{j<=t} keep_w[t, j] S_j
    # + decay_t W_c, so the two lower-triangular decay matrices compose by a matmul.
    keep_s = _segment_products(beta)  # (..., N, C, C)
    mom_decay = beta.cumprod(dim=-1)  # (..., N, C)
    carry = (keep_w @ mom_decay.unsqueeze(-1)).squeeze(-1)  # (..., N, C)
    return ChunkDecays(decay, keep_w @ keep_s, carry, mom_decay, keep_s)


def decays_per_chunk(alpha: Tensor, beta: Tensor | None, chunk_size: int) -> list[ChunkDecays]:
    """Gates ``(..., T)`` -> one :class:`ChunkDecays` (no N axis) per chunk of ``chunk_size`` tokens, the last
    possibly shorter; the complete chunks are built in one batched call."""
    T = alpha.shape[-1]
    n_full, rest = divmod(T, chunk_size)
    gates = [alpha] if beta is None else [alpha, beta]
    if rest and n_full:
        parts = [g.split([n_full * chunk_size, rest], dim=-1) for g in gates]
        full, tail = [p[0] for p in parts], [p[1] for p in parts]
    else:
        full, tail = (gates, []) if not rest else ([], gates)
    out: list[ChunkDecays] = []
    if full:
        shaped = [g.reshape(*g.shape[:-1], n_full, chunk_size) for g in full]  # (..., N, C)
        out += chunk_decays(shaped[0], shaped[1] if beta is not None else None).unbind()
    if tail:
        shaped = [g.unsqueeze(-2) for g in tail]  # (..., 1, rest)
        out += chunk_decays(shaped[0], shaped[1] if beta is not None else None).unbind()
    return out


Factors = tuple[tuple[Tensor, Tensor], ...]  # per weight (l, r) with G_s = l_s r_s^T, l (..., C, out), r (..., C, in)


def write_factors(
    weights: Weights, k: Tensor, v: Tensor, *, kind: Kind, self_target: bool, precondition: bool,
    q: Tensor | None = None,
) -> tuple[Factors, Tensor, Tensor | None]:
    """Rank-1 factors of every token's write gradient at the chunk-start state ``weights``, and the error.

    ``k, v (..., C, d)`` (broadcast against the weights' leading dims). Returns ``(factors, e, qw)`` with
    ``e = M_c(k) - target`` ``(..., C, d)``, the associative error whose squared norm is the momentary surprise,
    and, when ``q (..., C, d)`` is given, ``qw`` = the first weight at ``W_c`` applied to q (``W2_c q`` for the
    MLP, ``W_c q`` for the linear map): the reads need it, and it rides in the same matmul as k and v.
    """
    C = k.shape[-2]
    rows = ([v] if self_target else []) + [k] + ([q] if q is not None else [])
    x = torch.cat(rows, dim=-2) if len(rows) > 1 else k  # (..., (1|2|3) C, d): one first-layer matmul for all
    n_kv = (2 if self_target else 1) * C  # rows [v;] k
    if kind == "mlp":
        w1, w2 = weights  # (..., d, h), (..., h, d)
        zx = x @ w2.mT  # (..., rows, h)
        z, qw = (zx, None) if q is None else zx.split([n_kv, C], dim=-2)
        a = F.silu(z)
        xkv = x if q is None else x[..., :n_kv, :]
        if self_target:
            m = xkv + a @ w1.mT  # (..., 2C, d) M_c([v; k])
            m_v, m_k = m.split(C, dim=-2)
            e = m_k - m_v  # target v_hat = M_c(v), a constant for the inner gradient
            zk, ak = z[..., C:, :], a[..., C:, :]
        else:
            zk, ak = z, a
            e = k + a @ w1.mT - v  # (..., C, d)
        u = (e @ w1) * silu_grad(zk, ak)  # (..., C, h) error backpropagated to the hidden pre-activation
        if precondition:
            u = u + zk  # (W2_c k_t) k_t^T shares the right factor k_t (eq. 88)
        return ((e, ak), (u, k)), e, qw  # gW1_t = e_t ak_t^T, gW2_t = u_t k_t^T
    if kind == "linear":
        (w,) = weights  # (..., d, d)
        mxq = x @ w.mT
        mx, qw = (mxq, None) if q is None else mxq.split([n_kv, C], dim=-2)
        mk = mx[..., C:, :] if self_target else mx  # (..., C, d) W_c k_t
        e = mk - (mx[..., :C, :] if self_target else v)
        left = e + mk if precondition else e  # G_t = (e_t + W_c k_t) k_t^T with the eq. 88 term
        return ((left, k),), e, qw
    raise ValueError(f"unknown memory kind {kind!r}; expected one of {sorted(_NUM_WEIGHTS)}")


@dataclass
class CommitRows:
    """What commits one chunk (its state after token ``end``): ``coef[end, :]``, ``mom_coef[end, :]`` (..., C)
    and the scalars ``decay[end]``, ``carry[end]``, ``mom_decay[end]`` shaped (..., 1, 1)."""

    coef: Tensor
    decay: Tensor
    mom_coef: Tensor | None = None
    carry: Tensor | None = None
    mom_decay: Tensor | None = None


def commit_rows(d: ChunkDecays, eta: Tensor, end: int) -> CommitRows:
    """:class:`CommitRows` of a chunk from its decays (no N axis or with one) and inner learning rates eta."""
    neg = -eta
    rows = CommitRows(d.keep[..., end, :] * neg, d.decay[..., end, None, None])
    if d.keep_s is not None:
        rows.mom_coef = d.keep_s[..., end, :] * neg
        rows.carry, rows.mom_decay = d.carry[..., end, None, None], d.mom_decay[..., end, None, None]
    return rows


def commit_chunk(weights: Weights, momentum: Weights | None, factors: Factors, rows: CommitRows
                 ) -> tuple[Weights, Weights | None]:
    """State after a chunk: ``sum_s c[end, s] l_s r_s^T = L^T diag(c[end]) R`` per weight, plus the decays.

    The decays are added in place to the fresh matmul outputs with ``addcmul_`` (one pass over the state, no
    further allocation).
    """
    c = rows.coef.unsqueeze(-1)  # (..., C, 1)
    if momentum is None:
        return tuple(((l * c).mT @ r).addcmul_(rows.decay, w) for w, (l, r) in zip(weights, factors)), None
    cs = rows.mom_coef.unsqueeze(-1)
    new_w, new_s = [], []
    for w, s, (l, r) in zip(weights, momentum, factors):
        new_w.append(((l * c).mT @ r).addcmul_(rows.carry, s).addcmul_(rows.decay, w))  # a W + m S + update
        new_s.append(((l * cs).mT @ r).addcmul_(rows.mom_decay, s))  # b S + update
    return tuple(new_w), tuple(new_s)


def read_chunk(
    weights: Weights, momentum: Weights | None, q: Tensor, factors: Factors, decay: Tensor, carry: Tensor | None,
    coef: Tensor, kind: Kind, *, qw: Tensor | None = None, qr: Tensor | None = None,
) -> Tensor:
    """``M_t(q_t)`` for every token t of one chunk, without forming any ``W_t``.

    ``weights``/``momentum``: the chunk-start state; ``q (..., C, d)``; ``decay``/``carry (..., C)`` and
    ``coef (..., C, C)`` of this chunk. ``W_t x_t = decay_t W_c x_t + carry_t S_c x_t + sum_s coef[t, s] (r_s . x_t) l_s``.
    Optional precomputed pieces of the first weight's read: ``qw = W_c q`` (from :func:`write_factors`) and
    ``qr = coef * (q r^T)``. Done inside the chunk loop, while the state is still in cache (a batched read of all
    chunks after the loop needs the chunk-start states stacked, which costs more than it saves).
    """
    decay = decay.unsqueeze(-1)  # (..., C, 1)
    carry = None if momentum is None else carry.unsqueeze(-1)

    def apply(i: int, x: Tensor, xw: Tensor | None = None, xr: Tensor | None = None) -> Tensor:  # W_t x_t, weight i
        l, r = factors[i]
        xw = x @ weights[i].mT if xw is None else xw
        xr = coef * (x @ r.mT) if xr is None else xr
        out = decay * xw + xr @ l  # (..., C, out)
        return out if momentum is None else out + carry * (x @ momentum[i].mT)

    if kind == "linear":
        return apply(0, q, qw, qr)
    aq = F.silu(apply(1, q, qw, qr))  # (..., C, h) silu(W2_t q_t)
    return q + apply(0, aq)  # q_t + W1_t aq_t


def _chunk_groups(T: int, C: int) -> list[tuple[int, int, int]]:
    """(start, n_chunks, chunk_len): the complete chunks as one group, a last partial chunk as another."""
    n_full, rest = divmod(T, C)
    return [g for g in ((0, n_full, C), (n_full * C, 1, rest)) if g[1] and g[2]]


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

    Everything that does not depend on the state (decays, coefficients, ``q k^T``, the commit rows) is built for
    all chunks at once before the loop; per chunk remain the rank-1 gradient factors at ``W_c`` (one batched
    pass, q riding along), the reads and the commit (see the section comment above). A last partial chunk is
    committed at its last token.
    """
    _check_inputs(weights, momentum, k, v, q, (eta, alpha, beta), chunk_size, kind)
    B, H, T, d = k.shape
    steps = []  # per chunk: k, v, q, eta, decay, carry, coef, qr, commit rows
    for start, n, c in _chunk_groups(T, chunk_size):
        def cut(x: Tensor) -> Tensor:  # (B, H, T, *) -> (B, H, n, c, *)
            return x.narrow(2, start, n * c).reshape(B, H, n, c, *x.shape[3:])

        dec = chunk_decays(cut(alpha), None if momentum is None else cut(beta))
        eta_g = cut(eta)  # (B, H, n, c)
        coef = dec.keep * -eta_g.unsqueeze(-2)  # (B, H, n, c, c)
        rows = commit_rows(dec, eta_g, c - 1)  # (B, H, n, c) / (B, H, n, 1, 1)
        k_g, v_g = cut(k), cut(v)
        qr = None
        if q is not None:
            q_g = cut(q)
            qr = coef * (q_g @ k_g.mT)  # the first weight's r is k for both kinds
        per_chunk = [k_g, v_g, q_g if q is not None else None, eta_g, dec.decay, dec.carry, coef, qr,
                     rows.coef, rows.decay, rows.mom_coef, rows.carry, rows.mom_decay]
        split = [[None] * n if x is None else list(x.unbind(2)) for x in per_chunk]
        for parts in zip(*split):
            steps.append((*parts[:8], CommitRows(*parts[8:])))
    w, s = tuple(weights), None if momentum is None else tuple(momentum)
    outputs = []
    for k_n, v_n, q_n, eta_n, decay, carry, coef, qr, rows in steps:
        factors, _, qw = write_factors(w, k_n, v_n, kind=kind, self_target=self_target, precondition=precondition,
                                       q=q_n)
        if q_n is not None:
            outputs.append(read_chunk(w, s, q_n, factors, decay, carry, coef, kind, qw=qw, qr=qr))
        w, s = commit_chunk(w, s, factors, rows)
    o = torch.cat(outputs, dim=2) if q is not None else None  # (B, H, T, d)
    return o, w, s
