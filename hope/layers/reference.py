"""Token-by-token oracles of the in-context memory layers: slow and obvious, for the tests only.

:func:`smt_reference` is :class:`hope.layers.smt.SelfModifyingMemory`, :func:`bank_reference` is
:class:`hope.layers.episodic.EpisodicBank` and :func:`cms_reference` is the fast level of
:class:`hope.layers.cms.ContinuumMemory` (surrogate objective), written from their stated semantics (the modules'
docstrings and docs/architecture.md, "The self-modifying memory" and "Episodic bank") as plain loops over tokens
(and, for the bank, over samples and slots), with every write, read, candidate and merge spelled out. They read
only the modules' parameters and hyperparameters and share none of the chunk-parallel machinery (no chunk pieces,
no triangular solve, no batched top-k merge, no index arithmetic over chunks), so a slip in that machinery that is
consistent with itself still shows up as a difference (`tests/test_layer_reference.py`, float64).

The return contracts are the modules' forward contracts. All run under autograd: outer gradients flow through
every input, parameter and state tensor.

Shared semantics (hope.layers.chunking): chunks are counted from the stream's start; a call's inputs are only the
new tokens, and ``offset`` (0 <= offset < chunk) of the current chunk's tokens were processed by earlier calls, so
token t of the call sits at position (offset + t) % chunk of its chunk. A memory carries its state inside the
current chunk (the SMT's running boxes and error sums, the bank's candidates so far) and commits at the chunk's
last token; the returned state is the one after the call's last token, wherever that is: splitting a stream into
calls anywhere gives what one call gives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hope.layers.cms import CMSState
from hope.layers.episodic import BankState
from hope.layers.smt import SMTState

SURPRISE_CLIP = 3.0  # the normalised surprise is clipped to +-3 standard deviations
WRITE_SHARPNESS = 4.0  # write_threshold: a token's rate is multiplied by sigmoid(4 (surprise - threshold))
KEY_EPS = 1e-6  # floor on |f(k)| in the memory boxes' key normalisation (kappa = f(k) / |f(k)|)
BANK_EPS = 1e-6  # a slot's read logit adds log(strength + BANK_EPS)
UNIT_EPS = 1e-6  # the bank's unit(): a vector of norm <= UNIT_EPS maps to 0 (K(0) = 0 at a fresh stream)


def _unit(v: Tensor) -> Tensor:
    """``v / |v|`` along the last dim; a (near-)zero vector maps to 0 (with a zero gradient)."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    live = norm > UNIT_EPS
    return torch.where(live, v / torch.where(live, norm, torch.ones_like(norm)), torch.zeros_like(v))


def _check_offset(offset: int, chunk: int) -> None:
    if not 0 <= offset < chunk:
        raise ValueError(f"offset ({offset}) must be in [0, {chunk})")


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


