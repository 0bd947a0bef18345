"""Invariants of the assembled language models (architecture.md, "The block", "Streaming" and "Invariants under test"), for HOPE and the baseline.

Tiny float64 models. Several HOPE components start silent at init (the episodic bank's output projection is
zero, the fast CMS level's gain is zero), so the invariants that must hold "with every component on" first
randomise every weight with a seeded generator (`tiny_model(randomise=True)`), and
`test_randomised_hope_uses_every_component` checks that this really switches the bank, the fast CMS level and
the SMT on.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from hope.config import Config, Schedule, UpdateFrequencies, validate
from hope.models import build_model, count_params, matched_baseline_config
from hope.models.lm import LanguageModel

DT = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)
MODEL_TYPES = ("hope", "baseline")
# The invariants every model must keep (causality, streaming, isolation) also run on HOPE's other memory box and
# on the bank keyed by the block input alone.
VARIANTS = {"hope": ("hope", {}), "hope-mlp-memory": ("hope", {"memory_kind": "mlp"}),
            "hope-block-bank": ("hope", {"bank_input": "block"}), "baseline": ("baseline", {})}
MEM_WRITE, ERROR_UPDATE = 4, 8  # SMT/bank chunk and fast-CMS chunk of the tiny models
SEQ_LEN = 32
LONG = 75  # > seq_len (streaming segments) and not a multiple of any chunk size


# ----------------------------------------------------------------------------------------------- helpers


def tiny_config(model_type: str = "hope", **overrides: Any) -> Config:
    base = dict(model_type=model_type, dim=32, num_heads=2, depth=2, seq_len=SEQ_LEN, max_len=SEQ_LEN, attn_window=8,
                memory_capacity=8, top_k=2,
                update_frequencies=UpdateFrequencies(mem_write=MEM_WRITE, error_update=ERROR_UPDATE, optimizer_step=2))
    base.update(overrides)
    cfg = Config(**base)
    validate(cfg)
    return cfg


# Gate heads and scalar temperatures keep their designed init: random biases would make eta/alpha arbitrary
# (alpha ~ 0.5 forgets everything within a chunk) and the comparison meaningless.
_KEEP_INIT = ("gates.bias", "log_temperature", "null_logit", "eta_logit")


def randomise_(model: LanguageModel, seed: int = 0, std: float = 0.1) -> LanguageModel:
    """Add seeded N(0, std) noise to every parameter except the gate biases and scalars, so that components
    that are zero at init (bank output, fast CMS gain) contribute. Norm weights stay near 1, the memory
    initial states near their scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(_KEEP_INIT):
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def tiny_model(model_type: str = "hope", *, randomise: bool = True, seed: int = 0, dtype: torch.dtype = DT,
               **overrides: Any) -> LanguageModel:
    torch.manual_seed(seed)
    model = build_model(tiny_config(model_type, **overrides)).to(dtype).eval()
    return randomise_(model, seed) if randomise else model


def random_bytes(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) for every tensor / int / None in a nested state of NamedTuples, dicts, lists and tuples."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        for key, value in zip(tree._fields, tree):
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, tree


def assert_states_close(a: Any, b: Any, **tol: float) -> None:
    la, lb = list(leaves(a)), list(leaves(b))
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.shape == y.shape and x.dtype == y.dtype, path
            torch.testing.assert_close(x, y, **tol, msg=lambda m, path=path: f"{path}: {m}")
        else:
            assert x == y, path


def memory_leaves(state: Any, component: str) -> list[tuple[str, torch.Tensor]]:
    """The in-context memory of every layer: component 'smt' (the boxes' fast change), 'cms' (the fast level's
    change) or 'bank' (keys, values, strengths)."""
    out = []
    fields = {"smt": ("change",), "cms": ("change",), "bank": ("keys", "values", "strength")}[component]
    for i, layer in enumerate(state.layers):
        sub = getattr(layer, component)
        out += [(f"layers[{i}].{component}.{f}", getattr(sub, f)) for f in fields]
    assert out, f"no {component} state"
    return out


