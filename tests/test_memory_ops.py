"""Invariants of the memory's write rule, the gated delta rule on the learned change (architecture.md,
"The memory update" and "Invariants under test").

The chunked fast path equals the per-token reference (outputs, final state and the gradients of every input
and of the prior and initial state) in float64 *at every chunk size*: the in-chunk write is exact. The reference
itself is checked against the delta rule written out for one token, and the memory is shown to store and retrieve.
How much faster the chunked path is belongs to bench/ (bench/cases.py measures it): a timing ratio asserted here
would fail on a loaded machine and prove nothing about correctness.
"""

import pytest
import torch
import torch.nn.functional as F

from hope.ops.memory import (box_apply, delta_rule_chunked, delta_rule_reference, memory_chunked, memory_reference,
                             write_inputs)

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
KINDS = ("linear", "mlp")


def _make(kind: str, *, B: int = 2, H: int = 2, T: int = 13, d: int = 6, h: int = 8, seed: int = 0,
          dtype: torch.dtype = DT, edge_gates: bool = True) -> dict:
    """Random memory inputs; with ``edge_gates`` some gates are exactly 0 or 1 (the decay products' edge cases)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    if kind == "mlp":
        prior, change = (rand(H, d, h, scale=0.4), rand(H, h, d, scale=0.4)), rand(B, H, d, h, scale=0.2)
    else:
        prior, change = (rand(H, d, d, scale=0.4),), rand(B, H, d, d, scale=0.2)
    u = lambda: torch.rand(B, H, T, generator=g, dtype=dtype)  # noqa: E731
    eta, alpha = u(), 0.5 + 0.5 * u()
    if edge_gates and T > 4:
        alpha[..., 2], alpha[..., 4], eta[..., 1], eta[..., 3] = 0.0, 1.0, 1.0, 0.0
    return dict(prior=prior, change=change, k=F.normalize(rand(B, H, T, d), dim=-1), v=rand(B, H, T, d),
                q=F.normalize(rand(B, H, T, d), dim=-1), eta=eta, alpha=alpha)


def _run(fn, inp: dict, kind: str, chunk_size: int | None = None):
    args = (inp["prior"], inp["change"], inp["k"], inp["v"], inp["q"], inp["eta"], inp["alpha"])
    return fn(*args, kind=kind) if chunk_size is None else fn(*args, chunk_size, kind=kind)


# --- 1. chunked == reference, at every chunk size ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size,T", [(1, 13), (3, 13), (4, 37), (16, 37), (16, 5), (4, 32), (64, 37)])
def test_chunked_matches_reference(kind, chunk_size, T):
    inp = _make(kind, T=T)
    o_ref, d_ref = _run(memory_reference, inp, kind)
    o, d = _run(memory_chunked, inp, kind, chunk_size)
    torch.testing.assert_close(o, o_ref, **TOL)
    torch.testing.assert_close(d, d_ref, **TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [1, 4, 16])
def test_chunked_gradients_match_reference(kind, chunk_size):
    """Outer gradients of the keys, targets, queries, both gates, the prior and the initial change agree."""
    inp = _make(kind, T=21)
    leaves = {name: (tuple(t.clone().requires_grad_() for t in x) if name == "prior" else x.clone().requires_grad_())
              for name, x in inp.items()}
    flat = [*leaves["prior"], *(leaves[n] for n in ("change", "k", "v", "q", "eta", "alpha"))]
    g = torch.Generator().manual_seed(3)
    grads = []
    for fn, c in ((memory_reference, None), (memory_chunked, chunk_size)):
        o, d = _run(fn, leaves, kind, c)
        loss = (o * torch.randn(o.shape, generator=g.manual_seed(3), dtype=DT)).sum() + d.pow(2).sum()
        grads.append(torch.autograd.grad(loss, flat))
    for a, b in zip(*grads):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, **TOL)


def test_reference_is_the_delta_rule():
    """One token of the reference, written out: D' = alpha D + eta (tau - alpha D kappa) kappa^T, o = D' q."""
    inp = _make("linear", T=1)
    kappa, tau = write_inputs(inp["prior"], inp["k"], inp["v"], "linear")
    o, d = delta_rule_reference(inp["change"], kappa, tau, inp["q"], inp["eta"], inp["alpha"])
    a, e, k = inp["alpha"][..., 0, None, None], inp["eta"][..., 0, None, None], kappa[..., 0, :, None]
    decayed = a * inp["change"]
    expect = decayed + e * (tau[..., 0, :, None] - decayed @ k) @ k.mT
    torch.testing.assert_close(d, expect, **TOL)
    torch.testing.assert_close(o[..., 0, :], (expect @ inp["q"][..., 0, :, None])[..., 0], **TOL)


# --- 2. the fixed point, gates, forgetting ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_one_write_sets_the_value(kind):
    """One write with eta = 1 (alpha = 1) at a unit key sets M(k) = v_hat exactly; eta = 0.5 halves the error."""
    inp = _make(kind, T=1)
    for eta, left in ((1.0, 0.0), (0.5, 0.5)):
        gate = torch.full_like(inp["eta"], eta)
        _, d = memory_reference(inp["prior"], inp["change"], inp["k"], inp["v"], None, gate,
                                torch.ones_like(gate), kind=kind)
        before = box_apply(inp["prior"], inp["change"], inp["k"], kind) - inp["v"]
        after = box_apply(inp["prior"], d, inp["k"], kind) - inp["v"]
        torch.testing.assert_close(after, left * before, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_eta_freezes_and_zero_alpha_returns_to_the_prior(kind):
    """Gates: eta = 0 and alpha = 1 leave the change untouched; alpha = 0 forgets everything back to the prior
    W_0 (change 0), never to zero weights or the identity."""
    inp = _make(kind, T=9)
    _, d = _run(memory_chunked, {**inp, "eta": torch.zeros_like(inp["eta"]), "alpha": torch.ones_like(inp["eta"])},
                kind, 4)
    assert torch.equal(d, inp["change"])
    _, d = _run(memory_chunked, {**inp, "eta": torch.zeros_like(inp["eta"]), "alpha": torch.zeros_like(inp["eta"])},
                kind, 4)
    assert torch.equal(d, torch.zeros_like(d))


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_gives_same_values(kind):
    inp = _make(kind)
    o, d = _run(memory_chunked, inp, kind, 4)
    with torch.no_grad():
        o2, d2 = _run(memory_chunked, inp, kind, 4)
    torch.testing.assert_close(o2, o, rtol=0, atol=0)
    torch.testing.assert_close(d2, d, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    """The read at t depends on inputs <= t only."""
    inp = _make(kind, T=16)
    o, _ = _run(memory_chunked, inp, kind, 8)
    for t in (2, 7, 11):
        other = {**inp, "k": inp["k"].clone(), "v": inp["v"].clone()}
        other["k"][..., t + 1:, :] = F.normalize(torch.randn_like(other["k"][..., t + 1:, :]), dim=-1)
        other["v"][..., t + 1:, :] += 1.0
        o2, _ = _run(memory_chunked, other, kind, 8)
        torch.testing.assert_close(o2[..., : t + 1, :], o[..., : t + 1, :], rtol=0, atol=0)
        assert not torch.allclose(o2[..., t + 1:, :], o[..., t + 1:, :])


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_equals_one_pass(kind):
    """Two calls with the change carried == one call, wherever the split (the rule has no chunk-boundary state)."""
    inp = _make(kind, T=29)
    o, d = _run(memory_chunked, inp, kind, 8)
    for cut in (5, 16):
        first = {n: (x[..., :cut, :] if n in "kvq" else x[..., :cut]) if n not in ("prior", "change") else x
                 for n, x in inp.items()}
        second = {n: (x[..., cut:, :] if n in "kvq" else x[..., cut:]) if n not in ("prior", "change") else x
                  for n, x in inp.items()}
        o1, d1 = _run(memory_chunked, first, kind, 8)
        o2, d2 = _run(memory_chunked, {**second, "change": d1}, kind, 8)
        torch.testing.assert_close(torch.cat([o1, o2], dim=-2), o, **TOL)
        torch.testing.assert_close(d2, d, **TOL)


# --- 3. store and retrieve --------------------------------------------------------------------------------------


def store_and_retrieve(kind: str, chunk_size: int, *, memories: int = 4, pairs: int = 16, d: int = 32,
                       h: int = 64, seed: int = 0) -> float:
    """Top-1 retrieval of ``pairs`` random unit key/value pairs written once (eta = 1, alpha = 1) into each of
    ``memories`` empty memories (prior: the zero map for linear, a random hidden layer and a zero output layer
    for mlp; change 0), read back at their keys and matched against all values by cosine."""
    g = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(memories, pairs, d, generator=g), dim=-1)
    v = F.normalize(torch.randn(memories, pairs, d, generator=g), dim=-1)
    if kind == "linear":
        prior, change = (torch.zeros(memories, d, d),), torch.zeros(memories, d, d)
    else:
        prior = (torch.zeros(memories, d, h), torch.randn(memories, h, d, generator=g) / d ** 0.5)
        change = torch.zeros(memories, d, h)
    ones = torch.ones(memories, pairs)
    _, d_end = memory_chunked(prior, change, k, v, None, ones, ones, chunk_size, kind=kind)
    read = F.normalize(box_apply(prior, d_end, k, kind), dim=-1)  # (memories, pairs, d)
    return ((read @ v.mT).argmax(-1) == torch.arange(pairs)).float().mean().item()


@pytest.mark.parametrize("kind", KINDS)
def test_store_and_retrieve(kind):
    """Store and retrieve: 16 random unit pairs written into a linear memory (head dim 32) are read back at top-1 >= 0.95, with
    identical results at chunk sizes 1, 4, 16, 64 (the in-chunk write is exact). The mlp memory's keys are 64
    silu features, all positive-leaning and so correlated: it retrieves less (0.78-0.92 over seeds 0-7, 0.875
    here; the bench's store/retrieve table reports both) and is held to 0.8, chunk-size invariant all the same."""
    accs = [store_and_retrieve(kind, c) for c in (1, 4, 16, 64)]
    print(f"{kind}: top-1 at chunk 1/4/16/64 = {accs}")
    assert min(accs) >= (0.95 if kind == "linear" else 0.8) and max(accs) == min(accs)


@pytest.mark.parametrize("chunk_size", [1, 16])
def test_recall_after_orthogonal_filler(chunk_size):
    """Recall after filler: a pair written once is recalled after 1000 delta-rule writes with keys orthogonal to its key."""
    d, n_fill = 64, 1000
    g = torch.Generator().manual_seed(0)
    key = F.normalize(torch.randn(d, generator=g, dtype=DT), dim=0)
    filler = torch.randn(n_fill, d, generator=g, dtype=DT)
    filler = F.normalize(filler - (filler @ key)[:, None] * key, dim=-1)  # orthogonal complement of key
    value = torch.randn(d, generator=g, dtype=DT)
    k = torch.cat([key[None], filler])[None]  # (1, 1001, d)
    v = torch.cat([value[None], torch.randn(n_fill, d, generator=g, dtype=DT)])[None]
    ones = torch.ones(1, n_fill + 1, dtype=DT)
    _, d_end = delta_rule_chunked(torch.zeros(1, d, d, dtype=DT), k, v, None, ones, ones, chunk_size)
    recalled = (d_end @ key)[0]
    assert F.cosine_similarity(recalled, value, dim=0) > 0.99


def test_rejects_bad_arguments():
    inp = _make("linear", T=4)
    with pytest.raises(ValueError, match="chunk_size"):
        _run(memory_chunked, inp, "linear", 0)
    with pytest.raises(ValueError, match="unknown memory kind"):
        _run(memory_reference, inp, "rnn")