def smt_reference(module, x: Tensor, state: SMTState, offset: int, mem_gate, surprise_scale
                  ) -> tuple[Tensor, Tensor, SMTState]:
    """The self-modifying memory, one token at a time.

    ``x (B, L, C)`` the new inputs, ``state`` after the stream's earlier tokens, ``offset`` of which lie in the
    current chunk; returns the memory read of every token ``(B, L, C)``, the normalised surprise ``(B, L)`` (mean
    over heads) and the state after the last token. ``mem_gate`` and ``surprise_scale`` are floats or 0-dim
    tensors.

    Per token t (u = causal conv, window 4, of the inputs; u_{-1} and the first windows from the carried inputs):
        z_k = n(W_k u_{t-1}),  z_v = n(W_v x_t),  q_t = n(W_q u_t)       per head, n = unit vector
        eta_t = sigmoid(g_eta(u_t) + surprise_scale * s_t) * mem_gate * rate_box
        alpha_t = 1 - mem_gate * (1 - sigmoid(g_alpha(u_t)))
    at the boxes S = `change` at the start of token t's chunk:
        k = n(M_k^S(z_k)), v = n(M_v^S(z_v)) and each box's target v_hat_box = n(M_box^S(v))   (self-modifying)
        k = z_k, v_hat = z_v, one box                                                          (plain Titans)
        kappa = f(k) / |f(k)|,  tau = (v_hat - base(k)) / |f(k)|       per box
        err_t = |S_mem kappa_t - tau_t|^2  (the memory box's error at S), s_t = clip((err_t - mean) / std, +-3)
          with mean, mean square the running statistics once a chunk has been committed (seen = 1), else the
          prefix statistics of this chunk: (chunk_err sums + the errors of this call's tokens of the chunk up to
          t) / (position of t in its chunk + 1)
    then every box of the running state R: R <- alpha_t R;  R <- R + eta_t (tau_t - R kappa_t) kappa_t^T; the read
    o_t = M_mem^R(q_t) after token t's write; chunk_err += (err_t, err_t^2). At the chunk's last token it commits:
    S = R, the statistics take one EMA step (``error_decay``) towards the chunk's mean error and mean square error
    chunk_err / chunk (or are set to them in a fresh stream), seen = 1 and chunk_err = 0.
    """
    B, L, C = x.shape
    H, chunk = module.num_heads, module.chunk
    _check_offset(offset, chunk)
    d = C // H
    boxes = 3 if module.self_modifying else 1  # memory, keys, values
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

    floor = None if module.retention_floor is None else module.retention_floor.to(dt)  # (H,)
    cap = 1.0 if module.rate_cap is None else module.rate_cap.to(dt)  # (H,): a timescale head's rate ceiling
    start = [state.change[:, b].to(dt) for b in range(boxes)]  # S: the boxes at the current chunk's start
    running = [state.running[:, b].to(dt) for b in range(boxes)]  # R: after the chunk's writes so far
    mean, sq, seen = state.err_mean.to(dt), state.err_sq.to(dt), state.seen.to(dt)
    err_sum, err_sq_sum = state.chunk_err[..., 0].to(dt), state.chunk_err[..., 1].to(dt)  # (B, H) each
    reads, surprises = [], []
    for t in range(L):
        pos = (offset + t) % chunk  # token t's position in its chunk
        u_t, u_prev = u(t), u(t - 1)
        z_k = F.normalize(heads(u_prev @ w_k.T), dim=-1)
        z_v = F.normalize(heads(x[:, t].to(dt) @ w_v.T), dim=-1)
        q = F.normalize(heads(u_t @ w_q.T), dim=-1)
        g = u_t @ gate_w.T + gate_b  # (B, 2H): eta logits of the heads, then retention logits
        keep = torch.sigmoid(g[:, H:])  # (B, H)
        if module.retention_floor is not None:  # a timescale head's retention floor
            keep = floor + (1 - floor) * keep
        alpha = 1 - gate_m * (1 - keep)
        # Key and targets from the boxes at the chunk's start.
        if module.self_modifying:
            k = F.normalize(_box(module, 1, start[1], z_k, dt)[2], dim=-1)
            v = F.normalize(_box(module, 2, start[2], z_v, dt)[2], dim=-1)
            v_hat = [F.normalize(_box(module, b, start[b], v, dt)[2], dim=-1) for b in range(boxes)]
        else:
            k, v_hat = z_k, [z_v]
        kappa, tau = [], []
        for b in range(boxes):
            f, base, _ = _box(module, b, None, k, dt)
            norm = f.norm(dim=-1, keepdim=True).clamp_min(KEY_EPS)
            kappa.append(f / norm)
            tau.append((v_hat[b] - base) / norm)
        # The memory box's error at the chunk's start and the normalised surprise.
        miss = torch.einsum("bhik,bhk->bhi", start[0], kappa[0]) - tau[0]
        err = (miss * miss).sum(-1)  # (B, H)
        fresh = seen == 0
        m = torch.where(fresh, (err_sum + err) / (pos + 1), mean)
        m2 = torch.where(fresh, (err_sq_sum + err * err) / (pos + 1), sq)
        var = (m2 - m * m).clamp_min(0) + (0.01 * m) ** 2 + 1e-12  # floors: identical errors, zero errors
        s = ((err - m) / var.sqrt()).clamp(-SURPRISE_CLIP, SURPRISE_CLIP)  # (B, H)
        # Every box's write onto the running state; the memory box's read after it.
        eta = torch.sigmoid(g[:, :H] + scale * s) * gate_m * cap  # (B, H)
        if module.write_threshold is not None:  # sparse writes
            eta = eta * torch.sigmoid(WRITE_SHARPNESS * (s - module.write_threshold))
        for b in range(boxes):
            rate = (eta * rates[b])[..., None]  # (B, H, 1)
            decayed = alpha[..., None, None] * running[b]  # retention decays the change, never the prior
            error = tau[b] - torch.einsum("bhik,bhk->bhi", decayed, kappa[b])  # (B, H, d)
            running[b] = decayed + (rate * error)[..., :, None] * kappa[b][..., None, :]  # rank-1 write
        reads.append(_box(module, 0, running[0], q, dt)[2])  # (B, H, d)
        surprises.append(s.mean(-1))  # (B,)
        err_sum, err_sq_sum = err_sum + err, err_sq_sum + err * err
        if pos == chunk - 1:  # the chunk's last token: commit
            decay = module.error_decay
            chunk_mean, chunk_sq = err_sum / chunk, err_sq_sum / chunk
            mean = torch.where(fresh, chunk_mean, decay * mean + (1 - decay) * chunk_mean)
            sq = torch.where(fresh, chunk_sq, decay * sq + (1 - decay) * chunk_sq)
            seen = torch.ones_like(seen)
            err_sum, err_sq_sum = torch.zeros_like(err_sum), torch.zeros_like(err_sq_sum)
            start = list(running)

    o = torch.stack(reads, dim=2).to(x.dtype)  # (B, H, L, d)
    y = module.out_norm(o).transpose(1, 2).reshape(B, L, C)
    conv_state = torch.stack(inputs[L:L + 4], dim=1)  # the last four inputs
    new_state = SMTState(torch.stack(start, dim=1), torch.stack(running, dim=1), mean, sq, seen,
                         torch.stack([err_sum, err_sq_sum], dim=-1), conv_state)
    return module.proj(y), torch.stack(surprises, dim=1), new_state


