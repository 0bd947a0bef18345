"""Fast-weight memory as pure tensor math: the gated delta rule, exact inside every chunk.

Nested Learning eq. 88 with the dot-product inner objective ``L = -<W k, v_hat>`` is the (gated) delta rule
(architecture.md, "Delta GD": gap 4 of architecture.md). This project applies it to the *learned change* of a fast weight, so that
forgetting returns the memory to its meta-learned initial state ``W_0`` (architecture.md, "Forgetting returns to the prior"):
```
W_t      = W_0 + D_t                                         the fast weight: prior (a parameter) + change (state)
D_t      = alpha_t D_{t-1} + eta_t (tau_t - alpha_t D_{t-1} kappa_t) kappa_t^T     (delta rule, eq. 88)
o_t      = D_t x_t                                           read after the write of token t
```
``kappa`` is a unit key, ``tau`` the residual target (what the prior does not already produce), eta in [0, 1]
the inner learning rate and alpha in [0, 1] the retention. One write with eta = 1 and alpha = 1 sets
``D kappa = tau`` exactly (the fixed point the first implementation missed by counting the erase term twice).

Two kinds of memory box ``M(z)`` build kappa and tau from a key k and a target v_hat:

- ``"linear"``: ``M(z) = (W_0 + D) z``; ``prior = (W_0,)`` with ``W_0: (..., d, d)``; features ``f(z) = z``.
- ``"mlp"``:    ``M(z) = z + (W1_0 + D) silu(W2 z)``; ``prior = (W1_0, W2)``, ``W1_0: (..., d, h)``,
  ``W2: (..., h, d)``. Only the output layer is a fast weight: the hidden layer ``W2`` is meta-learned by the
  outer optimiser and fixed inside a stream, so the memory is a delta rule on the features ``silu(W2 z)`` and
  is exact at every chunk size too. (Titans also writes the hidden layer, with gradients frozen at the chunk
  start; that would make results depend on the chunk size, which this project rules out.)

In both, ``kappa = f(k) / |f(k)|`` and ``tau = (v_hat - base(k)) / |f(k)|`` where ``M(z) = base(z) + D f(z)``,
so a write with eta = 1 sets ``M(k) = v_hat``.

Chunkwise parallel form (DeltaNet's WY / UT representation with Gated DeltaNet's decay). In a chunk of C tokens
that starts at the state ``S``, with ``P[t, j] = prod_{r=j+1..t} alpha_r`` and ``G_t = prod_{r<=t} alpha_r``, the
written residuals ``u_t = eta_t (tau_t - alpha_t D_{t-1} kappa_t)`` solve a unit lower-triangular system
```
(I + A) U = diag(eta) (T - G * K S^T),     A[t, j] = eta_t P[t, j] <kappa_t, kappa_j>  for j < t
O         = G * X S^T + (P * tril(X K^T)) U
S_end     = G_C S + (P[C-1, :] * U)^T K
```
so every token's write sees the writes before it, as in the per-token rule: the chunk size changes speed, never
results. :func:`delta_rule_reference` is the per-token loop (the test oracle); :func:`delta_rule_chunked` the
fast path, built from :func:`plan_chunk`, :func:`write_chunk`, :func:`read_chunk` and :func:`commit_chunk`, which
callers whose keys depend on the state (the self-modifying memory) also use chunk by chunk.

Momentum (Titans) is not part of the rule: a second-order recurrence on top of the delta rule has no exact
UT form, and the exact in-chunk write is what makes the memory store (architecture.md, "No momentum" and "Exact in-chunk writes").

Nothing is detached: the outer optimiser trains keys, targets, gates and priors through the writes. Everything
also runs under ``torch.no_grad()``: the inner rule is written out, no autograd is needed to apply it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

Kind = Literal["linear", "mlp"]
KINDS = ("linear", "mlp")
EPS = 1e-6  # floor on |f(k)| for the mlp kind's key normalisation


# ---------------------------------------------------------------------------------------------- memory boxes


def features(prior: tuple[Tensor, ...], z: Tensor, kind: Kind) -> tuple[Tensor, Tensor]:
    """``z (..., T, d) -> (f(z) (..., T, k), base(z) (..., T, d))`` with ``M(z) = base(z) + D f(z)``."""
    if kind == "linear":
        (w0,) = prior  # (..., d, d)
        return z, z @ w0.mT
    if kind == "mlp":
        w1, w2 = prior  # (..., d, h), (..., h, d)
        f = F.silu(z @ w2.mT)  # (..., T, h)
        return f, z + f @ w1.mT
    raise ValueError(f"unknown memory kind {kind!r}; expected one of {list(KINDS)}")


def box_apply(prior: tuple[Tensor, ...], change: Tensor, z: Tensor, kind: Kind) -> Tensor:
    """Read a box at a fixed state: ``M(z) = base(z) + D f(z)``, ``z (..., T, d)``, ``change (..., d, k)``."""
    f, base = features(prior, z, kind)
    return base + f @ change.mT


def write_inputs(prior: tuple[Tensor, ...], k: Tensor, v_hat: Tensor, kind: Kind) -> tuple[Tensor, Tensor]:
    """Unit key ``kappa (..., T, k)`` and residual target ``tau (..., T, d)`` such that one write with eta = 1
    sets ``M(k) = v_hat`` (module docstring)."""
    return unit_write(*features(prior, k, kind), v_hat)


def unit_write(f: Tensor, base: Tensor, v_hat: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`write_inputs` from the key's features ``(f(k), base(k))``, when the caller has them."""
    norm = f.norm(dim=-1, keepdim=True).clamp_min(EPS)  # 1 for a linear box with unit keys
    return f / norm, (v_hat - base) / norm