def same_memory(a: Any, b: Any, component: str) -> bool:
    return all(torch.equal(x, y) for (_, x), (_, y) in zip(memory_leaves(a, component), memory_leaves(b, component)))


# ------------------------------------------------------------------------------------ components are on


def test_randomised_hope_uses_every_component() -> None:
    """Zeroing the output of the bank, the fast CMS level, the SMT or attention changes the logits, and the
    bank holds written slots: the invariants below really cover every component."""
    model = tiny_model("hope")
    idx = random_bytes(2, 40)
    with torch.no_grad():
        ref, _, state = model(idx)
        assert all((layer.bank.strength > 0).any() for layer in state.layers)
        for suffix in ("bank.out.weight", "cms.fast_gain", "smt.proj.weight", "attn.proj.weight"):
            ablated = copy.deepcopy(model)
            for name, p in ablated.named_parameters():
                if name.endswith(suffix):
                    p.zero_()
            logits, _, _ = ablated(idx)
            assert (logits - ref).abs().max() > 1e-4, f"{suffix} does not contribute"


# ------------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(variant: str) -> None:
    """Perturbing the bytes after t leaves the logits at <= t bit-identical (causality), on and off chunk and
    segment boundaries, over a stream longer than seq_len (several segments, carried state)."""
    model_type, overrides = VARIANTS[variant]
    model = tiny_model(model_type, **overrides)
    idx = random_bytes(2, LONG)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ref, _, _ = model(idx)
        for t in (0, 5, 13, 31, 32, 42, 63, 70):
            other = idx.clone()
            other[:, t + 1:] = (other[:, t + 1:] + torch.randint(1, 256, other[:, t + 1:].shape, generator=g)) % 256
            logits, _, _ = model(other)
            assert torch.equal(logits[:, : t + 1], ref[:, : t + 1]), f"future bytes leak into position <= {t}"
            assert not torch.equal(logits[:, t + 1:], ref[:, t + 1:])  # the perturbation is seen downstream


# ------------------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pieces", [(1, 3, 17), (5, 32, 2)], ids=["1-3-17-rest", "5-32-2-rest"])
def test_streaming_equals_one_pass(variant: str, pieces: tuple[int, ...]) -> None:
    """One call over LONG tokens == uneven pieces with the returned state carried (architecture.md, "Streaming"):
    logits and the final state (fast weights at the chunk's start and after its writes so far, the bank and its
    chunk's candidates, caches, position) agree."""
    model_type, overrides = VARIANTS[variant]
    state = assert_streaming_equals_one_pass(tiny_model(model_type, **overrides), pieces)
    assert state.pos == LONG
    if model_type == "hope":  # the stream ends inside a memory chunk: its writes so far are carried, not replayed
        assert LONG % MEM_WRITE and all(not torch.equal(layer.smt.running, layer.smt.change) for layer in state.layers)


def assert_streaming_equals_one_pass(model: torch.nn.Module, pieces: tuple[int, ...]) -> dict:
    """Feeds LONG random bytes as `pieces` + the rest with the state carried, checks logits and final state
    against one call, and returns the streamed final state."""
    idx = random_bytes(2, LONG)
    with torch.no_grad():
        ref, _, ref_state = model(idx)
        state, outs, start = None, [], 0
        for n in (*pieces, LONG - sum(pieces)):
            logits, _, state = model(idx[:, start:start + n], state=state)
            outs.append(logits)
            start += n
    torch.testing.assert_close(torch.cat(outs, dim=1), ref, **TOL)
    assert_states_close(state, ref_state, **TOL)
    return state


