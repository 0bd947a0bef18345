"""The SMT layer, the episodic bank and the fast CMS level against their token-by-token oracles
(`hope.layers.reference`), in float64.

The delta-rule op has its own per-token oracle (tests/test_memory_ops.py); these tests close the gap above it: the
chunk pieces of a call that starts inside a chunk, the keys and targets at the chunk's start, the writes onto the
running state, the surprise statistics (prefix sums carried across calls, the commit at the chunk's last token),
the bank's candidates carried inside a chunk, their merge and the per-chunk reads. Outputs, every field of the
returned state and the gradients of the input (and surprise, and the carried state) and of every parameter must
agree to 1e-10 at chunk sizes 1, 4, 16 and 7, from a fresh state and from one carried to the middle of a chunk;
and a stream split into calls at arbitrary points must give what one call gives.
"""

from __future__ import annotations

import pytest
import torch

from hope.layers.cms import ContinuumMemory
from hope.layers.episodic import EpisodicBank
from hope.layers.reference import bank_reference, cms_reference, smt_reference
from hope.layers.smt import SelfModifyingMemory

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
DIM, HEADS, B = 12, 2, 2
L = 30  # the compared call (no multiple of 4, 16 or 7)
L_FIRST = 23  # the SMT's carried call: it ends inside a chunk at 4, 16 and 7 (23 = 5 x 4 + 3 = 16 + 7 = 3 x 7 + 2)
CHUNKS = (1, 4, 16, 7)
PIECES = (3, 1, 5, 9, 2, 6, 4)  # a stream of L tokens split into calls: they cross chunk boundaries at 4, 16, 7
MEM_GATE, SURPRISE_SCALE = 0.7, 1.3
GATES = (torch.tensor(MEM_GATE, dtype=DT), torch.tensor(SURPRISE_SCALE, dtype=DT))  # the model's 0-dim schedule
assert sum(PIECES) == L