# ---------------------------------------------------------------------------------------------- the rule


def delta_rule_reference(change: Tensor, key: Tensor, target: Tensor, query: Tensor | None, eta: Tensor,
                         alpha: Tensor) -> tuple[Tensor | None, Tensor]:
    """The gated delta rule token by token: the oracle for :func:`delta_rule_chunked`.

    ``change (..., dv, dk)``, ``key (..., T, dk)`` (unit rows), ``target (..., T, dv)``, ``query (..., T, dk)`` or
    None (write only), ``eta, alpha (..., T)``. Returns ``(o (..., T, dv) | None, change_T)``.
    """
    d, outs = change, []
    for t in range(key.shape[-2]):
        k_t, a_t, e_t = key[..., t, :], alpha[..., t, None, None], eta[..., t, None]  # (..., dk), (..., 1, 1), (..., 1)
        d = a_t * d  # retention decays the learned change, never the prior
        error = target[..., t, :] - (d @ k_t.unsqueeze(-1)).squeeze(-1)  # (..., dv)
        d = d + (e_t * error).unsqueeze(-1) * k_t.unsqueeze(-2)  # + eta (tau - D k) k^T
        if query is not None:
            outs.append((d @ query[..., t, :, None]).squeeze(-1))
    return (torch.stack(outs, dim=-2) if query is not None else None), d


class ChunkPlan(NamedTuple):
    """What a chunk's write needs besides the state: built from keys and gates alone."""

    eta: Tensor  # (..., C)     the inner rates
    mix: Tensor  # (..., C, C)  A[t, j] = eta_t P[t, j] <kappa_t, kappa_j> for j < t, 0 on and above the diagonal
    decay: Tensor  # (..., C)   G_t = prod_{r<=t} alpha_r
    keep: Tensor  # (..., C, C) P[t, j] = prod_{r=j+1..t} alpha_r for j <= t, 0 above the diagonal


def segment_products(x: Tensor) -> Tensor:
    """``x (..., C) -> P (..., C, C)``: ``P[t, s] = prod_{r=s+1..t} x_r`` for ``s <= t`` (1 on the diagonal), 0 above.

    A masked cumulative product: exact at x = 0 (no division, no log, whose gradient would be NaN there).
    """
    C = x.shape[-1]
    below = torch.ones(C, C, dtype=torch.bool, device=x.device).tril(-1)
    factors = torch.where(below, x.unsqueeze(-1), torch.ones((), dtype=x.dtype, device=x.device))  # [t, s] = x_t if t > s
    return factors.cumprod(dim=-2).tril()


def plan_chunk(key: Tensor, eta: Tensor, alpha: Tensor) -> ChunkPlan:
    """``key (..., C, dk)``, ``eta, alpha (..., C)`` -> the chunk's :class:`ChunkPlan` (any leading dims, e.g. N chunks)."""
    keep = segment_products(alpha)  # (..., C, C)
    mix = eta.unsqueeze(-1) * (keep.tril(-1) * (key @ key.mT))  # (..., C, C) strictly lower
    return ChunkPlan(eta, mix, alpha.cumprod(dim=-1), keep)


def write_chunk(change: Tensor, key: Tensor, target: Tensor, plan: ChunkPlan, key_state: Tensor | None = None
                ) -> Tensor:
    """The written residuals ``U (..., C, dv)`` of a chunk starting at ``change (..., dv, dk)``: row t is
    ``eta_t (tau_t - alpha_t D_{t-1} kappa_t)``, every earlier write of the chunk included: ``(I + A) U =
    diag(eta) (T - G * K S^T)``, one unit-triangular solve against the residuals (cheaper than forming
    ``(I + A)^-1`` when C > dv). ``key_state = key @ change.mT`` when the caller has it."""
    key_state = key @ change.mT if key_state is None else key_state
    residual = plan.eta.unsqueeze(-1) * (target - plan.decay.unsqueeze(-1) * key_state)
    return torch.linalg.solve_triangular(plan.mix, residual, upper=False, unitriangular=True)  # diagonal read as 1


