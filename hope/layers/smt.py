"""Self-modifying Titans memory (HOPE's long-term memory, Nested Learning §8; architecture.md, "The self-modifying memory").

Per head, three fast-weight memories ("boxes", `memory_kind: linear | mlp`, see `hope.ops.memory`) live in the
carried state as their learned change ``D = W - W_0`` from a meta-learned prior ``W_0``:
    M_k  produces keys      k_t = normalize(M_k(n(W_k u_{t-1})))     the context before token t
    M_v  produces values    v_t = normalize(M_v(n(W_v x_t)))         token t itself
    M    is the memory      o_t = M_t(q_t),  q_t = normalize(W_q u_t)   (q static: gap 2 of architecture.md)
with ``u`` the causal depthwise conv (window 4) of the input x, ``n`` a per-head normalisation and W_k, W_v
learned input projections. A write stores
"what followed this context", and the query is the context *including* token t, so a read recalls what followed
the same context before (an induction step). Keys and values are deliberately not taken from one window: when
both are maps of the same window (the first implementation), the memory learns the map k -> v_hat as a function
that fits every window alike, seen and unseen, and stores no pair (measured: after 1024 bytes, cos(M(k), v_hat)
0.997 on planted and on never-seen windows). Every box writes
with the delta rule (eq. 88 with the dot-product objective) on its own self-generated target
``v_hat_box = M_box(v_t)`` (a constant of the inner rule, so the target cannot collapse), gated by a
data-dependent inner rate eta in [0, 1] and retention alpha (which decays ``D``: forgetting returns to ``W_0``).

Chunks of `update_frequencies.mem_write` tokens: k, v and the targets are read from the boxes at the state left
by the previous chunk (gap 1: never a later one), then every box's write of the chunk is *exact*: token t's write
sees the writes of tokens < t of the same chunk (`hope.ops.memory`). So the chunk size is the rate at which the
boxes' *outputs* follow their own writes (the self-modification), never an approximation of the write itself.

With `self_modifying: false` the k/v boxes are replaced by static projections and the target is v itself:
plain Titans with the delta rule (ablations; the benchmark against titans-pytorch).

Surprise (architecture.md, "Surprise") is the memory box's error ``|M(k_t) - v_hat_t|^2`` at the chunk-start state (in the
units of the write, ``|kappa D^T - tau|^2``), normalised per token by running mean/variance statistics of those
per-token errors: an EMA over chunks (`error_decay`) once a chunk has been committed, and the causal prefix
statistics of the first chunk of a fresh stream before that, so the spread is O(1) from the first bytes. It
raises the inner rate inside its sigmoid (times `surprise_scale`) and drives the episodic bank's write gate.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from hope.layers.chunking import state_dtype
from hope.layers.roles import META, NO_DECAY, OWN_INIT, RESIDUAL_OUT
from hope.ops.memory import (KINDS, ChunkPlan, box_apply, chunk_pieces, commit_chunk, features, read_chunk,
                              segment_products, write_chunk, write_inputs)

SURPRISE_CLIP = 3.0  # normalised surprise is clipped to +-3 standard deviations
WRITE_SHARPNESS = 4.0  # `write_threshold`: a token writes at sigmoid(4 (s - threshold)) of its rate
RETENTION_INIT = 8.5  # alpha = sigmoid(8.5) = 1 - 2.0e-4: a half-life of ~3400 bytes at init (architecture.md, "Forgetting returns to the prior")
KV_RATE_INIT = -3.0  # the k/v boxes write at sigmoid(-3) = 0.047 of the memory's rate at init (learned)


class ChunkInputs(NamedTuple):
    """What one chunk's step needs besides the carried state; none of it reads the state (`_chunk_plans`)."""

    fz: Tensor  # (B, 2, H, c, f) the k/v boxes' prior features of their inputs (plain Titans: the inputs)
    bz: Tensor  # (B, 2, H, c, d) their prior outputs base(z)
    gate: Tensor  # (B, 1, H, c) the inner rate's logit
    keep: Tensor  # (B, 1, H, c, c) P[t, j] = prod_{r=j+1..t} alpha_r (lower triangle)
    keep_strict: Tensor  # (B, 1, H, c, c) the same below the diagonal only
    decay: Tensor  # (B, 1, H, c) G_t = prod_{r<=t} alpha_r
    fq: Tensor  # (B, 1, H, c, f) the memory box's read features of the queries
    base_q: Tensor  # (B, 1, H, c, d) its prior read