def assert_same(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{name}: {m}")


def assert_states(name: str, got, want) -> None:
    assert got._fields == want._fields
    for field in got._fields:
        assert_same(f"{name} state.{field}", getattr(got, field), getattr(want, field))


def grads(loss: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {k: (torch.zeros_like(v) if g is None else g) for (k, v), g in zip(leaves.items(), out)}


def linear_loss(*parts: torch.Tensor) -> torch.Tensor:
    """A random linear functional of every floating output (fixed weights, so every run gets the same)."""
    g = torch.Generator().manual_seed(3)
    return sum((p * torch.randn(p.shape, generator=g, dtype=DT)).sum() for p in parts if p.dtype.is_floating_point)


def leaf_state(state, fields):
    """The state with `fields` cloned as leaves that require grad."""
    return state._replace(**{f: getattr(state, f).clone().requires_grad_(True) for f in fields})


def streamed(call, x: torch.Tensor, *per_token: torch.Tensor, state, chunk: int, offset: int = 0):
    """`call(x, *per_token, state, offset)` over the pieces PIECES of the L tokens, each at the stream position so
    far: the concatenated per-token outputs and the last state."""
    outs, start = [], 0
    for n in PIECES:
        *out, state = call(x[:, start:start + n], *(t[:, start:start + n] for t in per_token), state,
                           (offset + start) % chunk)
        outs.append(out)
        start += n
    return [torch.cat(parts, dim=1) for parts in zip(*outs)], state


# ------------------------------------------------------------------------------------------------------ SMT


def make_smt(kind: str, self_modifying: bool, chunk: int, **options) -> SelfModifyingMemory:
    """A small SMT with every parameter away from its init (retention ~0.8, k/v box rates ~0.5, random gates)."""
    torch.manual_seed(0)
    smt = SelfModifyingMemory(DIM, HEADS, 1.5, chunk, kind=kind, self_modifying=self_modifying,
                              error_decay=0.8, **options).double()
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
    """A non-trivial state: one call of L_FIRST tokens, detached. It lies inside a chunk (running writes and error
    sums of its partial chunk) at every chunk size but 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, L_FIRST, DIM, generator=g, dtype=DT)
    with torch.no_grad():
        _, _, state = smt(x, smt.init_state(B, x.device), 0, *GATES)
    assert state.seen.min() == 1 and state.change.abs().max() > 0.05
    if smt.chunk > 1:  # inside a chunk
        assert (state.running - state.change).abs().max() > 1e-3 and state.chunk_err[..., 0].min() > 0
    return state


SMT_LEAVES = ("change", "running", "chunk_err", "conv")
SMT_CARRIED_LEAVES = SMT_LEAVES + ("err_mean", "err_sq")  # a fresh stream ignores the statistics (seen = 0)


def smt_run(smt, fn, x, state, offset, leaf_fields):
    """One run of `fn` (the module or the oracle) with x and the state's `leaf_fields` as leaves: its outputs,
    its state and the gradients of a linear functional of all of them."""
    x_leaf, st = x.clone().requires_grad_(True), leaf_state(state, leaf_fields)
    y, surprise, new = fn(x_leaf, st, offset)
    leaves = {"x": x_leaf, **{f"state.{f}": getattr(st, f) for f in leaf_fields}, **dict(smt.named_parameters())}
    return y, surprise, new, grads(linear_loss(y, surprise, *new), leaves)


def assert_smt_runs(got, want, what: str) -> dict[str, torch.Tensor]:
    (y, surprise, new, g), (y_ref, surprise_ref, new_ref, g_ref) = got, want
    assert_same(f"{what} output", y, y_ref)
    assert_same(f"{what} surprise", surprise, surprise_ref)
    assert_states(what, new, new_ref)
    assert g.keys() == g_ref.keys()
    for name in g:
        assert_same(f"{what} grad {name}", g[name], g_ref[name])
    return g_ref


def module_and_oracle(smt: SelfModifyingMemory, carried: bool):
    """One call of the module and of the oracle on the same inputs (fresh or carried state), and a function that
    runs another module on those inputs."""
    state = carried_smt_state(smt) if carried else smt.init_state(B, torch.device("cpu"))
    offset = L_FIRST % smt.chunk if carried else 0
    x = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(2), dtype=DT)
    fields = SMT_CARRIED_LEAVES if carried else SMT_LEAVES

    def run(m):
        return smt_run(m, lambda *a: m(*a, *GATES), x, state, offset, fields)

    return run(smt), smt_run(smt, lambda *a: smt_reference(smt, *a, *GATES), x, state, offset, fields), run


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("self_modifying", [True, False], ids=["selfmod", "titans"])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_smt_matches_token_loop(kind, self_modifying, chunk, carried):
    smt = make_smt(kind, self_modifying, chunk)
    module, oracle, _ = module_and_oracle(smt, carried)
    g_ref = assert_smt_runs(module, oracle, "one call")
    assert module[2].seen.min() == 1  # a chunk was committed in the call
    # The comparison is not vacuous: every gradient moves (at chunk 1 the carried error sums are 0 and a fresh
    # stream's first token has no key yet, but every token commits, so the sums still carry gradient).
    still = [n for n in g_ref if g_ref[n].abs().max() == 0]
    assert not still, still


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", [4, 7])
def test_smt_timescale_heads_and_sparse_writes_match_token_loop(chunk, carried):
    """`memory_timescales` (one free head, one of 8 bytes: a retention floor and an inner-rate ceiling) and
    `write_threshold` (sparse writes) agree with the oracle in outputs, states and every gradient."""
    smt = make_smt("linear", True, chunk, timescales=(0.0, 8.0), write_threshold=0.5)
    module, oracle, run = module_and_oracle(smt, carried)
    assert_smt_runs(module, oracle, "timescales + threshold")
    plain = run(make_smt("linear", True, chunk))
    assert (module[0] - plain[0]).abs().max() > 1e-3  # the switches change the layer


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", CHUNKS[1:])  # at chunk 1 every call starts a chunk: the test above covers it
@pytest.mark.parametrize("kind,self_modifying", [("mlp", True), ("linear", False)],
                         ids=["mlp-selfmod", "linear-titans"])
def test_smt_streaming_equals_one_call(kind, self_modifying, chunk, carried):
    """The stream split into calls of 3, 1, 5, 9, 2, 6, 4 tokens (each at offset = tokens so far % chunk; a fresh
    stream's first chunk of 16 spans three calls, so its prefix statistics cross calls) gives the reads, the
    surprise, the final state and the gradients (through the states passed between calls) of one call and of the
    oracle; the oracle split the same way agrees too."""
    smt = make_smt(kind, self_modifying, chunk)
    state = carried_smt_state(smt) if carried else smt.init_state(B, torch.device("cpu"))
    offset = L_FIRST % chunk if carried else 0
    x = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(4), dtype=DT)
    fields = SMT_CARRIED_LEAVES if carried else SMT_LEAVES

    def pieces(fn):
        def run(x, st, offset):
            (y, surprise), new = streamed(fn, x, state=st, chunk=chunk, offset=offset)
            return y, surprise, new
        return run

    oracle = smt_run(smt, lambda *a: smt_reference(smt, *a, *GATES), x, state, offset, fields)
    one_call = smt_run(smt, lambda *a: smt(*a, *GATES), x, state, offset, fields)
    assert_smt_runs(one_call, oracle, "one call")
    assert_smt_runs(smt_run(smt, pieces(lambda *a: smt(*a, *GATES)), x, state, offset, fields), one_call, "streamed")
    with torch.no_grad():
        (y, surprise), new = streamed(lambda *a: smt_reference(smt, *a, *GATES), x, state=state, chunk=chunk,
                                      offset=offset)
    assert_same("streamed oracle output", y, oracle[0])
    assert_same("streamed oracle surprise", surprise, oracle[1])
    assert_states("streamed oracle", new, oracle[2])


# ------------------------------------------------------------------------------------------------------ bank

CAPACITY, TOP_K, WRITES, AGING = 6, 3, 3, 0.9
L_BANK_FIRST = 43  # the bank's carried call: 2 complete chunks of 16 fill the 6 slots; ends inside a chunk at 4, 16, 7
BANK_LEAVES = ("keys", "values", "strength", "prev", "cand_keys", "cand_values", "cand_strength")


def bank_leaves(carried: bool, offset: int) -> tuple[str, ...]:
    """The carried state's fields whose gradients are compared. The carried slots are all written (no ties between
    empty slots), so their gradients are defined; at offset 0 (chunk 1) the chunk has no candidates yet, and the
    empty ones' gradients are no part of the meaning (the module passes them through, the oracle starts afresh)."""
    if not carried:
        return ()
    return BANK_LEAVES if offset else BANK_LEAVES[:4]


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
    """A full bank after one call of L_BANK_FIRST tokens, detached, with the candidates of its partial chunk."""
    g = torch.Generator().manual_seed(1)
    x, surprise = torch.randn(B, L_BANK_FIRST, DIM, generator=g, dtype=DT), torch.randn(B, L_BANK_FIRST, generator=g,
                                                                                         dtype=DT)
    with torch.no_grad():
        _, state = bank(x, surprise, bank.init_state(B, x.device), 0, *GATES)
    assert (state.strength > 0).all()  # every slot written
    if bank.chunk > 1:
        assert (state.cand_strength[:, 0] > 0).all()  # inside a chunk: candidates so far
    return state


def canonical(state, aging: float):
    """The bank's slots ordered by priority and its candidates by strength (highest first, ties kept in order:
    empty slots, and empty candidates, are all alike): neither order is part of the semantics."""
    def by(score: torch.Tensor, fields: tuple[str, ...]) -> dict[str, torch.Tensor]:
        order = score.argsort(dim=1, descending=True, stable=True)
        pick = lambda t: torch.gather(t, 1, order if t.dim() == 2 else order[..., None].expand_as(t))  # noqa: E731
        return {f: pick(getattr(state, f)) for f in fields}
    return state._replace(**by(state.strength * aging ** state.age, ("keys", "values", "strength", "age")),
                          **by(state.cand_strength, ("cand_keys", "cand_values", "cand_strength", "cand_index")))


def bank_run(bank, fn, x, surprise, state, offset, leaf_fields):
    x_leaf, s_leaf = x.clone().requires_grad_(True), surprise.clone().requires_grad_(True)
    st = leaf_state(state, leaf_fields)
    y, new = fn(x_leaf, s_leaf, st, offset)
    new = canonical(new, AGING)
    leaves = {"x": x_leaf, "surprise": s_leaf, **{f"state.{f}": getattr(st, f) for f in leaf_fields},
              **dict(bank.named_parameters())}
    return y, new, grads(linear_loss(y, *new), leaves)


def assert_bank_runs(got, want, what: str) -> dict[str, torch.Tensor]:
    (y, new, g), (y_ref, new_ref, g_ref) = got, want
    assert_same(f"{what} output", y, y_ref)
    assert_states(what, new, new_ref)
    assert g.keys() == g_ref.keys()
    for name in g:
        assert_same(f"{what} grad {name}", g[name], g_ref[name])
    return g_ref


def bank_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, DIM, generator=g, dtype=DT), torch.randn(B, L, generator=g, dtype=DT)


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_bank_matches_token_loop(chunk, carried):
    bank = make_bank(chunk)
    state = carried_bank_state(bank) if carried else bank.init_state(B, torch.device("cpu"))
    offset = L_BANK_FIRST % chunk if carried else 0
    x, surprise = bank_inputs(5)  # the first token's candidate (its key from the carried prev) is kept
    fields = bank_leaves(carried, offset)
    module = bank_run(bank, lambda *a: bank(*a, *GATES), x, surprise, state, offset, fields)
    oracle = bank_run(bank, lambda *a: bank_reference(bank, *a, *GATES), x, surprise, state, offset, fields)
    g_ref = assert_bank_runs(module, oracle, "one call")
    assert all(g_ref[n].abs().max() > 0 for n in ("x", "surprise", "key.weight", "query.weight", "out.weight"))
    if carried:
        assert all(g_ref[f"state.{f}"].abs().max() > 0 for f in BANK_LEAVES[:4])
        if chunk > 1:  # the carried candidates reach the bank at the end of their chunk
            assert all(g_ref[f"state.{f}"].abs().max() > 0 for f in ("cand_keys", "cand_values", "cand_strength"))
    # Eviction happens: the carried bank is full, and a fresh one gets more candidates than slots (except at chunk
    # 16, where 30 tokens hold one complete chunk: the carried case covers it).
    assert carried or chunk == 16 or (L // chunk) * min(WRITES, chunk) > CAPACITY


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_bank_streaming_equals_one_call(chunk, carried):
    """The stream split into calls of 3, 1, 5, 9, 2, 6, 4 tokens (candidates carried across calls inside a chunk,
    at chunk 4 and 7 a call ending with fewer candidates than writes) gives the reads, the final state and the
    gradients of one call and of the oracle; the oracle split the same way agrees too."""
    bank = make_bank(chunk)
    state = carried_bank_state(bank) if carried else bank.init_state(B, torch.device("cpu"))
    offset = L_BANK_FIRST % chunk if carried else 0
    x, surprise = bank_inputs(4)
    fields = bank_leaves(carried, offset)

    def pieces(fn):
        def run(x, surprise, st, offset):
            (y,), new = streamed(fn, x, surprise, state=st, chunk=chunk, offset=offset)
            return y, new
        return run

    oracle = bank_run(bank, lambda *a: bank_reference(bank, *a, *GATES), x, surprise, state, offset, fields)
    one_call = bank_run(bank, lambda *a: bank(*a, *GATES), x, surprise, state, offset, fields)
    assert_bank_runs(one_call, oracle, "one call")
    assert_bank_runs(bank_run(bank, pieces(lambda *a: bank(*a, *GATES)), x, surprise, state, offset, fields), one_call,
                     "streamed")
    with torch.no_grad():
        (y,), new = streamed(lambda *a: bank_reference(bank, *a, *GATES), x, surprise, state=state, chunk=chunk,
                             offset=offset)
    assert_same("streamed oracle output", y, oracle[0])
    assert_states("streamed oracle", canonical(new, AGING), oracle[1])


def test_bank_candidates_inside_a_chunk():
    """A call that ends inside a chunk before `writes` tokens of it: the candidates so far, padded with empty
    ones (strength 0, all zeros), and the bank unchanged; the next call's tokens of that chunk join them."""
    bank = make_bank(7)
    state = carried_bank_state(bank)  # 43 = 6 x 7 + 1: one token of the current chunk
    x, surprise = bank_inputs(5)
    with torch.no_grad():
        _, one = bank(x[:, :1], surprise[:, :1], state, L_BANK_FIRST % 7, *GATES)
        _, one_ref = bank_reference(bank, x[:, :1], surprise[:, :1], state, L_BANK_FIRST % 7, *GATES)
    one, one_ref = canonical(one, AGING), canonical(one_ref, AGING)
    assert_states("inside a chunk", one, one_ref)
    assert (one.cand_strength[:, :2] > 0).all() and (one.cand_strength[:, 2] == 0).all()
    assert (one.cand_index[:, :2].sort(dim=1).values == torch.tensor([0.0, 1.0], dtype=DT)).all()
    for field in ("keys", "values", "strength", "age"):
        assert torch.equal(getattr(canonical(state, AGING), field), getattr(one, field))


# ------------------------------------------------------------------------------------------------------ CMS


def make_cms() -> ContinuumMemory:
    torch.manual_seed(0)
    cms = ContinuumMemory(DIM, 2 * DIM, 4, "chain", "surrogate").double()
    with torch.no_grad():
        for p in cms.parameters():
            p.add_(0.3 * torch.randn_like(p))
        cms.eta_logit.fill_(0.5)
    return cms


@pytest.mark.parametrize("carried", [False, True], ids=["fresh", "carried"])
def test_cms_matches_token_loop_and_streams(carried):
    """The fast CMS level writes every token exactly onto its state: one call, the same stream in pieces and the
    oracle agree (outputs, state, gradients)."""
    cms = make_cms()
    state = cms.init_state(B, torch.device("cpu"))
    if carried:
        with torch.no_grad():
            h_first = torch.randn(B, 9, DIM, generator=torch.Generator().manual_seed(1), dtype=DT)
            _, state = cms(h_first, state, GATES[0])
        assert state.change.abs().max() > 0.01
    h = torch.randn(B, L, DIM, generator=torch.Generator().manual_seed(2), dtype=DT)
    fields = ("change", "prev")

    def run(fn):
        h_leaf, st = h.clone().requires_grad_(True), leaf_state(state, fields)
        out, new = fn(h_leaf, st)
        leaves = {"h": h_leaf, **{f"state.{f}": getattr(st, f) for f in fields}, **dict(cms.named_parameters())}
        return out, new, grads(linear_loss(out, *new), leaves)

    def pieces(h, st):
        (out,), new = streamed(lambda h, st, offset: cms(h, st, GATES[0]), h, state=st, chunk=cms.chunk)
        return out, new

    oracle = run(lambda h, st: cms_reference(cms, h, st, GATES[0]))
    for what, got in (("one call", run(lambda h, st: cms(h, st, GATES[0]))), ("streamed", run(pieces))):
        assert_same(f"{what} output", got[0], oracle[0])
        assert_states(what, got[1], oracle[1])
        for name in oracle[2]:
            assert_same(f"{what} grad {name}", got[2][name], oracle[2][name])
    still = [n for n, g in oracle[2].items() if g.abs().max() == 0]  # the comparison is not vacuous
    assert not still, still


# ------------------------------------------------------------------------------------------------------ gates


def test_oracles_take_tensor_gates():
    """mem_gate and surprise_scale as 0-dim tensors (the model's schedule) give what floats give, and gradients."""
    smt, bank, cms = make_smt("linear", True, 4), make_bank(4), make_cms()
    x = torch.randn(B, 10, DIM, generator=torch.Generator().manual_seed(5), dtype=DT)
    surprise = torch.randn(B, 10, dtype=DT, generator=torch.Generator().manual_seed(6))
    gate, scale = (torch.tensor(v, dtype=DT, requires_grad=True) for v in (MEM_GATE, SURPRISE_SCALE))
    y_f, s_f, _ = smt_reference(smt, x, smt.init_state(B, x.device), 1, MEM_GATE, SURPRISE_SCALE)
    y_t, s_t, _ = smt_reference(smt, x, smt.init_state(B, x.device), 1, gate, scale)
    r_f, _ = bank_reference(bank, x, surprise, bank.init_state(B, x.device), 1, MEM_GATE, SURPRISE_SCALE)
    r_t, _ = bank_reference(bank, x, surprise, bank.init_state(B, x.device), 1, gate, scale)
    c_f, _ = cms_reference(cms, x, cms.init_state(B, x.device), MEM_GATE)
    c_t, _ = cms_reference(cms, x, cms.init_state(B, x.device), gate)
    for a, b in ((y_f, y_t), (s_f, s_t), (r_f, r_t), (c_f, c_t)):
        assert_same("tensor gates", b, a)
    d_gate, d_scale = torch.autograd.grad(y_t.sum() + r_t.sum() + c_t.sum(), (gate, scale))
    assert d_gate.abs() > 0 and d_scale.abs() > 0


def test_oracles_check_the_offset():
    smt, bank = make_smt("linear", True, 4), make_bank(4)
    x = torch.randn(B, 3, DIM, dtype=DT)
    for offset in (-1, 4):
        with pytest.raises(ValueError, match="offset"):
            smt_reference(smt, x, smt.init_state(B, x.device), offset, *GATES)
        with pytest.raises(ValueError, match="offset"):
            bank_reference(bank, x, x[..., 0], bank.init_state(B, x.device), offset, *GATES)