def test_token_by_token_cadence() -> None:
    """Fed one token at a time, the SMT's committed fast weights and the bank's slots change only when the stream
    position crosses a multiple of mem_write (cadence), while what a chunk carries inside it (the SMT's running
    writes, the bank's candidates) and the fast CMS level (exact per-token writes) move at every token; the
    logits still equal one pass."""
    model = tiny_model("hope")
    T = 2 * ERROR_UPDATE + 1
    idx = random_bytes(2, T)
    inside = {"smt": ("running",), "bank": ("cand_strength",)}
    with torch.no_grad():
        ref, _, _ = model(idx)
        state = model.init_state(2)
        outs = []
        for t in range(T):
            logits, _, new = model(idx[:, t:t + 1], state=state)
            outs.append(logits)
            pos = t + 1
            for component in ("smt", "bank"):
                changed = not same_memory(new, state, component)
                assert changed == (pos % MEM_WRITE == 0), f"{component} changed={changed} at stream position {pos}"
                for field in inside[component]:
                    assert not all(torch.equal(getattr(a, component)._asdict()[field], getattr(b, component)._asdict()[field])
                                   for a, b in zip(new.layers, state.layers)), f"{component}.{field} at {pos}"
            # (the first token's key is the empty context before the stream: a zero key writes nothing)
            assert same_memory(new, state, "cms") == (pos == 1), f"cms at stream position {pos}"
            state = new
    torch.testing.assert_close(torch.cat(outs, dim=1), ref, **TOL)


# ------------------------------------------------------------------------------------ sample isolation


@pytest.mark.parametrize("variant", VARIANTS)
def test_sample_isolation(variant: str) -> None:
    """Changing sample j leaves every other sample's logits and state bit-identical; the fast weights,
    bank and tails carry a batch axis (sample isolation: sample i never sees sample j)."""
    B, j = 3, 1
    model_type, overrides = VARIANTS[variant]
    model = tiny_model(model_type, **overrides)
    idx = random_bytes(B, 45)
    other = idx.clone()
    other[j] = random_bytes(45, seed=7)
    with torch.no_grad():
        a, _, sa = model(idx)
        b, _, sb = model(other)
    for i in range(B):
        assert torch.equal(a[i], b[i]) == (i != j), f"sample {i}"
    for (path, x), (_, y) in zip(leaves(sa), leaves(sb)):
        if not isinstance(x, torch.Tensor):
            continue
        assert x.shape[0] == B, f"{path} has no batch axis: {tuple(x.shape)}"
        for i in range(B):
            if i != j:
                assert torch.equal(x[i], y[i]), f"{path}: sample {i} sees sample {j}"
    if model_type == "hope":
        for component in ("smt", "cms", "bank"):
            for (path, x), (_, y) in zip(memory_leaves(sa, component), memory_leaves(sb, component)):
                if path.endswith(".change") or path.endswith("keys"):
                    assert not torch.equal(x[j], y[j]), f"{path} of sample {j} ignores its input"


# ------------------------------------------------------------------------- bank_input: context


def test_context_bank_keys_name_more_than_the_last_byte() -> None:
    """The reason for bank_input: context. Two streams equal from byte MEM_WRITE on, different before: with the
    block input, what the first block's bank keys and stores at the equal bytes is equal (one byte's embedding),
    so a query cannot tell apart keys that end in the same byte; with the context input it differs."""
    a = random_bytes(1, 3 * MEM_WRITE)
    b = a.clone()
    b[0, :MEM_WRITE] = random_bytes(MEM_WRITE, seed=5)
    for bank_input, differ in (("block", False), ("context", True)):
        model = tiny_model("hope", bank_input=bank_input)
        seen = []
        hook = model.blocks[0].bank.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        with torch.no_grad():
            model(a), model(b)
        hook.remove()
        same = torch.equal(seen[0][:, MEM_WRITE:], seen[1][:, MEM_WRITE:])  # (1, 2 * MEM_WRITE, C) each
        assert same != differ, bank_input


# -------------------------------------------------------------------------------------------- gradients


GRAD_REQUIRED = ("smt.q_proj.weight", "smt.prior_w", "smt.gates.weight", "smt.gates.bias",
                 "bank.key.weight", "bank.query.weight", "bank.value.weight", "bank.write_score.weight",
                 "bank.write_score.bias", "bank.log_temperature", "bank.null_logit", "bank.out.weight",
                 "cms.prior_w1", "cms.prior_w2", "cms.eta_logit", "cms.fast_gain", "cms.slow.up.weight",
                 "cms.slow.down.weight", "attn.qkv.weight", "attn.proj.weight", "mix_gate")