# ---------------------------------------------------------------------------------------------------- the bank


def bank_reference(module, x: Tensor, surprise: Tensor, state: BankState, offset: int, mem_gate, surprise_scale
                   ) -> tuple[Tensor, BankState]:
    """The episodic bank, one sample, token and slot at a time.

    ``x (B, L, C)`` the new inputs, ``surprise (B, L)``, ``state`` after the stream's earlier tokens, ``offset`` of
    which lie in the current chunk; returns the read of every token ``(B, L, C)`` and the state after the last
    token. The returned slots are ordered by priority and the candidates by strength, highest first; fewer than
    `writes` candidates are padded with empty ones (all zeros: strength 0 = no candidate).

    Every token t is a write candidate: key n(K(x_{t-1})) (x_{-1} the carried `prev`), value V(x_t), strength
    sigmoid(score(x_t) + surprise_scale * surprise_t) * mem_gate, index its position in its chunk; the chunk keeps
    its `writes` strongest candidates so far. At the chunk's last token they join the slots (every old slot ages by
    chunk, a candidate is chunk - 1 - index bytes old), the `capacity` entries of highest priority
    strength * aging ** age stay, and the candidates start over. A token reads the bank left by the chunks before
    its own: each slot scores temperature * <n(Q(x_t)), key> + log(strength + eps); the `top_k` best and a learned
    null slot are soft-maxed, the read is the weighted sum of the chosen slots' values (the null slot's value is 0),
    then `out`.
    """
    B, L, C = x.shape
    chunk, cap, top_k, writes, aging = module.chunk, module.capacity, module.top_k, module.writes, module.aging
    _check_offset(offset, chunk)
    dt = torch.promote_types(x.dtype, torch.float32)
    gate_m = torch.as_tensor(mem_gate, dtype=dt, device=x.device)
    scale = torch.as_tensor(surprise_scale, dtype=dt, device=x.device)
    temperature = module.log_temperature.exp()
    null_logit = module.null_logit
    zero_vec, zero = torch.zeros(C, dtype=dt, device=x.device), torch.zeros((), dtype=dt, device=x.device)
    rows, new_states = [], []
    for s in range(B):
        # A slot: [key (C,), value (C,), strength (), age ()]; a candidate: [key, value, strength, index ()].
        slots = [[state.keys[s, i].to(dt), state.values[s, i].to(dt), state.strength[s, i].to(dt),
                  state.age[s, i].to(dt)] for i in range(cap)]
        candidates = [[state.cand_keys[s, i].to(dt), state.cand_values[s, i].to(dt), state.cand_strength[s, i].to(dt),
                       state.cand_index[s, i].to(dt)] for i in range(writes) if state.cand_strength[s, i] > 0]
        reads = []
        for t in range(L):
            pos = (offset + t) % chunk
            # The read: the bank of the chunks before this one.
            query = _unit(module.query(x[s, t]).to(dt))
            logits = [temperature * (query @ key) + torch.log(strength + BANK_EPS) for key, _, strength, _ in slots]
            best = sorted(range(cap), key=lambda i: logits[i].item(), reverse=True)[:top_k]
            weights = torch.softmax(torch.stack([logits[i] for i in best] + [null_logit.to(dt)]), dim=0)
            reads.append(sum(weights[j] * slots[i][1] for j, i in enumerate(best)))
            # The token as a candidate; the chunk keeps its `writes` strongest so far.
            before = x[s, t - 1] if t > 0 else state.prev[s].to(x.dtype)
            key = _unit(module.key(before).to(dt))
            value = module.value(x[s, t]).to(dt)
            strength = torch.sigmoid(module.write_score(x[s, t]).to(dt)[0] + scale * surprise[s, t].to(dt)) * gate_m
            candidates.append([key, value, strength, torch.tensor(float(pos), dtype=dt, device=x.device)])
            candidates = sorted(candidates, key=lambda c: c[2].item(), reverse=True)[:writes]
            if pos == chunk - 1:  # the chunk's last token: its candidates merge into the bank
                aged = [[k, v, st, age + chunk] for k, v, st, age in slots]
                joining = [[k, v, st, chunk - 1 - index] for k, v, st, index in candidates]
                pool = sorted(aged + joining, key=lambda c: (c[2] * aging ** c[3]).item(), reverse=True)
                slots, candidates = pool[:cap], []
        rows.append(torch.stack(reads))  # (L, C)
        padded = candidates + [[zero_vec, zero_vec, zero, zero]] * (writes - len(candidates))
        new_states.append([torch.stack([slot[j] for slot in slots]) for j in range(4)]
                          + [torch.stack([c[j] for c in padded]) for j in range(4)])
    read = module.out(torch.stack(rows).to(x.dtype))
    fields = [torch.stack([st[j] for st in new_states]) for j in range(8)]
    return read, BankState(*fields[:4], x[:, -1].to(dt), *fields[4:])


