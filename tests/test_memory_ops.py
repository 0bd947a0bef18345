"""Invariants of the neural-memory update (architecture.md §7.1, §7.2, §7.6, §7.8).

The chunked fast path must equal the per-token reference (outputs, final state and gradients) in float64; the
reference itself is checked against an independent per-token rule written here with torch.func.grad.
"""

import time

import pytest
import torch
import torch.nn.functional as F

from hope.ops.memory import inner_grads, memory_apply, memory_chunked, memory_reference

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
KINDS = ("mlp", "linear")


def _make(
    kind: str, *, B: int = 2, H: int = 2, T: int = 13, d: int = 6, h: int = 8, momentum: bool = True,
    seed: int = 0, dtype: torch.dtype = DT, edge_gates: bool = True,
) -> dict:
    """Random memory inputs; with ``edge_gates`` some gates are exactly 0 or 1 (the decay products' edge cases)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    if kind == "mlp":
        weights = (rand(B, H, d, h, scale=0.4), rand(B, H, h, d, scale=0.4))
    else:
        weights = (rand(B, H, d, d, scale=0.4),)
    u = lambda: torch.rand(B, H, T, generator=g, dtype=dtype)  # noqa: E731
    eta, alpha, beta = 0.5 * u(), 0.5 + 0.5 * u(), u()
    if edge_gates and T > 4:
        alpha[..., 2], alpha[..., 4], beta[..., 1], beta[..., 3], eta[..., 3] = 0.0, 1.0, 0.0, 1.0, 0.0
    return dict(
        weights=weights,
        momentum=tuple(0.1 * rand(*w.shape) for w in weights) if momentum else None,
        k=F.normalize(rand(B, H, T, d), dim=-1),
        v=rand(B, H, T, d),
        q=F.normalize(rand(B, H, T, d), dim=-1),
        eta=eta, alpha=alpha, beta=beta,
    )


def _call(fn, inp: dict, chunk_size: int, **flags):
    return fn(
        inp["weights"], inp["momentum"], inp["k"], inp["v"], inp["q"], inp["eta"], inp["alpha"], inp["beta"],
        chunk_size, **flags,
    )


def _flat(out) -> list[torch.Tensor]:
    """(o, weights, momentum) -> list of tensors, None entries dropped."""
    o, w, s = out
    return [x for x in (o, *w, *(s or ())) if x is not None]


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **TOL)


# --- 1. chunked == reference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("self_target", [False, True])
@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("chunk_size,T", [(1, 13), (3, 13), (4, 37), (16, 37), (16, 5), (4, 32)])
def test_chunked_matches_reference(kind, self_target, precondition, momentum, chunk_size, T):
    inp = _make(kind, T=T, momentum=momentum, seed=T * 100 + chunk_size)
    flags = dict(kind=kind, self_target=self_target, precondition=precondition)
    chunked = _flat(_call(memory_chunked, inp, chunk_size, **flags))
    _assert_close(chunked, _flat(_call(memory_reference, inp, chunk_size, **flags)))


@pytest.mark.parametrize("kind", KINDS)
def test_write_only_matches_read(kind):
    """q=None gives o=None and the same final state as a call that also reads."""
    inp = _make(kind, T=11)
    flags = dict(kind=kind, self_target=True, precondition=True)
    o, w, s = _call(memory_chunked, {**inp, "q": None}, 4, **flags)
    assert o is None
    _assert_close([*w, *s], _flat(_call(memory_chunked, inp, 4, **flags))[1:])
    o_ref, w_ref, s_ref = _call(memory_reference, {**inp, "q": None}, 4, **flags)
    assert o_ref is None
    _assert_close([*w, *s], [*w_ref, *s_ref])


# --- 2. gradients ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("self_target", [False, True])
@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 4])
def test_chunked_gradients_match_reference(kind, self_target, precondition, momentum, chunk_size):
    inp = _make(kind, T=10, d=5, h=6, momentum=momentum, seed=7 + chunk_size)
    leaves = [*inp["weights"], *(inp["momentum"] or ())] + [inp[x] for x in ("k", "v", "q", "eta", "alpha", "beta")]
    for x in leaves:
        x.requires_grad_(True)
    flags = dict(kind=kind, self_target=self_target, precondition=precondition)
    g = torch.Generator().manual_seed(1)
    probes = None
    grads = []
    for fn in (memory_chunked, memory_reference):
        outs = _flat(_call(fn, inp, chunk_size, **flags))
        if probes is None:  # a random linear functional of o and the final state
            probes = [torch.randn(x.shape, generator=g, dtype=DT) for x in outs]
        loss = sum((x * p).sum() for x, p in zip(outs, probes))
        grads.append(torch.autograd.grad(loss, leaves, allow_unused=True))
    for name, a, b in zip(range(len(leaves)), *grads):
        if b is None:  # beta without momentum
            assert a is None or torch.count_nonzero(a) == 0, name
            continue
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, **TOL)


# --- 3. chunk_size 1 == the exact per-token rule ------------------------------------------------------------------


def _m(kind: str, w: tuple, z: torch.Tensor) -> torch.Tensor:
    """M(z) for one token per (b, h): z (B, H, d), written independently of memory_apply."""
    if kind == "mlp":
        w1, w2 = w
        return z + torch.einsum("bhij,bhj->bhi", w1, F.silu(torch.einsum("bhij,bhj->bhi", w2, z)))
    return torch.einsum("bhij,bhj->bhi", w[0], z)


def _exact_rule(inp: dict, kind: str, self_target: bool, precondition: bool):
    w, s = inp["weights"], inp["momentum"]
    outs = []
    for t in range(inp["k"].shape[2]):
        k_t, v_t, q_t = (inp[x][:, :, t] for x in "kvq")
        y = _m(kind, w, v_t).detach() if self_target else v_t
        g = list(torch.func.grad(lambda ws: 0.5 * ((_m(kind, ws, k_t) - y) ** 2).sum())(w))
        if precondition:  # W (alpha I - eta k k^T): the extra term lands on the weight fed by k
            i = 1 if kind == "mlp" else 0
            g[i] = g[i] + torch.einsum("bhi,bhj->bhij", torch.einsum("bhij,bhj->bhi", w[i], k_t), k_t)
        e, a, b = (inp[x][:, :, t, None, None] for x in ("eta", "alpha", "beta"))
        if s is None:
            w = tuple(a * wi - e * gi for wi, gi in zip(w, g))
        else:
            s = tuple(b * si - e * gi for si, gi in zip(s, g))
            w = tuple(a * wi + si for wi, si in zip(w, s))
        outs.append(_m(kind, w, q_t))
    return torch.stack(outs, dim=2), w, s


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "self_target,precondition,momentum",
    [(False, False, False), (True, True, True), (True, False, True), (False, True, False)],
)
def test_chunk_size_one_is_exact_rule(kind, self_target, precondition, momentum):
    inp = _make(kind, T=6, momentum=momentum, seed=3)
    flags = dict(kind=kind, self_target=self_target, precondition=precondition)
    expected = _flat(_exact_rule(inp, kind, self_target, precondition))
    _assert_close(_flat(_call(memory_chunked, inp, 1, **flags)), expected)
    _assert_close(_flat(_call(memory_reference, inp, 1, **flags)), expected)


# --- 4. hand-written inner gradient == torch.func.grad --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_inner_grads_match_autograd(kind):
    inp = _make(kind, T=7)
    w, k, target = inp["weights"], inp["k"], inp["v"]

    def loss(ws):
        out = torch.stack([_m(kind, ws, k[:, :, t]) for t in range(k.shape[2])], dim=2)
        return 0.5 * ((out - target.detach()) ** 2).sum()

    per_token = torch.stack([_m(kind, w, k[:, :, t]) for t in range(7)], dim=2)
    torch.testing.assert_close(memory_apply(w, k, kind), per_token, **TOL)
    _assert_close(list(inner_grads(w, k, target, kind)), list(torch.func.grad(loss)(w)))


# --- 5-7. what a write does --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_write_lowers_associative_loss(kind):
    inp = _make(kind, T=8, momentum=False, edge_gates=False)
    inp["eta"], inp["alpha"] = torch.full_like(inp["eta"], 0.01), torch.ones_like(inp["alpha"])
    _, w_new, _ = _call(memory_chunked, inp, 8, kind=kind, self_target=False, precondition=False)

    def loss(w):  # per (b, h): each memory is written by its own chunk
        return ((memory_apply(w, inp["k"], kind) - inp["v"]) ** 2).sum(dim=(-1, -2))

    assert (loss(w_new) < loss(inp["weights"])).all()


def test_linear_delta_rule_identity():
    """M' k - v = (1 - eta)(M k - v) for a unit key (architecture.md §7.2)."""
    inp = _make("linear", T=1, d=8, momentum=False, edge_gates=False)
    inp["alpha"] = torch.ones_like(inp["alpha"])
    k, v, eta = inp["k"], inp["v"], inp["eta"][..., None]
    for fn in (memory_chunked, memory_reference):
        _, (w_new,), _ = _call(fn, inp, 1, kind="linear", self_target=False, precondition=False)
        before = memory_apply(inp["weights"], k, "linear") - v
        after = memory_apply((w_new,), k, "linear") - v
        torch.testing.assert_close(after, (1 - eta) * before, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_eta_freezes_memory(kind):
    inp = _make(kind, T=9, momentum=False)
    inp["eta"], inp["alpha"] = torch.zeros_like(inp["eta"]), torch.ones_like(inp["alpha"])
    o, w, _ = _call(memory_chunked, inp, 4, kind=kind, self_target=True, precondition=True)
    for a, b in zip(w, inp["weights"]):
        assert torch.equal(a, b)
    torch.testing.assert_close(o, memory_apply(inp["weights"], inp["q"], kind), **TOL)


# --- 8. inference mode, causality, streaming ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_gives_same_values(kind):
    inp = _make(kind, T=11)
    for w in inp["weights"]:
        w.requires_grad_(True)
    flags = dict(kind=kind, self_target=True, precondition=True)
    with_grad = _flat(_call(memory_chunked, inp, 4, **flags))
    with torch.no_grad():
        without = _flat(_call(memory_chunked, inp, 4, **flags))
    assert all(not x.requires_grad for x in without)
    for a, b in zip(with_grad, without):
        assert torch.equal(a.detach(), b)


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    """Perturbing tokens after t leaves o_{<=t} unchanged: gradients use the previous chunk's state (eq. 90 gap)."""
    inp = _make(kind, T=12)
    flags = dict(kind=kind, self_target=True, precondition=True)
    o = _call(memory_chunked, inp, 4, **flags)[0]
    for x in ("k", "v", "q", "eta", "alpha", "beta"):
        bumped = dict(inp)
        bumped[x] = inp[x].clone()
        bumped[x][:, :, 6:] += 0.3  # t = 6 is inside the second chunk [4, 8)
        o2 = _call(memory_chunked, bumped, 4, **flags)[0]
        torch.testing.assert_close(o2[:, :, :6], o[:, :, :6], rtol=0, atol=0)
        assert not torch.allclose(o2[:, :, 6:], o[:, :, 6:])


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_equals_one_pass(kind):
    """Two calls with the state carried equal one call, when the split falls on a chunk boundary."""
    inp = _make(kind, T=14)
    flags = dict(kind=kind, self_target=True, precondition=True)
    o, w, s = _call(memory_chunked, inp, 4, **flags)
    head = {x: inp[x][:, :, :8] for x in ("k", "v", "q", "eta", "alpha", "beta")}
    tail = {x: inp[x][:, :, 8:] for x in ("k", "v", "q", "eta", "alpha", "beta")}
    o1, w1, s1 = _call(memory_chunked, {**inp, **head}, 4, **flags)
    o2, w2, s2 = _call(memory_chunked, {**inp, **tail, "weights": w1, "momentum": s1}, 4, **flags)
    _assert_close([torch.cat([o1, o2], dim=2), *w2, *s2], [o, *w, *s])


# --- 9. recall sanity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 16])
def test_recall_after_orthogonal_filler(chunk_size):
    """A pair written once is recalled after 1000 delta-rule writes with keys orthogonal to its key (§7.8)."""
    d, n_fill = 64, 1000
    g = torch.Generator().manual_seed(0)
    key = F.normalize(torch.randn(d, generator=g, dtype=DT), dim=0)
    filler = torch.randn(n_fill, d, generator=g, dtype=DT)
    filler = F.normalize(filler - (filler @ key)[:, None] * key, dim=-1)  # orthogonal complement of key
    value = torch.randn(d, generator=g, dtype=DT)
    k = torch.cat([key[None], filler])[None, None]  # (1, 1, 1001, d)
    v = torch.cat([value[None], torch.randn(n_fill, d, generator=g, dtype=DT)])[None, None]
    ones = torch.ones(1, 1, n_fill + 1, dtype=DT)
    w0 = (torch.zeros(1, 1, d, d, dtype=DT),)
    flags = dict(kind="linear", self_target=False, precondition=False)
    _, w, _ = memory_chunked(w0, None, k, v, None, ones, ones, ones, chunk_size, **flags)  # eta = alpha = 1
    recalled = memory_apply(w, key[None, None, None], "linear")[0, 0, 0]
    assert F.cosine_similarity(recalled, value, dim=0) > 0.99


# --- 10. speed sanity --------------------------------------------------------------------------------------------


def test_chunked_faster_than_reference():
    """Not a benchmark (bench/ has that): the chunked path must beat the token loop clearly."""
    inp = _make("mlp", B=4, H=4, T=256, d=32, h=64, dtype=torch.float32, edge_gates=False)
    flags = dict(kind="mlp", self_target=True, precondition=True)
    times = {}
    for fn in (memory_reference, memory_chunked):
        best = float("inf")
        for _ in range(3):
            start = time.process_time()  # CPU time of this process: robust to other jobs on the machine
            with torch.no_grad():
                _call(fn, inp, 16, **flags)
            best = min(best, time.process_time() - start)
        times[fn.__name__] = best
    ratio = times["memory_reference"] / times["memory_chunked"]
    print(f"chunked/reference speed-up at B=4 H=4 T=256 d=32 h=64 C=16 fp32: {ratio:.1f}x {times}")
    assert ratio > 3


def test_rejects_malformed_inputs():
    inp = _make("mlp", T=4)
    with pytest.raises(ValueError, match="weight tensors"):
        _call(memory_chunked, inp, 2, kind="linear", self_target=False, precondition=False)
    with pytest.raises(ValueError, match="gates"):
        _call(memory_chunked, {**inp, "eta": inp["eta"][..., :3]}, 2, kind="mlp", self_target=False, precondition=False)
    with pytest.raises(ValueError, match="unknown memory kind"):
        _call(memory_reference, inp, 2, kind="rnn", self_target=False, precondition=False)