def test_gradient_flow() -> None:
    """One backward of the LM loss reaches every parameter with a finite non-zero gradient (gradient flow): W_q, the
    memory initial states, every gate head (eta, alpha), the bank, both CMS levels, attention and the
    embeddings; over two segments, so gradients also flow through the carried state."""
    model = tiny_model("hope")
    H = model.cfg.num_heads
    idx = random_bytes(2, 41)
    _, loss, _ = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    names = dict(model.named_parameters())
    assert "embed.weight" in names
    for block in range(model.cfg.depth):
        for suffix in GRAD_REQUIRED:
            assert f"blocks.{block}.{suffix}" in names, suffix
    for name, p in names.items():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().max() > 0, f"{name} gets a zero gradient"
        if name.endswith("smt.gates.bias"):
            for gate, grad in zip(("eta", "alpha"), p.grad.view(2, H)):
                assert (grad != 0).all(), f"{name}: the {gate} head gets no gradient"


def test_silent_components_can_turn_on() -> None:
    """At the default init the bank's output and the fast CMS gain are zero, but their gradients are not:
    training can switch them on."""
    model = tiny_model("hope", randomise=False)
    idx = random_bytes(2, 33)
    _, loss, _ = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for name, p in model.named_parameters():
        if name.endswith(("bank.out.weight", "cms.fast_gain")):
            assert p.abs().max() == 0, f"{name} should start silent"
            assert p.grad is not None and p.grad.abs().max() > 0, f"{name} can never turn on"


# ---------------------------------------------------------------------------------------------- gates


def _run_with_gate(mem_gate: float, surprise_scale: float = 2.0) -> tuple[dict, dict]:
    model = tiny_model("hope")
    model.set_schedules(mem_gate=mem_gate, surprise_scale=surprise_scale)
    with torch.no_grad():
        _, _, state = model(random_bytes(2, 40))
    return state, model.init_state(2)


def test_mem_gate_zero_freezes_smt() -> None:
    """With the mem_write gate at 0 the SMT fast weights stay exactly at their learned init (gates)."""
    state, init = _run_with_gate(0.0)
    for (path, w), (_, w0) in zip(memory_leaves(state, "smt"), memory_leaves(init, "smt")):
        assert torch.equal(w, w0), f"{path} moved by {(w - w0).abs().max():.3g} with mem_gate 0"


def test_mem_gate_zero_freezes_cms_and_empties_bank() -> None:
    state, init = _run_with_gate(0.0)
    assert same_memory(state, init, "cms")
    for layer in state.layers:
        assert torch.equal(layer.bank.strength, torch.zeros_like(layer.bank.strength))


def test_mem_gate_one_writes_every_memory() -> None:
    state, init = _run_with_gate(1.0)
    for component in ("smt", "cms"):
        for (path, w), (_, w0) in zip(memory_leaves(state, component), memory_leaves(init, component)):
            assert not torch.equal(w, w0), f"{path} never written with mem_gate 1"
    for layer in state.layers:
        assert (layer.bank.strength > 0).all()