def read_chunk(change: Tensor, query: Tensor, key: Tensor, written: Tensor, plan: ChunkPlan) -> Tensor:
    """Reads ``o_t = D_t x_t`` after each token's write: ``query (..., C, dk) -> (..., C, dv)``."""
    inside = plan.keep * (query @ key.mT)  # (..., C, C) lower triangular (keep is): writes j <= t
    return plan.decay.unsqueeze(-1) * (query @ change.mT) + inside @ written


def commit_chunk(change: Tensor, key: Tensor, written: Tensor, plan: ChunkPlan) -> Tensor:
    """The state at the chunk's end: ``G_C S + sum_j P[C-1, j] u_j kappa_j^T`` ``(..., dv, dk)``."""
    last = plan.keep[..., -1, :].unsqueeze(-1)  # (..., C, 1) weight of write j in the end state
    return plan.decay[..., -1, None, None] * change + (written * last).mT @ key


def delta_rule_chunked(change: Tensor, key: Tensor, target: Tensor, query: Tensor | None, eta: Tensor,
                       alpha: Tensor, chunk_size: int) -> tuple[Tensor | None, Tensor]:
    """Same contract and result as :func:`delta_rule_reference`, a loop over chunks of ``chunk_size`` tokens.

    The plans of all complete chunks are built in one batched pass before the loop (they do not depend on the
    state); per chunk remain three small matmuls, the triangular solve and the commit.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    T = key.shape[-2]
    outs, d = [], change
    for start, n, c in chunk_groups(T, chunk_size):
        def cut(x: Tensor) -> tuple[Tensor, ...]:  # (..., T, e) -> n x (..., c, e)
            return x.narrow(-2, start, n * c).unflatten(-2, (n, c)).unbind(-3)

        keys = key.narrow(-2, start, n * c).unflatten(-2, (n, c))  # (..., n, c, dk)
        plans = plan_chunk(keys, eta.narrow(-1, start, n * c).unflatten(-1, (n, c)),
                           alpha.narrow(-1, start, n * c).unflatten(-1, (n, c)))
        per_plan = [p.unbind(-3 if p.dim() == keys.dim() else -2) for p in plans]
        queries = cut(query) if query is not None else [None] * n
        for k_n, t_n, q_n, *parts in zip(keys.unbind(-3), cut(target), queries, *per_plan):
            plan = ChunkPlan(*parts)
            written = write_chunk(d, k_n, t_n, plan)
            if q_n is not None:
                outs.append(read_chunk(d, q_n, k_n, written, plan))
            d = commit_chunk(d, k_n, written, plan)
    return (torch.cat(outs, dim=-2) if query is not None else None), d


def chunk_groups(T: int, C: int) -> list[tuple[int, int, int]]:
    """(start, n_chunks, chunk_len): the complete chunks as one group, a last partial chunk as another."""
    n_full, rest = divmod(T, C)
    return [g for g in ((0, n_full, C), (n_full * C, 1, rest)) if g[1] and g[2]]


def chunk_pieces(T: int, C: int, offset: int = 0) -> list[tuple[int, int, int, int]]:
    """(start, n_pieces, piece_len, first): T tokens whose first continues a chunk of C holding `offset` tokens
    already, cut at chunk boundaries: the rest of that chunk, the complete chunks as one group, a last partial
    chunk; `first` is the number of tokens of its chunk before each piece."""
    head = min(T, C - offset) if offset else 0
    pieces = [(0, 1, head, offset)] if head else []
    return pieces + [(head + start, n, c, 0) for start, n, c in chunk_groups(T - head, C)]


# ---------------------------------------------------------------------------------------------- whole memories


def memory_reference(prior: tuple[Tensor, ...], change: Tensor, k: Tensor, v_hat: Tensor, q: Tensor | None,
                     eta: Tensor, alpha: Tensor, *, kind: Kind) -> tuple[Tensor | None, Tensor]:
    """A memory box with static keys and targets, token by token: ``M_t(q_t)`` read after each write.

    ``k, v_hat, q (..., T, d)``, ``eta, alpha (..., T)``; returns ``(o (..., T, d) | None, change_T)``.
    """
    kappa, tau = write_inputs(prior, k, v_hat, kind)
    fq, base_q = features(prior, q, kind) if q is not None else (None, None)
    o, d = delta_rule_reference(change, kappa, tau, fq, eta, alpha)
    return (None if o is None else base_q + o), d


def memory_chunked(prior: tuple[Tensor, ...], change: Tensor, k: Tensor, v_hat: Tensor, q: Tensor | None,
                   eta: Tensor, alpha: Tensor, chunk_size: int, *, kind: Kind) -> tuple[Tensor | None, Tensor]:
    """:func:`memory_reference` through :func:`delta_rule_chunked`: the same results at any ``chunk_size``."""
    kappa, tau = write_inputs(prior, k, v_hat, kind)
    fq, base_q = features(prior, q, kind) if q is not None else (None, None)
    o, d = delta_rule_chunked(change, kappa, tau, fq, eta, alpha, chunk_size)
    return (None if o is None else base_q + o), d