class SMTState(NamedTuple):
    """The SMT's carried state: the boxes at the current chunk's start (they give keys and targets) and after the
    writes of its tokens so far (they take the next write), so a call may end anywhere inside a chunk and the next
    one continues with no replay (architecture.md, "Execution on accelerators")."""

    change: Tensor  # (B, boxes, H, d, f) learned change W - W_0 of each box (memory, k, v) at the chunk's start
    running: Tensor  # (B, boxes, H, d, f) the same after the writes of the current chunk's tokens so far
    err_mean: Tensor  # (B, H) running mean of the per-token surprise error (EMA over committed chunks)
    err_sq: Tensor  # (B, H) running mean of its square
    seen: Tensor  # (B, H) 1 once a chunk of this stream has been committed (statistics exist), else 0
    chunk_err: Tensor  # (B, H, 2) sums of the error and its square over the current chunk's tokens so far
    conv: Tensor  # (B, 4, C) the last four inputs: the causal conv at t - 1 for the next call's first key


def timescale_bounds(timescales: tuple[float, ...], head_dim: int) -> tuple[Tensor, Tensor]:
    """Per-head retention floors and inner-rate ceilings ``(H,)`` for `memory_timescales` (bytes; 0: a free head).

    A head of timescale T can forget its writes neither by decay nor by overwriting within ~T bytes: its retention is
    at least 2^(-1/T) (a half-life >= T), and its inner rate at most d ln2 / T, because a delta-rule write at rate
    eta with a unit key removes ~eta / d of an association stored along a random direction of d, so a stored
    association survives ~d ln2 / eta writes at half strength (architecture.md, "Timescale heads and sparse writes").
    """
    t = torch.tensor(timescales, dtype=torch.float32)
    free = t == 0
    floor = torch.where(free, 0.0, torch.exp2(-1 / t.clamp_min(1)))
    cap = torch.where(free, 1.0, (head_dim * math.log(2) / t.clamp_min(1)).clamp(max=1.0))
    return floor, cap