# ------------------------------------------------------------------------------------- loss and training


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_loss_at_init_is_uniform(model_type: str) -> None:
    """At the default init the model predicts ~uniform bytes: loss ~ ln 256."""
    model = tiny_model(model_type, randomise=False)
    idx = random_bytes(4, 65)
    with torch.no_grad():
        _, loss, _ = model(idx[:, :-1], idx[:, 1:])
    assert abs(loss.item() - math.log(256)) < 0.3


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_overfits_one_batch(model_type: str) -> None:
    """A tiny model memorises one fixed 2x32 batch of random bytes: the whole stack trains.
    Depth 1 and long memory chunks only to keep it fast; it takes ~65 steps of the 150 allowed."""
    torch.manual_seed(0)
    cfg = tiny_config(model_type, depth=1, update_frequencies=UpdateFrequencies(16, 32, 2))
    model = build_model(cfg).train()
    data = random_bytes(2, 33)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        _, loss, _ = model(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < 0.5:
            break
    assert losses[-1] < 0.5, f"{model_type} did not overfit: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


# ------------------------------------------------------------------------------------------- ablations


ABLATIONS = {
    "no_bank": dict(memory_capacity=0),
    "cms_mlp": dict(cms="mlp"),
    "mlp_memory": dict(memory_kind="mlp"),
    "plain_titans": dict(self_modifying=False),
    "mem_write_zero": dict(mem_write=Schedule(0.0, 0.0, 0)),
}


@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_ablation_builds_and_trains(ablation: str) -> None:
    """Every ablation switch builds, changes the structure it names, and gives a finite loss and gradients."""
    model = tiny_model("hope", randomise=False, **ABLATIONS[ablation])
    idx = random_bytes(2, 41)
    _, loss, state = model(idx[:, :-1], idx[:, 1:])
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    H = model.cfg.num_heads
    for block, layer in zip(model.blocks, state.layers):
        if ablation == "no_bank":
            assert block.bank is None and layer.bank is None
            assert not any(".bank." in name for name, _ in model.named_parameters())
        elif ablation == "cms_mlp":
            assert not block.cms.has_fast and layer.cms is None
            assert not hasattr(block.cms, "prior_w1")
        elif ablation == "mlp_memory":
            h = block.smt.hidden
            assert block.smt.prior_w2.shape == (3, H, h, model.cfg.head_dim) and layer.smt.change.shape[-1] == h
        elif ablation == "plain_titans":
            assert block.smt.boxes == 1 and block.smt.kv_proj is not None
            assert block.smt.prior_w.shape[0] == 1 and layer.smt.change.shape[1] == 1  # one box: the memory
        elif ablation == "mem_write_zero":
            assert model.mem_gate == 0.0
            assert torch.equal(layer.bank.strength, torch.zeros_like(layer.bank.strength))


# ------------------------------------------------------------------------------------------ parameters


PARAM_CONFIGS = {
    "default": Config(),
    "small": Config(dim=64, depth=2, num_heads=4, seq_len=64, max_len=64, attn_window=16, memory_capacity=16),
    "wide-shallow": Config(dim=96, depth=1, num_heads=2, ff_mult=2.0, memory_capacity=0, cms="mlp"),
}


@pytest.mark.parametrize("name", list(PARAM_CONFIGS))
def test_matched_baseline_within_ten_percent(name: str) -> None:
    cfg = PARAM_CONFIGS[name]
    base = matched_baseline_config(cfg)
    assert base.model_type == "baseline"
    assert (base.dim, base.num_heads, base.max_len, base.seq_len) == (cfg.dim, cfg.num_heads, cfg.max_len, cfg.seq_len)
    n_hope, n_base = count_params(cfg), count_params(base)
    assert abs(n_base - n_hope) <= 0.10 * n_hope, f"baseline {n_base} vs hope {n_hope}"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_count_params_and_tied_head(model_type: str) -> None:
    cfg = dataclasses.replace(PARAM_CONFIGS["small"], model_type=model_type)
    model = build_model(cfg)
    assert count_params(cfg) == model.num_params()
    model = model.to(DT)  # the tie survives dtype/device moves
    assert model.head.weight is model.embed.weight
    assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()
    # counted once: the state dict lists the shared matrix under both names
    assert model.num_params() == sum(t.numel() for t in model.state_dict().values()) - model.head.weight.numel()


# -------------------------------------------------------------------------------------------- autocast


def test_autocast_bf16_keeps_fast_weights_fp32() -> None:
    """Under bf16 autocast a HOPE forward (two segments, then a continued call) runs with finite logits and
    gradients, and the memories in the returned state stay fp32 (architecture.md, "Half precision")."""
    model = tiny_model("hope", dtype=torch.float32).train()
    idx = random_bytes(2, 46)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss, state = model(idx[:, :40], idx[:, 1:41])
        more, _, state = model(idx[:, 40:45], state=state)
    assert torch.isfinite(logits).all() and torch.isfinite(more).all() and torch.isfinite(loss)
    for component in ("smt", "cms", "bank"):
        for path, t in memory_leaves(state, component):
            assert t.dtype == torch.float32, f"{path} is {t.dtype}"
    for layer in state.layers:
        for t in (layer.smt.err_mean, layer.smt.err_sq):
            assert t.dtype == torch.float32
        assert layer.smt.running.dtype == layer.smt.chunk_err.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------ CMS task objective (cms_objective: task)


def task_model(**overrides: Any) -> LanguageModel:
    """A randomised tiny HOPE whose fast CMS level learns in context from the model's own next-byte loss."""
    return tiny_model("hope", cms_objective="task", **overrides)


def fast_weights(state: Any) -> list[torch.Tensor]:
    """Every block's fast CMS change D (B, 1, C, h), in block order."""
    return [layer.cms.change for layer in state.layers]


def test_task_causality() -> None:
    """Causality with the task objective: the inner step after chunk n may only use bytes of chunk n, and a chunk
    is read at the state committed before it; perturbing bytes after t leaves logits at <= t bit-identical."""
    model = task_model()
    idx = random_bytes(2, LONG)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ref, _, _ = model(idx)
        for t in (5, 7, 13, 32, 42, 70):
            other = idx.clone()
            other[:, t + 1:] = (other[:, t + 1:] + torch.randint(1, 256, other[:, t + 1:].shape, generator=g)) % 256
            logits, _, _ = model(other)
            assert torch.equal(logits[:, : t + 1], ref[:, : t + 1]), f"future bytes leak into position <= {t}"
            assert not torch.equal(logits[:, t + 1:], ref[:, t + 1:])


@pytest.mark.parametrize("pieces", [(1, 3, 17), (5, 32, 2), (8, 8, 9)], ids=["1-3-17-rest", "5-32-2-rest", "8-8-9-rest"])
def test_task_streaming_equals_one_pass(pieces: tuple[int, ...]) -> None:
    """One call over LONG tokens == uneven pieces with the state carried: an incomplete chunk is replayed from
    its committed start, so every chunk's inner loss covers the whole chunk however the calls split it."""
    state = assert_streaming_equals_one_pass(task_model(), pieces)
    assert state.pos == LONG and state.task_tail.shape == (2, LONG % ERROR_UPDATE)


def test_task_step_is_the_gradient_of_the_chunk_loss() -> None:
    """After chunk n, every block's fast weights are w - eta * grad_w L_n with L_n the per-sample SUM of the
    next-byte losses of the chunk's positions whose targets lie inside it, the gradient taken through all the
    layers above and the head (here by autograd on a read-only pass over the chunk's first C - 1 bytes), and
    eta = TASK_ETA_MAX / C * sigmoid(eta_logit) * mem_gate; for the first two chunks of a stream."""
    from hope.layers.cms import TASK_ETA_MAX

    model = task_model()
    model.set_schedules(mem_gate=0.75, surprise_scale=1.0)
    C = ERROR_UPDATE
    idx = random_bytes(2, 2 * C + 3)
    with torch.no_grad():
        state = model.init_state(2)
        for n in range(2):
            chunk = idx[:, n * C:(n + 1) * C]
            leaves_w = [w.detach().clone().requires_grad_() for w in fast_weights(state)]
            before = state._replace(layers=[layer._replace(cms=layer.cms._replace(change=w))
                                            for w, layer in zip(leaves_w, state.layers)])
            with torch.enable_grad():
                logits, _, _ = model(chunk[:, :-1], state=before)  # incomplete chunk: read only, at w_n
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1),
                                                         reduction="sum")
                grads = torch.autograd.grad(loss, leaves_w)
            _, _, state = model(chunk, state=state)
            assert state.task_tail.shape[1] == 0
            for i, (w_new, w_old, grad) in enumerate(zip(fast_weights(state), leaves_w, grads)):
                cms = model.blocks[i].cms
                eta = TASK_ETA_MAX / C * torch.sigmoid(cms.eta_logit) * 0.75
                assert grad.abs().max() > 0
                torch.testing.assert_close(w_new, w_old - eta * grad, rtol=0.0, atol=1e-12,
                                           msg=lambda m, i=i, n=n: f"chunk {n}, fast weight {i}: {m}")


