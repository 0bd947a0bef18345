"""The SMT layer and the episodic bank against their token-by-token oracles (`hope.layers.reference`), in float64.

The delta-rule op has its own per-token oracle (tests/test_memory_ops.py); these tests close the gap above it: the
chunk plan's slicing, the per-chunk keys and targets, the surprise statistics, the commit of a partial call, the
bank's candidate selection, merge and per-chunk reads. Outputs, every field of the returned state and the
gradients of the input (and surprise, and the carried state) and of every parameter must agree to 1e-10 at chunk
sizes 1, 4, 16 and 7, with an uncommitted tail, from a fresh and from a carried state.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from hope.layers.chunking import committed_length
from hope.layers.episodic import EpisodicBank
from hope.layers.reference import bank_reference, smt_reference
from hope.layers.smt import SelfModifyingMemory

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
DIM, HEADS, B = 12, 2, 2
L_FIRST, L = 23, 30  # the carried state's call, the compared call (30 is no multiple of 4, 16 or 7)
CHUNKS = (1, 4, 16, 7)
MEM_GATE, SURPRISE_SCALE = 0.7, 1.3


def gate_args(forward, *values: float) -> tuple:
    """mem_gate and surprise_scale the way `forward` takes them: 0-dim tensors if its signature names Tensor."""
    sig = inspect.signature(forward).parameters
    tensors = "Tensor" in str(sig["mem_gate"].annotation) or "Tensor" in str(sig["surprise_scale"].annotation)
    return tuple(torch.tensor(v, dtype=DT) if tensors else v for v in values)


def n_commit_for(length: int, chunk: int) -> int:
    """The block's n_commit (every complete chunk), or for chunk 1 three tokens short: a tail exists in each case."""
    return committed_length(length, chunk) if chunk > 1 else length - 3