# ---------------------------------------------------------------------------------------------------- the CMS


def cms_reference(module, h: Tensor, state: CMSState, mem_gate) -> tuple[Tensor, CMSState]:
    """The fast CMS level (``kind: chain``, surrogate objective), one token at a time.

    ``h (B, L, C)`` the new inputs, ``state`` after the earlier tokens; returns the level's output ``(B, L, C)`` and
    its state after the last token. Per token, with n = unit vector and the mlp box
    ``M(z) = z + (W1_0 + D) silu(W2 z)``: key k_t = n(h_{t-1}) (k_0 = the carried `prev`), value v_t = n(h_t),
    kappa = f(k) / |f(k)|, tau = (v - base(k)) / |f(k)|; D <- D + eta (tau - D kappa) kappa^T with
    eta = sigmoid(eta_logit) * mem_gate (full retention); fast_t = (M^D(n(h_t)) - n(h_t)) * fast_gain after the
    write; out_t = fast_t + slow(h_t + fast_t).
    """
    B, L, C = h.shape
    dt = torch.promote_types(h.dtype, torch.float32)
    w1, w2 = module.prior_w1[0].to(dt), module.prior_w2[0].to(dt)  # (C, hid), (hid, C)
    eta = torch.sigmoid(module.eta_logit.to(dt)) * torch.as_tensor(mem_gate, dtype=dt, device=h.device)

    def features(z: Tensor) -> tuple[Tensor, Tensor]:  # z (B, C) -> f (B, hid), base (B, C)
        f = F.silu(z @ w2.T)
        return f, z + f @ w1.T

    change, key = state.change[:, 0].to(dt), state.prev.to(dt)  # (B, C, hid), (B, C)
    fast = []
    for t in range(L):
        value = F.normalize(h[:, t].to(dt), dim=-1)
        f, base = features(key)
        norm = f.norm(dim=-1, keepdim=True).clamp_min(KEY_EPS)
        kappa, tau = f / norm, (value - base) / norm
        error = tau - torch.einsum("bik,bk->bi", change, kappa)
        change = change + eta * error[:, :, None] * kappa[:, None, :]
        fq, base_q = features(value)
        fast.append(base_q + torch.einsum("bik,bk->bi", change, fq) - value)  # the read after the write
        key = value
    fast = (torch.stack(fast, dim=1) * module.fast_gain).to(h.dtype)
    return fast + module.slow(h + fast), CMSState(change[:, None], key)