def test_task_step_lowers_the_chunk_loss() -> None:
    """The inner step descends the task loss: chunk 0's next-byte loss is lower at the fast weights written
    after it than at the learned initial state (the step is small enough for first order to hold)."""
    model = task_model()
    C = ERROR_UPDATE
    idx = random_bytes(2, C)
    with torch.no_grad():
        _, _, after = model(idx)
        init = model.init_state(2)
        moved = init._replace(layers=[layer._replace(cms=new.cms) for layer, new in zip(init.layers, after.layers)])
        losses = []
        for state in (init, moved):
            logits, _, _ = model(idx[:, :-1], state=state)
            losses.append(torch.nn.functional.cross_entropy(logits.reshape(-1, 256), idx[:, 1:].reshape(-1)).item())
    assert losses[1] < losses[0], f"the step raised the chunk loss: {losses[0]:.6f} -> {losses[1]:.6f}"


def test_task_mem_gate_zero_freezes_the_fast_level() -> None:
    """mem_write gate 0: the fast CMS weights stay exactly at their learned init; gate 1 moves them."""
    idx = random_bytes(2, 40)
    for gate in (0.0, 1.0):
        model = task_model()
        model.set_schedules(mem_gate=gate, surprise_scale=1.0)
        with torch.no_grad():
            _, _, state = model(idx)
        init = model.init_state(2)
        assert same_memory(state, init, "cms") == (gate == 0.0), f"mem_gate {gate}"


