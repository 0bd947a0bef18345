"""Token-by-token oracles of the two in-context memory layers: slow and obvious, for the tests only.

:func:`smt_reference` is :class:`hope.layers.smt.SelfModifyingMemory` and :func:`bank_reference` is
:class:`hope.layers.episodic.EpisodicBank`, written from their stated semantics (the modules' docstrings and
docs/architecture.md, "The self-modifying memory" and "Episodic bank") as plain loops over chunks and tokens
(and, for the bank, over samples and slots), with every write, read and merge spelled out. They read only the
modules' parameters and hyperparameters and share none of the chunk-parallel machinery (no chunk plan, no
triangular solve, no batched top-k merge, no index arithmetic over padded chunks), so a slip in that machinery
that is consistent with itself still shows up as a difference (`tests/test_layer_reference.py`, float64).

The return contracts are the modules' forward contracts with every output computed (``n_out`` = all L tokens).
Both run under autograd: outer gradients flow through every input, parameter and state tensor.

Shared semantics (hope.layers.chunking): a memory commits only at the ends of chunks that lie within the first
``n_commit`` tokens (a multiple of the chunk size); a chunk after that is processed at the last committed state
and commits nothing, and the returned state is the one after the first ``n_commit`` tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hope.layers.episodic import BankState
from hope.layers.smt import SMTState

SURPRISE_CLIP = 3.0  # the normalised surprise is clipped to +-3 standard deviations
KEY_EPS = 1e-6  # floor on |f(k)| in the memory boxes' key normalisation (kappa = f(k) / |f(k)|)
BANK_EPS = 1e-6  # a slot's read logit adds log(strength + BANK_EPS)


def _unit(v: Tensor) -> Tensor:
    """``v / |v|`` along the last dim; a zero vector stays 0 (with a zero gradient)."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    live = norm > 1e-12
    return torch.where(live, v / torch.where(live, norm, torch.ones_like(norm)), torch.zeros_like(v))


# ---------------------------------------------------------------------------------------------------- the SMT