class SelfModifyingMemory(nn.Module):
    # The priors and gates are meta-parameters without weight decay; W_q and the gates keep the init set below (the
    # model's default init would undo it); the read's output projection is a residual branch's (roles.py).
    PARAM_ROLES = {"prior_w": (META, NO_DECAY), "prior_w1": (META, NO_DECAY), "prior_w2": (META, NO_DECAY),
                   "gates.weight": (NO_DECAY, OWN_INIT), "gates.bias": (META, NO_DECAY, OWN_INIT),
                   "kv_rate_logit": (META, NO_DECAY), "q_proj.weight": (OWN_INIT,), "proj.weight": (RESIDUAL_OUT,)}

    def __init__(self, dim: int, num_heads: int, hidden_mult: float, chunk: int, *, kind: str = "linear",
                 self_modifying: bool = True, error_decay: float = 0.9, timescales: tuple[float, ...] = (),
                 write_threshold: float | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"memory kind must be one of {list(KINDS)}, got {kind!r}")
        self.num_heads, self.head_dim, self.kind = num_heads, dim // num_heads, kind
        self.chunk, self.self_modifying, self.error_decay = chunk, self_modifying, error_decay
        self.boxes = 3 if self_modifying else 1  # box order: memory, k, v
        d, H, n = self.head_dim, num_heads, self.boxes
        self.conv = nn.Conv1d(dim, dim, kernel_size=4, groups=dim)  # causal depthwise conv, window 4 (left cache)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        # Learned input projections of keys and values (the boxes, if any, sit on top): with the boxes alone as the
        # maps, per head, the self-modifying model trailed plain Titans by 0.13 nats after 150 steps of
        # configs/quick.yaml (0.951 vs 0.824); with them, see docs/architecture.md.
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=False)
        # Meta-learned priors W_0 (ordinary parameters, no weight decay, trained through the writes). The k and v
        # boxes start as different maps (architecture.md, "A write stores what followed a context": identical boxes gave k = v).
        if kind == "linear":
            eye = torch.eye(d).expand(H, d, d)
            rand = [torch.linalg.qr(torch.randn(H, d, d))[0] for _ in range(n - 1)]  # random rotations
            self.prior_w = nn.Parameter(torch.stack([eye, *rand]))  # (boxes, H, d, d): memory box = identity
            self.hidden = d
        else:
            self.hidden = h = max(1, int(round(hidden_mult * d)))
            w1 = torch.randn(n, H, d, h) / math.sqrt(h)
            w1[:2] *= 0.02 * math.sqrt(h)  # memory and k boxes ~ identity through their residual; the v box visibly not
            self.prior_w1 = nn.Parameter(w1)  # (boxes, H, d, h)
            self.prior_w2 = nn.Parameter(torch.randn(n, H, h, d) / math.sqrt(d))  # (boxes, H, h, d)
        # Data-dependent gates per head: eta (inner rate) and alpha (retention).
        self.gates = nn.Linear(dim, 2 * H)
        with torch.no_grad():
            nn.init.normal_(self.gates.weight, std=0.002)
            self.gates.bias.view(2, H)[0].fill_(0.0)  # eta = sigmoid(0) = 0.5
            self.gates.bias.view(2, H)[1].fill_(RETENTION_INIT)
        # The k and v boxes' rates relative to the memory's, per head. Keys and values that follow their own writes
        # at the memory's rate drift from one occurrence of a context to the next, and a lookup needs the same key
        # twice: at the memory's rate (eta ~ 0.5) the self-modifying model trailed plain Titans by 0.27 nats after
        # 150 steps of configs/quick.yaml (1.097 vs 0.824); the boxes start slow and learn how fast to move.
        self.kv_rate_logit = nn.Parameter(torch.full((n - 1, H), KV_RATE_INIT)) if self_modifying else None
        with torch.no_grad():  # W_q starts as the identity: q_t = n(u_t) (aligned with the k box: 0.951 vs 0.918 above)
            self.q_proj.weight.copy_(torch.eye(dim))
        self.out_norm = nn.RMSNorm(d)
        self.proj = nn.Linear(dim, dim, bias=False)
        # Timescale heads and sparse writes (architecture.md, "Timescale heads and sparse writes"): off by default.
        floors, caps = timescale_bounds(timescales, d) if timescales else (None, None)
        self.register_buffer("retention_floor", floors, persistent=False)  # (H,) or None
        self.register_buffer("rate_cap", caps, persistent=False)  # (H,) or None
        self.write_threshold = write_threshold
        self.recompute = False  # `recompute_memory`: recompute each chunk's step in backward (less memory, ~1.3x the step)
        self._compiled_step = None  # set by compile_step()

    def prior(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """The boxes' priors as ``(1, boxes, H, ...)`` tensors (broadcast over the batch) in the state dtype."""
        ws = (self.prior_w,) if self.kind == "linear" else (self.prior_w1, self.prior_w2)
        return tuple(w.to(dtype).unsqueeze(0) for w in ws)

    def init_state(self, batch: int, device: torch.device) -> SMTState:
        dt = state_dtype(self.q_proj.weight)
        zeros = torch.zeros(batch, self.num_heads, device=device, dtype=dt)
        change = torch.zeros(batch, self.boxes, self.num_heads, self.head_dim, self.hidden, device=device, dtype=dt)
        sums = torch.zeros(batch, self.num_heads, 2, device=device, dtype=dt)
        conv = torch.zeros(batch, 4, self.conv.in_channels, device=device, dtype=dt)
        return SMTState(change, change, zeros, zeros, zeros, sums, conv)

    def _heads(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def box_inputs(self, u_prev: Tensor, x: Tensor) -> Tensor:
        """``u_prev, x (B, L, C) -> (B, 2, H, L, d)``: the unit inputs of keys (from the context before t) and
        values (from t), through the learned projections."""
        w_k, w_v = self.kv_proj.weight.to(x.dtype).chunk(2, dim=0)
        return torch.stack([F.normalize(self._heads(F.linear(t, w)), dim=-1) for t, w in ((u_prev, w_k), (x, w_v))],
                           dim=1)

    def keys_targets(self, z: Tensor, change: Tensor, prior: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """Box inputs ``z (B, 2, H, c, d)`` at the state ``change`` -> keys ``k (B, 1, H, c, d)`` and every box's
        target ``v_hat (B, boxes, H, c, d)``: k, v from the k/v boxes and ``v_hat = M_box(v)`` (self-modifying), or
        the projections themselves and the target v (plain Titans). Targets are unit vectors."""
        return self._keys_targets(self._kv_features(z, prior), change, prior)

    def _kv_features(self, z: Tensor, prior: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The k/v boxes' prior features of their inputs, ``(f(z), base(z))`` with ``M(z) = base(z) + D f(z)``:
        they do not depend on the state, so a call computes them once for all its chunks (architecture.md,
        "Execution on accelerators").
        ``z (B, 2, H, ..., d)``; plain Titans has no k/v boxes: ``(z, z)``."""
        if not self.self_modifying:
            return z, z
        extra = (1,) * (z.dim() - 5)  # chunk axes of z, e.g. (B, 2, H, n, c, d): the prior broadcasts over them
        kv_prior = tuple(w.reshape(*w.shape[:3], *extra, *w.shape[3:]) for w in (w[:, 1:] for w in prior))
        return features(kv_prior, z, self.kind)

    def _keys_targets(self, kv_features: tuple[Tensor, Tensor], change: Tensor, prior: tuple[Tensor, ...]
                      ) -> tuple[Tensor, Tensor]:
        """:meth:`keys_targets` from the k/v boxes' prior features ``(f(z), base(z)) (B, 2, H, c, .)``."""
        f, base = kv_features
        if not self.self_modifying:
            return base.split(1, dim=1)
        k, v = F.normalize(base + f @ change[:, 1:].mT, dim=-1).split(1, dim=1)  # (B, 1, H, c, d) each
        # Unit targets: a box's own output as its target feeds back (a larger change gives larger targets, which
        # grow it further: a trained model reached inf after ~15K bytes of MQAR rows); the direction is what a
        # read uses (keys and values are normalised, the memory's read goes through out_norm).
        return k, F.normalize(box_apply(prior, change, v, self.kind), dim=-1)

    def retention(self, logit: Tensor, mem_gate: Tensor | float) -> Tensor:
        """Retention alpha of each token from its logit ``(B, H, L)``: at least a timescale head's floor; a
        mem_write gate of 0 freezes the memory at its init (no forgetting, alpha = 1)."""
        keep = torch.sigmoid(logit)
        if self.retention_floor is not None:
            keep = self.retention_floor[:, None] + (1 - self.retention_floor[:, None]) * keep
        return 1 - mem_gate * (1 - keep)

    def rate(self, logit: Tensor, surprise: Tensor, mem_gate: Tensor | float,
             surprise_scale: Tensor | float) -> Tensor:
        """Inner rate eta ``(B, 1, H, c)`` of each token from its logit and normalised surprise ``(B, 1, H, c)``:
        raised by surprise, under a timescale head's ceiling, and with `write_threshold` only where surprising."""
        eta = torch.sigmoid(logit + surprise_scale * surprise) * mem_gate
        if self.rate_cap is not None:
            eta = eta * self.rate_cap[:, None]
        if self.write_threshold is not None:  # sparse writes: only the surprising tokens write
            eta = eta * torch.sigmoid(WRITE_SHARPNESS * (surprise - self.write_threshold))
        return eta

    def _write_inputs(self, prior: tuple[Tensor, ...], k: Tensor, v_hat: Tensor) -> tuple[Tensor, Tensor]:
        """`hope.ops.memory.write_inputs`; a linear box's keys are unit already (kappa = k, tau = v_hat - W_0 k)."""
        if self.kind == "linear":
            return k, v_hat - k @ prior[0].mT
        return write_inputs(prior, k, v_hat, self.kind)

    def _surprise(self, err: Tensor, mean: Tensor, sq: Tensor, seen: Tensor, acc: Tensor, counts: Tensor) -> Tensor:
        """Normalised surprise ``(B, H, c)`` of per-token errors ``err (B, H, c)``: by the running statistics once
        they exist, else by the causal prefix statistics of the stream's first chunk (token t sees its chunk's
        tokens up to t: the sums ``acc (B, H, 2)`` of those before this call and ``counts`` = their number + 1..c)."""
        fresh = seen[..., None] == 0  # (B, H, 1)
        mean = torch.where(fresh, (acc[..., :1] + err.cumsum(-1)) / counts, mean[..., None])
        sq = torch.where(fresh, (acc[..., 1:] + err.pow(2).cumsum(-1)) / counts, sq[..., None])
        var = (sq - mean.pow(2)).clamp_min(0) + (0.01 * mean).pow(2) + 1e-12  # floors: identical errors, zeros
        return ((err - mean) / var.sqrt()).clamp(-SURPRISE_CLIP, SURPRISE_CLIP)

    def _statistics(self, acc: Tensor, mean: Tensor, sq: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        """EMA (over chunks, `error_decay`) of the per-token error and its square after a committed chunk, whose
        sums are ``acc (B, H, 2)``; a fresh stream starts from its first chunk's statistics."""
        m, s = (acc / self.chunk).unbind(-1)  # (B, H)
        d, fresh = self.error_decay, seen == 0
        return torch.where(fresh, m, d * mean + (1 - d) * m), torch.where(fresh, s, d * sq + (1 - d) * s)

    def compile_step(self, **compile_kwargs) -> None:
        """Compile the per-chunk step (:meth:`_chunk_step`) with torch.compile: one graph per chunk shape, reused by
        every chunk of every call, instead of a graph unrolled over all chunks (`compile: true`)."""
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self._chunk_step, dynamic=False, **compile_kwargs)

    def _chunk_plans(self, inputs: Tensor, gate: Tensor, alpha: Tensor, reads: tuple[Tensor, Tensor],
                     prior: tuple[Tensor, ...], start: int, n: int, c: int) -> list[ChunkInputs]:
        """Everything the `n` pieces of `c` tokens from `start` need that does not read the carried state, computed
        for all of them at once (architecture.md, "Execution on accelerators"): the k/v boxes' prior features, the
        retention products and decays (alpha only), the read features; then split per piece (`unbind`: one op, n
        views)."""
        def chunks(x: Tensor, dim: int) -> Tensor:  # (..., L, ...) at `dim` -> (..., n, c, ...)
            return x.narrow(dim, start, n * c).unflatten(dim, (n, c))

        z = chunks(inputs, -2)  # (B, 2, H, n, c, d)
        fz, bz = self._kv_features(z, prior)
        a = chunks(alpha, -1)[:, None]  # (B, 1, H, n, c)
        keep = segment_products(a)  # (B, 1, H, n, c, c)
        decay = a.cumprod(dim=-1)  # (B, 1, H, n, c)
        fq, base_q = (chunks(r, -2) for r in reads)  # (B, 1, H, n, c, f | d)
        gate = chunks(gate, -1)[:, None]  # (B, 1, H, n, c): the chunk axis where every other input has it
        per_chunk = [t.unbind(3) for t in (fz, bz, gate, keep, keep.tril(-1), decay, fq, base_q)]
        return [ChunkInputs(*parts) for parts in zip(*per_chunk)]

    @torch.compiler.disable  # a whole-model torch.compile stops here: the loop stays eager, its step is compiled
    def _scan(self, inputs: Tensor, gate: Tensor, alpha: Tensor, reads: tuple[Tensor, Tensor], stats: tuple,
              prior: tuple[Tensor, ...], gates: tuple, offset: int) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """The chunk loop: each piece's step at the state the pieces before it left.

        ``inputs (B, 2, H, L, d)``, ``gate, alpha (B, H, L)``, ``reads`` the memory box's read features
        ``(fq, base_q) (B, 1, H, L, f | d)``, ``stats`` the state's fields but the conv, with `offset` tokens of the
        current chunk already written. Pieces: the rest of that chunk, the whole chunks, a last partial one.
        Returns every token's read ``(B, H, L, d)``, the surprise ``(B, L)`` and the stats after the last token.
        """
        step = self._compiled_step or self._chunk_step
        if self.recompute and torch.is_grad_enabled():  # keep piece-boundary states only, recompute the rest
            step = functools.partial(torch.utils.checkpoint.checkpoint, step, use_reentrant=False)
        outs, surprises = [], []
        for start, n, c, first in chunk_pieces(gate.shape[-1], self.chunk, offset):
            counts = torch.arange(first + 1, first + c + 1, dtype=gate.dtype, device=gate.device)  # prefix sizes
            for chunk in self._chunk_plans(inputs, gate, alpha, reads, prior, start, n, c):
                out, surprise, stats = step(chunk, stats, prior, gates, counts, first + c == self.chunk)
                outs.append(out)
                surprises.append(surprise)
        return torch.cat(outs, dim=2), torch.cat(surprises, dim=1), stats

    def _chunk_step(self, chunk: ChunkInputs, stats: tuple, prior: tuple[Tensor, ...], gates: tuple, counts: Tensor,
                    completes: bool) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """One piece of c tokens of a chunk: keys and targets from the boxes at the chunk's start (gap 1), the
        surprise, every box's exact write (eq. 88; `hope.ops.memory`'s chunk form, solved against the residuals)
        onto the running state, and the memory's reads ``(B, H, c, d)`` after each token's write. Returns (reads,
        surprise ``(B, c)``, the stats after the piece: committed if it `completes` its chunk).
        ``gates = (mem_gate, surprise_scale, box_rate)``."""
        change, running, mean, sq, seen, acc = stats
        mem_gate, surprise_scale, box_rate = gates
        k, v_hat = self._keys_targets((chunk.fz, chunk.bz), change, prior)
        kappa, tau = self._write_inputs(prior, k, v_hat)  # (B, 1, H, c, f), (B, boxes, H, c, d)
        k_state = kappa @ running.mT  # (B, boxes, H, c, d): D kappa_t, every box at the running state
        k_start = k_state[:, :1] if running is change else kappa @ change[:, :1].mT  # the memory box at the start
        err = (k_start - tau[:, :1]).pow(2).sum(-1)[:, 0]  # (B, H, c) memory box error at the chunk-start state
        surprise = self._surprise(err, mean, sq, seen, acc, counts)
        eta = self.rate(chunk.gate, surprise[:, None], mem_gate, surprise_scale)  # (B, 1, H, c)
        eta = eta if box_rate is None else eta * box_rate  # (B, 1|boxes, H, c)
        plan = ChunkPlan(eta, eta.unsqueeze(-1) * (chunk.keep_strict * (kappa @ kappa.mT)), chunk.decay, chunk.keep)
        written = write_chunk(running, kappa, tau, plan, key_state=k_state)  # (B, boxes, H, c, d)
        out = (chunk.base_q + read_chunk(running[:, :1], chunk.fq, kappa, written[:, :1], plan))[:, 0]
        running = commit_chunk(running, kappa, written, plan)
        acc = acc + torch.stack([err.sum(-1), err.pow(2).sum(-1)], dim=-1)  # (B, H, 2)
        if completes:
            mean, sq = self._statistics(acc, mean, sq, seen)
            stats = (running, running, mean, sq, torch.ones_like(seen), torch.zeros_like(acc))
        else:
            stats = (change, running, mean, sq, seen, acc)
        return out, surprise.mean(1), stats

    def forward(self, x: Tensor, state: SMTState, offset: int, mem_gate: Tensor | float,
                surprise_scale: Tensor | float) -> tuple[Tensor, Tensor, SMTState]:
        """x (B, L, C) new inputs; `offset` of the current chunk's tokens were written by earlier calls (the stream
        position modulo the chunk size: chunks are counted from the stream's start).

        Returns the memory read of every token (B, L, C), the normalised surprise (B, L) and the state after the
        last token.
        """
        B, L, C = x.shape
        H, kind = self.num_heads, self.kind
        if not 0 <= offset < self.chunk:
            raise ValueError(f"offset ({offset}) must be in [0, {self.chunk})")
        fd = state_dtype(x)
        ext = torch.cat([state.conv.to(x.dtype), x], dim=1)  # (B, 4 + L, C)
        # Causal depthwise conv (window 4) at positions -1 .. L-1 as four shifted multiply-adds: the same sum as
        # self.conv, without the conv kernel's fixed cost (several times the arithmetic at one-token calls).
        wc = self.conv.weight[:, 0]  # (C, 4)
        u_ext = self.conv.bias + ext[:, :L + 1] * wc[:, 0]  # (B, 1 + L, C): sees 3 tokens of the past
        for j in range(1, 4):
            u_ext = u_ext + ext[:, j:j + L + 1] * wc[:, j]
        u_prev, u = u_ext[:, :-1], u_ext[:, 1:]  # (B, L, C): the context before token t, and including it
        with torch.autocast(device_type=x.device.type, enabled=False):  # fast weights, gates and keys stay fp32
            u, u_prev = u.to(fd), u_prev.to(fd)
            logits = self.gates(u).view(B, L, 2, H).permute(2, 0, 3, 1)  # (2, B, H, L)
            # mem_write gate 0 freezes the memory at its init: no writes (eta = 0) and no forgetting (alpha = 1)
            alpha = self.retention(logits[1], mem_gate)  # (B, H, L)
            q = F.normalize(self._heads(self.q_proj(u)), dim=-1)  # (B, H, L, d)
            inputs = self.box_inputs(u_prev, x.to(fd))  # (B, 2, H, L, d)
            prior = self.prior(fd)
            box_rate = None if self.kv_rate_logit is None else torch.cat(  # (1, boxes, H, 1): memory box at 1
                [torch.ones_like(self.kv_rate_logit[:1]), torch.sigmoid(self.kv_rate_logit)]).to(fd)[None, :, :, None]
            fq, base_q = features(tuple(w[:, :1] for w in prior), q[:, None], kind)  # q is static: read features once
            gates = (mem_gate, surprise_scale, box_rate)  # the model's 0-dim schedule tensors: no host value
            stats = state.change, state.running, state.err_mean, state.err_sq, state.seen, state.chunk_err
            o, surprise, stats = self._scan(inputs, logits[0], alpha, (fq, base_q), stats, prior, gates, offset)
        y = self.out_norm(o.to(x.dtype)).transpose(1, 2).reshape(B, L, C)
        return self.proj(y), surprise, SMTState(*stats, ext[:, -4:].to(fd))