def test_task_sample_isolation() -> None:
    """A batch of two == each sample alone (per-sample loss sum, not a batch mean), logits and fast weights."""
    model = task_model()
    idx = random_bytes(2, 45)
    with torch.no_grad():
        both, _, state = model(idx)
        for i in range(2):
            alone, _, state_i = model(idx[i:i + 1])
            torch.testing.assert_close(alone[0], both[i], **TOL)
            for w, w_i in zip(fast_weights(state), fast_weights(state_i)):
                torch.testing.assert_close(w_i[0], w[i], **TOL)


def test_task_learns_under_no_grad_and_trains() -> None:
    """Under torch.no_grad (evaluation, generation) the fast level still steps, the same as with gradients on,
    and returns a state without autograd history; with gradients on, one backward of the LM loss reaches every
    parameter finite and non-zero, the fast level's initial state and step size included (first-order step)."""
    model = task_model()
    idx = random_bytes(2, 41)
    with torch.no_grad():
        ref, _, state = model(idx[:, :-1])
    assert not same_memory(state, model.init_state(2), "cms")
    assert all(t.grad_fn is None for _, t in leaves(state) if isinstance(t, torch.Tensor))
    model.train()
    logits, loss, _ = model(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(logits, ref, **TOL)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"{name} gets a zero gradient"


def test_task_autocast_bf16_keeps_fast_weights_fp32() -> None:
    model = task_model(dtype=torch.float32).train()
    idx = random_bytes(2, 46)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss, state = model(idx[:, :40], idx[:, 1:41])
        more, _, state = model(idx[:, 40:45], state=state)
    assert torch.isfinite(logits).all() and torch.isfinite(more).all() and torch.isfinite(loss)
    assert all(w.dtype == torch.float32 for w in fast_weights(state))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_task_objective_baseline_match_validates() -> None:
    """The matched baseline of a task-objective config is a valid config (the key is HOPE's only)."""
    base = matched_baseline_config(tiny_config(cms_objective="task"))
    validate(base)
    assert base.model_type == "baseline" and base.cms_objective == "surrogate"
