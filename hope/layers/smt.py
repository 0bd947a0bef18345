"""Self-modifying Titans memory (HOPE's long-term memory, Nested Learning §8 / architecture.md §3).

Per head, three fast-weight MLP memories ("boxes") live in the carried state:
    M_k  produces keys      k_t = normalize(M_k(x_t))
    M_v  produces values    v_t = M_v(x_t)
    M    is the memory      o_t = M_t(q_t),  q_t = normalize(x_t W_q)   (q static: gap 2 of architecture.md)
Each box writes with delta gradient descent on its own self-generated target v_hat = M_box(v_t) (eq. 88,
inner stop-gradient by construction of the hand-written gradient in `hope.ops.memory`), gated by
data-dependent eta (inner lr), alpha (retention) and beta (Titans momentum). Within a chunk of
`update_frequencies.mem_write` tokens all boxes take their gradients at the state left by the previous chunk
(gap 1: never the end of the current chunk), and k, v are read from M_k, M_v at that same state.

With `self_modifying: false` the k/v boxes are replaced by static projections and the memory's target is v
itself: this is plain Titans (used by the ablations and the benchmark against titans-pytorch).

Surprise (architecture.md §4) is the memory's associative error ||M(k_t) - v_hat_t||^2 at the chunk-start
state, normalised by running mean/variance (EMA with `error_decay`, updated once per committed chunk) and
multiplied by `surprise_scale`; it raises the inner learning rate inside its sigmoid and is returned for the
episodic bank's write gate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.chunking import state_dtype
from hope.ops.memory import commit_chunk, commit_rows, decays_per_chunk, memory_apply, read_chunk, write_factors

ETA_MAX = 0.5  # bound on the inner lr: with unit keys and the eq.-88 preconditioner the erase term is doubled (gap 4)
SURPRISE_CLIP = 3.0  # normalised surprise is clipped to +-3 standard deviations


class SelfModifyingMemory(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden_mult: float, chunk: int, *, momentum: bool = True,
                 self_modifying: bool = True, error_decay: float = 0.9):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.hidden = max(1, int(round(hidden_mult * self.head_dim)))
        self.chunk, self.momentum, self.self_modifying, self.error_decay = chunk, momentum, self_modifying, error_decay
        self.boxes = 3 if self_modifying else 1  # box order along the head axis: memory, k, v
        d, h, H = self.head_dim, self.hidden, num_heads
        self.conv = nn.Conv1d(dim, dim, kernel_size=4, groups=dim)  # causal depthwise conv, window 4 (left cache)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = None if self_modifying else nn.Linear(dim, 2 * dim, bias=False)
        # Meta-learned initial states M_box,0 (ordinary parameters, trained through the writes).
        self.init_w1 = nn.Parameter(torch.randn(self.boxes * H, d, h) * 0.02)  # (3H, d, h)
        self.init_w2 = nn.Parameter(torch.randn(self.boxes * H, h, d) / math.sqrt(d))  # (3H, h, d)
        # Data-dependent gates per head: eta (inner lr), alpha (retention), beta (momentum decay).
        self.gates = nn.Linear(dim, 3 * H)
        self.gates.zero_init = True  # keep the gate init below (the shell's normal init would undo it)
        with torch.no_grad():
            nn.init.normal_(self.gates.weight, std=0.002)
            self.gates.bias.view(3, H)[0].fill_(0.0)  # eta = 0.5 * sigmoid(0) = 0.25 at init
            self.gates.bias.view(3, H)[1].fill_(5.0)  # alpha ~ 0.993: keep almost everything
            self.gates.bias.view(3, H)[2].fill_(0.0)  # beta = 0.5
        self.out_norm = nn.RMSNorm(d)
        self.proj = nn.Linear(dim, dim, bias=False)

    # ------------------------------------------------------------------ state
    def init_state(self, batch: int, device: torch.device) -> dict:
        w1 = self.init_w1.to(state_dtype(self.init_w1)).unsqueeze(0).expand(batch, -1, -1, -1)  # (B, 3H, d, h), fp32 even under autocast
        w2 = self.init_w2.to(state_dtype(self.init_w2)).unsqueeze(0).expand(batch, -1, -1, -1)
        mom = (torch.zeros_like(w1), torch.zeros_like(w2)) if self.momentum else None
        zeros = torch.zeros(batch, self.num_heads, device=device, dtype=state_dtype(self.init_w1))
        return {"w": (w1.to(device), w2.to(device)), "mom": mom, "err_mean": zeros, "err_var": zeros + 1.0,
                "conv": torch.zeros(batch, 3, self.conv.in_channels, device=device, dtype=state_dtype(self.init_w1))}

    def eta_bound(self, beta: torch.Tensor) -> torch.Tensor | float:
        """Largest inner lr that keeps a chunk's write stable (gap 4 of architecture.md).

        With unit keys one delta step is stable for eta <= ETA_MAX. Inside a chunk all C gradients are taken at
        the same state, so C similar keys add up to C steps in one direction: bound the per-token rate by
        ETA_MAX / C (C = 1 is the exact rule with the full bound). Momentum accumulates a geometric series of
        steps, eta / (1 - beta) in the steady state, so the bound is multiplied by (1 - beta).
        """
        bound = ETA_MAX / self.chunk
        return bound * (1 - beta) if self.momentum else bound

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, state: dict, n_commit: int, mem_gate: float, surprise_scale: float,
                n_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """x (B, L, C): the uncommitted tail followed by new inputs; state at the tail's start.

        Returns the memory read of the last `n_out` tokens (B, n_out, C) (default all L: the caller discards the
        replayed tail's reads, so they are not computed), the normalised surprise (B, L) and the state after
        the first `n_commit` tokens (a multiple of the chunk size).
        """
        B, L, C = x.shape
        n_out = L if n_out is None else n_out
        H, boxes, chunk = self.num_heads, self.boxes, self.chunk
        if n_commit % chunk or n_commit > L:
            raise ValueError(f"n_commit ({n_commit}) must be a multiple of the chunk size {chunk} and <= {L}")
        fd = state_dtype(x)
        ext = torch.cat([state["conv"].to(x.dtype), x], dim=1)  # (B, 3 + L, C)
        # Causal depthwise conv (window 4) as four shifted multiply-adds: the same sum as self.conv, without the
        # conv kernel's fixed cost (several times the arithmetic at generation's one-token calls).
        wc = self.conv.weight[:, 0]  # (C, 4)
        u = self.conv.bias + ext[:, :L] * wc[:, 0]  # (B, L, C): causal, sees 3 tokens of the past
        for j in range(1, 4):
            u = u + ext[:, j:j + L] * wc[:, j]
        q = F.normalize(self._heads(self.q_proj(u)).to(fd), dim=-1)  # (B, H, L, d)
        if self.kv_proj is None:
            z = F.normalize(self._heads(u).to(fd), dim=-1)  # (B, H, L, d): unit inputs keep the delta rule stable
            streams = (z.split(chunk, dim=2),)
        else:
            k_all, v_all = (self._heads(t).to(fd) for t in self.kv_proj(u).chunk(2, dim=-1))  # static (plain Titans)
            streams = (F.normalize(k_all, dim=-1).split(chunk, dim=2), F.normalize(v_all, dim=-1).split(chunk, dim=2))
        logits = self.gates(u).to(fd).view(B, L, 3, H).permute(2, 0, 3, 1)  # (3, B, H, L)
        # mem_write gate 0 freezes the memory at its init: no writes (eta = 0) and no forgetting (alpha = 1)
        eta_logit, beta = logits[0], torch.sigmoid(logits[2])
        alpha = 1 - mem_gate * (1 - torch.sigmoid(logits[1]))
        bound = self.eta_bound(beta)  # (B, H, L) with momentum, else a float

        # Boxes as the leading axis inside the loop: (B, boxes*H, ...) -> (boxes, B, H, ...), copied once per call,
        # so that the memory box [:1] and the k/v boxes [1:] are contiguous blocks whose (box, B, H) batch dims
        # flatten into one bmm batch without a copy of the state. k, v, q and the gates are shared by the boxes
        # and broadcast over that axis (size 1).
        def unflat(ws):
            return None if ws is None else tuple(t.view(B, boxes, H, *t.shape[2:]).transpose(0, 1).contiguous() for t in ws)

        w, mom = unflat(state["w"]), unflat(state["mom"])
        err_mean, err_var = state["err_mean"], state["err_var"]
        outs, surprises = [], []
        with torch.autocast(device_type=x.device.type, enabled=False):  # fast weights stay fp32
            decays = decays_per_chunk(alpha.unsqueeze(0), beta.unsqueeze(0) if self.momentum else None, chunk)
            gates = (eta_logit.split(chunk, dim=2), bound.split(chunk, dim=2) if self.momentum else None)
            for n, (d_n, q_n) in enumerate(zip(decays, q.split(chunk, dim=2))):
                if self.kv_proj is None:
                    # k, v from the k/v boxes at the chunk-start state; the memory box's state and momentum are
                    # split off as views so that no copy of the state is read or written for them.
                    (w1m, w1kv), (w2m, w2kv) = (t.split([1, boxes - 1], dim=0) for t in w)
                    kv = F.normalize(memory_apply((w1kv, w2kv), streams[0][n], "mlp"), dim=-1)  # (2, B, H, c, d)
                    k, v = kv.unsqueeze(1).unbind(0)  # 2 x (1, B, H, c, d)
                else:
                    (w1m, w2m), k, v = w, streams[0][n].unsqueeze(0), streams[1][n].unsqueeze(0)
                # All boxes' gradient factors at the chunk-start state, and the error e = M(k) - v_hat of each box;
                # the memory box's squared error is the momentary surprise (no second pass over the memory).
                factors, e, _ = write_factors(w, k, v, kind="mlp", self_target=self.self_modifying, precondition=True)
                err = e[0].pow(2).sum(-1)  # (B, H, c)
                surprise = ((err - err_mean[..., None]) / (err_var[..., None] + 1e-6).sqrt()).clamp(-SURPRISE_CLIP, SURPRISE_CLIP)
                b_n = gates[1][n] if self.momentum else bound
                eta = (b_n * torch.sigmoid(gates[0][n] + surprise_scale * surprise) * mem_gate).unsqueeze(0)  # (1, B, H, c)
                if (n + 1) * chunk > L - n_out:  # a chunk with tokens whose read is wanted
                    # Read of the memory box only (the k/v boxes' reads would be thrown away).
                    coef = d_n.keep * -eta.unsqueeze(-2)  # (1, B, H, c, c)
                    mem_factors = tuple((l[:1], r[:1]) for l, r in factors)
                    mem_mom = None if mom is None else tuple(t[:1] for t in mom)
                    o = read_chunk((w1m, w2m), mem_mom, q_n.unsqueeze(0), mem_factors, d_n.decay, d_n.carry, coef,
                                   "mlp")
                    outs.append(o[0])  # (B, H, c, d)
                surprises.append(surprise.mean(1))  # (B, c)
                if (n + 1) * chunk <= n_commit:
                    w, mom = commit_chunk(w, mom, factors, commit_rows(d_n, eta, chunk - 1))
                    m = err.mean(-1)  # (B, H)
                    err_var = self.error_decay * err_var + (1 - self.error_decay) * (m - err_mean).pow(2)
                    err_mean = self.error_decay * err_mean + (1 - self.error_decay) * m
        o = torch.cat(outs, dim=2)[:, :, -n_out:]  # (B, H, n_out, d)
        y = self.out_norm(o.to(x.dtype)).transpose(1, 2).reshape(B, n_out, C)
        flat = lambda ws: None if ws is None else tuple(t.transpose(0, 1).reshape(B, boxes * H, *t.shape[3:]) for t in ws)  # noqa: E731
        new_state = {"w": flat(w), "mom": flat(mom), "err_mean": err_mean, "err_var": err_var,
                     "conv": ext[:, n_commit:n_commit + 3].to(fd)}
        return self.proj(y), torch.cat(surprises, dim=1), new_state