def _box(module, b: int, change: Tensor | None, z: Tensor, dt: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Box ``b`` (0 memory, 1 keys, 2 values) of every head on ``z (B, H, d)`` at the change ``D (B, H, d, f)``
    (None: D = 0): returns its features ``f(z) (B, H, f)``, its base ``base(z) (B, H, d)`` and its output
    ``M(z) = base(z) + D f(z) (B, H, d)``.

    linear: ``M(z) = (W_0 + D) z``; mlp: ``M(z) = z + (W1_0 + D) silu(W2 z)`` (hope.ops.memory, written out)."""
    if module.kind == "linear":
        w0 = module.prior_w[b].to(dt)  # (H, d, d)
        f = z
        base = torch.einsum("hij,bhj->bhi", w0, z)
    else:
        w1, w2 = module.prior_w1[b].to(dt), module.prior_w2[b].to(dt)  # (H, d, h), (H, h, d)
        f = F.silu(torch.einsum("hkj,bhj->bhk", w2, z))  # (B, H, h)
        base = z + torch.einsum("hik,bhk->bhi", w1, f)
    return f, base, base if change is None else base + torch.einsum("bhik,bhk->bhi", change, f)


def smt_reference(module, x: Tensor, state: SMTState, n_commit: int, mem_gate, surprise_scale
                  ) -> tuple[Tensor, Tensor, SMTState]:
    """The self-modifying memory, one token at a time.

    ``x (B, L, C)`` (the tail and the new inputs), ``state`` at its start; returns the memory read of every token
    ``(B, L, C)``, the normalised surprise ``(B, L)`` (mean over heads) and the state after ``n_commit`` tokens.
    ``mem_gate`` and ``surprise_scale`` are floats or 0-dim tensors.

    Per token t (u = causal conv, window 4, of x; u_{-1} from the carried inputs):
        z_k = n(W_k u_{t-1}),  z_v = n(W_v x_t),  q_t = n(W_q u_t)       per head, n = unit vector
        eta_t = sigmoid(g_eta(u_t) + surprise_scale * s_t) * mem_gate * rate_box
        alpha_t = 1 - mem_gate * (1 - sigmoid(g_alpha(u_t)))
    Per chunk, at the state S committed by the chunks before it:
        k = n(M_k^S(z_k)), v = n(M_v^S(z_v)) and each box's target v_hat_box = n(M_box^S(v))   (self-modifying)
        k = z_k, v_hat = z_v, one box                                                          (plain Titans)
        kappa = f(k) / |f(k)|,  tau = (v_hat - base(k)) / |f(k)|       per box
        err_t = |S_mem kappa_t - tau_t|^2  (the memory box's error at S), s_t = clip((err_t - mean) / std, +-3)
          with mean, mean square the running statistics once a chunk has been committed, else the prefix
          statistics of this chunk (tokens of the chunk up to t)
    then token by token, every box: D <- alpha_t D;  D <- D + eta_t (tau_t - D kappa_t) kappa_t^T; the read
    o_t = M_mem(q_t) after token t's write; at the end of a committed chunk D is the new S and the statistics
    take one EMA step (``error_decay``) towards the chunk's mean error and mean square error (or are set to them
    in a fresh stream).
    """
    B, L, C = x.shape
    H, chunk = module.num_heads, module.chunk
    d = C // H
    boxes = 3 if module.self_modifying else 1  # memory, keys, values
    if n_commit % chunk or n_commit > L:
        raise ValueError(f"n_commit ({n_commit}) must be a multiple of the chunk size {chunk} and <= {L}")
    dt = torch.promote_types(x.dtype, torch.float32)
    gate_m = torch.as_tensor(mem_gate, dtype=dt, device=x.device)
    scale = torch.as_tensor(surprise_scale, dtype=dt, device=x.device)

    def heads(v: Tensor) -> Tensor:  # (B, C) -> (B, H, d)
        return v.reshape(B, H, d)

    # Inputs in order: the four carried ones, then x. u_t sees inputs t-3 .. t.
    inputs = [state.conv[:, i].to(dt) for i in range(4)] + [x[:, t].to(dt) for t in range(L)]
    conv_w, conv_b = module.conv.weight[:, 0].to(dt), module.conv.bias.to(dt)  # (C, 4), (C,)

    def u(t: int) -> Tensor:  # the conv at token t (t = -1: the context before the first token)
        return conv_b + sum(conv_w[:, j] * inputs[t + 1 + j] for j in range(4))

    w_k, w_v = module.kv_proj.weight.to(dt).chunk(2, dim=0)
    w_q = module.q_proj.weight.to(dt)
    gate_w, gate_b = module.gates.weight.to(dt), module.gates.bias.to(dt)
    if module.self_modifying:
        rates = [torch.ones(H, dtype=dt, device=x.device)] + [torch.sigmoid(r.to(dt)) for r in module.kv_rate_logit]
    else:
        rates = [torch.ones(H, dtype=dt, device=x.device)]

    # The per-token quantities that do not depend on the memory's state.
    z_k, z_v, q, eta_logit, alpha = [], [], [], [], []
    for t in range(L):
        u_t, u_prev = u(t), u(t - 1)
        z_k.append(F.normalize(heads(u_prev @ w_k.T), dim=-1))
        z_v.append(F.normalize(heads(x[:, t].to(dt) @ w_v.T), dim=-1))
        q.append(F.normalize(heads(u_t @ w_q.T), dim=-1))
        g = u_t @ gate_w.T + gate_b  # (B, 2H): eta logits of the heads, then retention logits
        eta_logit.append(g[:, :H])
        alpha.append(1 - gate_m * (1 - torch.sigmoid(g[:, H:])))

    committed = [state.change[:, b].to(dt) for b in range(boxes)]  # S: the state left by committed chunks
    mean, sq, seen = state.err_mean.to(dt), state.err_sq.to(dt), state.seen.to(dt)
    reads, surprises = [], []
    for start in range(0, L, chunk):
        end = min(start + chunk, L)
        # Keys, targets and the memory's error, every token of the chunk at the state S.
        kappa, tau, err = [], [], []  # per token: [per box (B, H, f)], [per box (B, H, d)], (B, H)
        for t in range(start, end):
            if module.self_modifying:
                k = F.normalize(_box(module, 1, committed[1], z_k[t], dt)[2], dim=-1)
                v = F.normalize(_box(module, 2, committed[2], z_v[t], dt)[2], dim=-1)
                v_hat = [F.normalize(_box(module, b, committed[b], v, dt)[2], dim=-1) for b in range(boxes)]
            else:
                k, v_hat = z_k[t], [z_v[t]]
            kappa_t, tau_t = [], []
            for b in range(boxes):
                f, base, _ = _box(module, b, None, k, dt)
                norm = f.norm(dim=-1, keepdim=True).clamp_min(KEY_EPS)
                kappa_t.append(f / norm)
                tau_t.append((v_hat[b] - base) / norm)
            kappa.append(kappa_t)
            tau.append(tau_t)
            miss = torch.einsum("bhik,bhk->bhi", committed[0], kappa_t[0]) - tau_t[0]
            err.append((miss * miss).sum(-1))
        # Normalised surprise of each token.
        fresh = seen == 0
        s_chunk = []
        for i in range(end - start):
            prefix_mean = sum(err[: i + 1]) / (i + 1)
            prefix_sq = sum(e * e for e in err[: i + 1]) / (i + 1)
            m = torch.where(fresh, prefix_mean, mean)
            m2 = torch.where(fresh, prefix_sq, sq)
            var = (m2 - m * m).clamp_min(0) + (0.01 * m) ** 2 + 1e-12  # floors: identical errors, zero errors
            s_chunk.append(((err[i] - m) / var.sqrt()).clamp(-SURPRISE_CLIP, SURPRISE_CLIP))
        # Every box's writes, one token at a time; the memory box's read after each write.
        D = list(committed)
        for i, t in enumerate(range(start, end)):
            eta = torch.sigmoid(eta_logit[t] + scale * s_chunk[i]) * gate_m  # (B, H)
            for b in range(boxes):
                rate = (eta * rates[b])[..., None]  # (B, H, 1)
                kp, tg = kappa[i][b], tau[i][b]
                decayed = alpha[t][..., None, None] * D[b]  # retention decays the change, never the prior
                error = tg - torch.einsum("bhik,bhk->bhi", decayed, kp)  # (B, H, d)
                D[b] = decayed + (rate * error)[..., :, None] * kp[..., None, :]  # rank-1 write
            reads.append(_box(module, 0, D[0], q[t], dt)[2])  # (B, H, d)
            surprises.append(s_chunk[i].mean(-1))  # (B,)
        if end <= n_commit:  # commit: the chunk's end state and one step of the error statistics
            chunk_mean = sum(err) / len(err)
            chunk_sq = sum(e * e for e in err) / len(err)
            decay = module.error_decay
            mean = torch.where(fresh, chunk_mean, decay * mean + (1 - decay) * chunk_mean)
            sq = torch.where(fresh, chunk_sq, decay * sq + (1 - decay) * chunk_sq)
            seen = torch.ones_like(seen)
            committed = D

    o = torch.stack(reads, dim=2).to(x.dtype)  # (B, H, L, d)
    y = module.out_norm(o).transpose(1, 2).reshape(B, L, C)
    conv_state = torch.stack(inputs[n_commit:n_commit + 4], dim=1)  # the four inputs before token n_commit
    new_state = SMTState(torch.stack(committed, dim=1), mean, sq, seen, conv_state)
    return module.proj(y), torch.stack(surprises, dim=1), new_state


# ---------------------------------------------------------------------------------------------------- the bank


def bank_reference(module, x: Tensor, surprise: Tensor, state: BankState, n_commit: int, mem_gate, surprise_scale
                   ) -> tuple[Tensor, BankState]:
    """The episodic bank, one sample, chunk, token and slot at a time.

    ``x (B, L, C)``, ``surprise (B, L)``, ``state`` at the start; returns the read of every token ``(B, L, C)`` and
    the state after ``n_commit`` tokens. The returned slots are ordered by priority, highest first.

    A token t of a committed chunk is a write candidate: key n(K(x_{t-1})) (x_{-1} the carried `prev`), value
    V(x_t), strength sigmoid(score(x_t) + surprise_scale * surprise_t) * mem_gate. At the end of each committed
    chunk its `writes` strongest candidates join the slots (every old slot ages by the chunk's length, a candidate
    is (chunk - 1 - its index in the chunk) bytes old), and the `capacity` entries of highest priority
    strength * aging ** age stay. A token reads the bank left by the chunks before its own: each slot scores
    temperature * <n(Q(x_t)), key> + log(strength + eps); the `top_k` best and a learned null slot are
    soft-maxed, the read is the weighted sum of the chosen slots' values (the null slot's value is 0), then `out`.
    """
    B, L, C = x.shape
    chunk, cap, top_k, writes, aging = module.chunk, module.capacity, module.top_k, module.writes, module.aging
    if n_commit % chunk or n_commit > L:
        raise ValueError(f"n_commit ({n_commit}) must be a multiple of the chunk size {chunk} and <= {L}")
    dt = torch.promote_types(x.dtype, torch.float32)
    gate_m = torch.as_tensor(mem_gate, dtype=dt, device=x.device)
    scale = torch.as_tensor(surprise_scale, dtype=dt, device=x.device)
    temperature = module.log_temperature.exp()
    null_logit = module.null_logit
    rows, new_states = [], []
    for s in range(B):
        # A slot: [key (C,), value (C,), strength (), age ()].
        slots = [[state.keys[s, i].to(dt), state.values[s, i].to(dt), state.strength[s, i].to(dt),
                  state.age[s, i].to(dt)] for i in range(cap)]
        reads = []
        for start in range(0, L, chunk):
            end = min(start + chunk, L)
            for t in range(start, end):  # reads: the bank of the chunks before this one
                query = _unit(module.query(x[s, t]).to(dt))
                logits = [temperature * (query @ key) + torch.log(strength + BANK_EPS)
                          for key, _, strength, _ in slots]
                best = sorted(range(cap), key=lambda i: logits[i].item(), reverse=True)[:top_k]
                weights = torch.softmax(torch.stack([logits[i] for i in best] + [null_logit.to(dt)]), dim=0)
                reads.append(sum(weights[j] * slots[i][1] for j, i in enumerate(best)))
            if end <= n_commit:  # a committed chunk writes its strongest candidates
                candidates = []
                for t in range(start, end):
                    before = x[s, t - 1] if t > 0 else state.prev[s].to(x.dtype)
                    key = _unit(module.key(before).to(dt))
                    value = module.value(x[s, t]).to(dt)
                    score = module.write_score(x[s, t]).to(dt)[0] + scale * surprise[s, t].to(dt)
                    strength = torch.sigmoid(score) * gate_m
                    age = torch.tensor(float(end - 1 - t), dtype=dt, device=x.device)
                    candidates.append([key, value, strength, age])
                candidates.sort(key=lambda c: c[2].item(), reverse=True)
                for slot in slots:
                    slot[3] = slot[3] + chunk
                pool = slots + candidates[:writes]
                pool.sort(key=lambda c: (c[2] * aging ** c[3]).item(), reverse=True)
                slots = pool[:cap]
        rows.append(torch.stack(reads))  # (L, C)
        new_states.append([torch.stack([slot[j] for slot in slots]) for j in range(4)])
    read = module.out(torch.stack(rows).to(x.dtype))
    keys, values, strength, age = (torch.stack([st[j] for st in new_states]) for j in range(4))
    prev = x[:, n_commit - 1].to(dt) if n_commit > 0 else state.prev.to(dt)
    return read, BankState(keys, values, strength, age, prev)