def assert_same(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{name}: {m}")


def grads(loss: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(leaves.items(), out)}


# ------------------------------------------------------------------------------------------------------ SMT


def make_smt(kind: str, self_modifying: bool, chunk: int) -> SelfModifyingMemory:
    """A small SMT with every parameter away from its init (retention ~0.8, k/v box rates ~0.5, random gates)."""
    torch.manual_seed(0)
    smt = SelfModifyingMemory(DIM, HEADS, 1.5, chunk, kind=kind, self_modifying=self_modifying,
                              error_decay=0.8).double()
    with torch.no_grad():
        for p in smt.parameters():
            p.add_(0.1 * torch.randn_like(p))
        smt.gates.weight.normal_(0, 0.5)
        smt.gates.bias.view(2, HEADS)[0].normal_(0, 1)
        smt.gates.bias.view(2, HEADS)[1].normal_(1.5, 0.5)
        if smt.kv_rate_logit is not None:
            smt.kv_rate_logit.normal_(0, 1)
    return smt


def carried_smt_state(smt: SelfModifyingMemory):
    """A non-trivial state: one call of L_FIRST tokens (its own tail left uncommitted), detached."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, L_FIRST, DIM, generator=g, dtype=DT)
    with torch.no_grad():
        _, _, state = smt(x, smt.init_state(B, x.device), committed_length(L_FIRST, smt.chunk),
                          *gate_args(smt.forward, MEM_GATE, SURPRISE_SCALE))
    assert state.seen.min() == 1 and state.change.abs().max() > 0.05
    return state


def smt_loss(y, surprise, state, g: torch.Generator) -> torch.Tensor:
    """A random linear functional of every output (fixed weights from `g`, so both runs get the same)."""
    parts = [y, surprise, *(f for f in state if f.dtype.is_floating_point)]
    return sum((p * torch.randn(p.shape, generator=g, dtype=DT)).sum() for p in parts)


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("self_modifying", [True, False], ids=["selfmod", "titans"])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_smt_matches_token_loop(kind, self_modifying, chunk, carried):
    smt = make_smt(kind, self_modifying, chunk)
    state = carried_smt_state(smt) if carried else smt.init_state(B, torch.device("cpu"))
    n_commit = n_commit_for(L, chunk)
    assert 0 < n_commit < L
    x = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(2), dtype=DT)
    results = {}
    for name, fn in (("module", smt.forward), ("oracle", lambda *a: smt_reference(smt, *a))):
        x_leaf = x.clone().requires_grad_(True)
        st = state._replace(change=state.change.clone().requires_grad_(True),
                            err_mean=state.err_mean.clone().requires_grad_(carried),
                            err_sq=state.err_sq.clone().requires_grad_(carried),
                            conv=state.conv.clone().requires_grad_(True))
        y, surprise, new = fn(x_leaf, st, n_commit, *gate_args(smt.forward, MEM_GATE, SURPRISE_SCALE))
        leaves = {"x": x_leaf, "state.change": st.change, "state.conv": st.conv,
                  **({"state.err_mean": st.err_mean, "state.err_sq": st.err_sq} if carried else {}),
                  **dict(smt.named_parameters())}
        results[name] = (y, surprise, new, grads(smt_loss(y, surprise, new, torch.Generator().manual_seed(3)), leaves))
    (y, surprise, new, g), (y_ref, surprise_ref, new_ref, g_ref) = results["module"], results["oracle"]
    assert_same("output", y, y_ref)
    assert_same("surprise", surprise, surprise_ref)
    for field in new._fields:
        assert_same(f"state.{field}", getattr(new, field), getattr(new_ref, field))
    assert g.keys() == g_ref.keys()
    for name in g:
        assert_same(f"grad {name}", g[name], g_ref[name])
    moved = [n for n in g_ref if n != "state.conv" and g_ref[n].abs().max() > 0]  # the comparison is not vacuous
    assert len(moved) >= len(g_ref) - 2, sorted(set(g_ref) - set(moved))


@pytest.mark.parametrize("chunk", [4, 7])
def test_smt_outputs_of_the_last_tokens_and_uncommitted_chunks(chunk):
    """`n_out` returns the oracle's last reads; with n_commit chunks before the end (several uncommitted chunks,
    each at the committed state) and n_commit = 0 the state and reads still agree."""
    smt = make_smt("mlp", True, chunk)
    state = carried_smt_state(smt)
    x = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(4), dtype=DT)
    gates = gate_args(smt.forward, MEM_GATE, SURPRISE_SCALE)
    for n_commit in (0, chunk, committed_length(L, chunk) - chunk):
        with torch.no_grad():
            y_ref, s_ref, new_ref = smt_reference(smt, x, state, n_commit, *gates)
            for n_out in (None, 1, L - 5):
                y, s, new = smt(x, state, n_commit, *gates, n_out=n_out)
                assert_same(f"output n_out={n_out} n_commit={n_commit}", y, y_ref[:, L - (n_out or L):])
                assert_same("surprise", s, s_ref)
                for field in new._fields:
                    assert_same(f"state.{field} n_commit={n_commit}", getattr(new, field), getattr(new_ref, field))


# ------------------------------------------------------------------------------------------------------ bank

CAPACITY, TOP_K, WRITES, AGING = 6, 3, 3, 0.9


def make_bank(chunk: int) -> EpisodicBank:
    """A small bank that evicts (6 slots, 3 writes per chunk, aging 0.9) with every parameter away from its init
    (the output projection is not silent)."""
    torch.manual_seed(0)
    bank = EpisodicBank(DIM, CAPACITY, TOP_K, chunk, WRITES, AGING).double()
    with torch.no_grad():
        for p in bank.parameters():
            p.add_(0.3 * torch.randn_like(p))
        bank.out.weight.normal_(0, DIM ** -0.5)
        bank.log_temperature.fill_(1.0)  # softer matching: several slots share a read
    return bank


def carried_bank_state(bank: EpisodicBank):
    """A full bank after one call of 40 tokens (two complete chunks of 16 fill the 6 slots), detached."""
    g = torch.Generator().manual_seed(1)
    x, surprise = torch.randn(B, 40, DIM, generator=g, dtype=DT), torch.randn(B, 40, generator=g, dtype=DT)
    with torch.no_grad():
        _, state = bank(x, surprise, bank.init_state(B, x.device), committed_length(40, bank.chunk),
                        *gate_args(bank.forward, MEM_GATE, SURPRISE_SCALE))
    assert (state.strength > 0).all()  # every slot written
    return state


def canonical(state, aging: float):
    """The bank's slots ordered by priority (highest first): the slot order is not part of the semantics."""
    order = (state.strength * aging ** state.age).argsort(dim=1, descending=True, stable=True)
    pick = lambda t: torch.gather(t, 1, order if t.dim() == 2 else order[..., None].expand_as(t))  # noqa: E731
    return state._replace(keys=pick(state.keys), values=pick(state.values), strength=pick(state.strength),
                          age=pick(state.age))


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_bank_matches_token_loop(chunk, carried):
    bank = make_bank(chunk)
    state = carried_bank_state(bank) if carried else bank.init_state(B, torch.device("cpu"))
    n_commit = n_commit_for(L, chunk)
    g = torch.Generator().manual_seed(2)
    x, surprise = torch.randn(B, L, DIM, generator=g, dtype=DT), torch.randn(B, L, generator=g, dtype=DT)
    results = {}
    for name, fn in (("module", bank.forward), ("oracle", lambda *a: bank_reference(bank, *a))):
        x_leaf, s_leaf = x.clone().requires_grad_(True), surprise.clone().requires_grad_(True)
        # The carried slots are all written (no ties between empty slots), so their gradients are defined too.
        st = state._replace(**{f: getattr(state, f).clone().requires_grad_(carried)
                               for f in ("keys", "values", "strength", "prev")})
        y, new = fn(x_leaf, s_leaf, st, n_commit, *gate_args(bank.forward, MEM_GATE, SURPRISE_SCALE))
        new = canonical(new, AGING)
        leaves = {"x": x_leaf, "surprise": s_leaf,
                  **({f"state.{f}": getattr(st, f) for f in ("keys", "values", "strength", "prev")} if carried else {}),
                  **dict(bank.named_parameters())}
        w = torch.Generator().manual_seed(3)
        loss = sum((p * torch.randn(p.shape, generator=w, dtype=DT)).sum() for p in (y, *new))
        results[name] = (y, new, grads(loss, leaves))
    (y, new, g), (y_ref, new_ref, g_ref) = results["module"], results["oracle"]
    assert_same("output", y, y_ref)
    for field in new._fields:
        assert_same(f"state.{field}", getattr(new, field), getattr(new_ref, field))
    assert g.keys() == g_ref.keys()
    for name in g:
        assert_same(f"grad {name}", g[name], g_ref[name])
    assert all(g_ref[n].abs().max() > 0 for n in ("x", "surprise", "key.weight", "query.weight", "out.weight"))
    # Eviction happens: the carried bank is full, and a fresh one gets more candidates than slots (except at chunk
    # 16, where 30 tokens hold one complete chunk: the carried case covers it).
    assert carried or chunk == 16 or (n_commit // chunk) * min(WRITES, chunk) > CAPACITY


@pytest.mark.parametrize("chunk", [4, 7])
def test_bank_outputs_of_the_last_tokens_and_uncommitted_chunks(chunk):
    """`n_out` returns the oracle's last reads; with several uncommitted chunks (they read the last committed
    bank) and n_commit = 0 (nothing written, `prev` kept) the reads and the state still agree."""
    bank = make_bank(chunk)
    state = carried_bank_state(bank)
    g = torch.Generator().manual_seed(4)
    x, surprise = torch.randn(B, L, DIM, generator=g, dtype=DT), torch.randn(B, L, generator=g, dtype=DT)
    gates = gate_args(bank.forward, MEM_GATE, SURPRISE_SCALE)
    for n_commit in (0, chunk, committed_length(L, chunk) - chunk):
        with torch.no_grad():
            y_ref, new_ref = bank_reference(bank, x, surprise, state, n_commit, *gates)
            new_ref = canonical(new_ref, AGING)
            for n_out in (None, 1, L - 5):
                y, new = bank(x, surprise, state, n_commit, *gates, n_out=n_out)
                new = canonical(new, AGING)
                assert_same(f"output n_out={n_out} n_commit={n_commit}", y, y_ref[:, L - (n_out or L):])
                for field in new._fields:
                    assert_same(f"state.{field} n_commit={n_commit}", getattr(new, field), getattr(new_ref, field))


def test_oracles_take_tensor_gates():
    """mem_gate and surprise_scale as 0-dim tensors (the model's schedule) give what floats give, and gradients."""
    smt, bank = make_smt("linear", True, 4), make_bank(4)
    x = torch.randn(B, 10, DIM, generator=torch.Generator().manual_seed(5), dtype=DT)
    surprise = torch.randn(B, 10, dtype=DT, generator=torch.Generator().manual_seed(6))
    gate, scale = torch.tensor(MEM_GATE, dtype=DT, requires_grad=True), torch.tensor(SURPRISE_SCALE, dtype=DT,
                                                                                     requires_grad=True)
    y_f, s_f, _ = smt_reference(smt, x, smt.init_state(B, x.device), 8, MEM_GATE, SURPRISE_SCALE)
    y_t, s_t, _ = smt_reference(smt, x, smt.init_state(B, x.device), 8, gate, scale)
    r_f, _ = bank_reference(bank, x, surprise, bank.init_state(B, x.device), 8, MEM_GATE, SURPRISE_SCALE)
    r_t, _ = bank_reference(bank, x, surprise, bank.init_state(B, x.device), 8, gate, scale)
    for a, b in ((y_f, y_t), (s_f, s_t), (r_f, r_t)):
        assert_same("tensor gates", b, a)
    d_gate, d_scale = torch.autograd.grad(y_t.sum() + r_t.sum(), (gate, scale))
    assert d_gate.abs() > 0 and d_scale.abs() > 0
