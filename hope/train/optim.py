"""The outer optimiser: AdamW, SGD, Muon (+ AdamW) and the paper's M3, built from named parameters.

`optimizer_type` (README.md, "Configuration"), with `base_momentum` as the first-moment coefficient of each:

- ``"adamw"``: AdamW, ``betas = (base_momentum, beta2)``.
- ``"sgd"``:   SGD with momentum ``base_momentum``, Nesterov off.
- ``"muon"``:  PyTorch's ``torch.optim.Muon`` (momentum ``base_momentum``, Nesterov on as in Keller Jordan's
  Muon) on 2-D hidden weight matrices, AdamW on everything else (embeddings, the output head, 1-D gains and biases,
  tensors of other ranks). Embeddings and heads are recognised by name (:func:`is_embedding_or_head`), so name
  them with an ``embed``/``emb``/``wte``/``wpe``/``head`` token.
- ``"m3"``:    :class:`M3`, Multi-scale Momentum Muon (Nested Learning, Algorithm 1), on the same 2-D hidden
  matrices, AdamW on everything else (the Muon convention: orthogonalised updates suit hidden matrices; an
  embedding table is a lookup, not a linear map of the residual stream).

Weight decay (nanoGPT's grouping): every tensor with ``ndim >= 2`` is decayed, embeddings included; 1-D gains,
biases and scalars are not.

Learning-rate convention: every param group carries ``lr_scale`` (1.0 for all groups built here). A schedule sets
``group["lr"] = lr_at(step) * group["lr_scale"]`` (:func:`set_lr` does this), so groups keep their relative rates.
Muon uses ``adjust_lr_fn="match_rms_adamw"`` (Moonshot, "Muon is Scalable for LLM Training"): its update RMS then
matches AdamW's, so one ``lr`` and one ``weight_decay`` serve both halves and every ``lr_scale`` stays 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from hope.config import OPTIMIZER_TYPES  # one list of valid types, owned by the config

# Keller Jordan's quintic Newton-Schulz coefficients (the ones torch.optim.Muon uses): they maximise the slope at 0
# so 5 steps suffice, at the price of singular values landing in a band around 1 rather than exactly on it.
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Name tokens (split on "." and "_") that mark an embedding table or output head; such 2-D tensors go to AdamW
# under "muon"/"m3". Whole tokens, so "attn.heads.proj" or "num_heads" do not match while "lm_head" does.
_EMBEDDING_OR_HEAD_TOKENS = frozenset({"embed", "embeds", "embedding", "embeddings", "emb", "wte", "wpe", "head",
                                       "unembed", "unembedding"})

M3Variant = Literal["paper", "ema"]


def is_embedding_or_head(name: str) -> bool:
    """Whether a parameter name says embedding table or output head (``tok_embed.weight``, ``lm_head.weight``)."""
    return any(tok in _EMBEDDING_OR_HEAD_TOKENS for tok in re.split(r"[._]", name.lower()))


def newton_schulz(matrix: Tensor, steps: int = 5, coefficients: tuple[float, float, float] = MUON_NS_COEFFICIENTS,
                  eps: float = 1e-7) -> Tensor:
    """Approximate the orthogonal polar factor ``U V^T`` of ``matrix = U S V^T`` (Muon's ``Newton-Schulz_T``).

    Iterates ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` from ``X_0 = matrix / ||matrix||_F`` (the Frobenius
    norm bounds the spectral norm, so every singular value starts in [0, 1]); each step maps a singular value
    ``s -> a s + b s^3 + c s^5``. With the default quintic coefficients the result's singular values lie in a band
    around 1 (about [0.7, 1.2]), not on 1; ``(1.5, -0.5, 0.0)`` is the classic cubic iteration, which converges
    to exactly ``U V^T`` given enough steps. Computed in float32, returned in ``matrix.dtype``; a zero matrix maps
    to zero.
    """
    if matrix.ndim != 2:
        raise ValueError(f"newton_schulz expects a 2-D matrix, got shape {tuple(matrix.shape)}")
    a, b, c = coefficients
    x = matrix.float()
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide orientation so the Gram matrix A is the smaller one
        x = x.mT
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.mT  # (m, m), m = min(rows, cols)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    if tall:
        x = x.mT
    return x.to(matrix.dtype)


class M3(Optimizer):
    r"""Multi-scale Momentum Muon (M3): Nested Learning (Behrouz et al., arXiv 2512.24695), Algorithm 1.

    The optimiser as a two-level continuum memory over gradients: a fast momentum written every step and a slow
    momentum written once per chunk of ``frequency`` steps from the chunk's summed gradients, both orthogonalised
    by Newton-Schulz and combined under an Adam-style second moment. Algorithm 1 as printed (symbols: eta = ``lr``,
    beta_1..3 = ``betas``, alpha, epsilon = ``eps``, f = ``frequency``, T = ``ns_steps``; taken from transcriptions
    of the paper's algorithm box that agree with each other, not from the PDF itself)::

        M1_0, M2_0 <- 0,  V_0 <- 0
        for lower-frequency iteration k = 0, 1, 2, ...:
            M2 <- M2 + beta_3 * sum of g_i over the previous chunk    (slow memory; the sum is empty for k = 0)
            O2 <- Newton-Schulz_T(M2)
            for t = kf+1, ..., (k+1)f:
                g_t = grad L(Theta_{t-1})
                M1_t = M1_{t-1} + beta_1 g_t                           (first momentum)
                V_t  = V_{t-1} + beta_2 g_t^2                          (second momentum)
                O1_t = Newton-Schulz_T(M1_t)
                Theta_t = Theta_{t-1} - eta (O1_t + alpha O2) / sqrt(V_t + epsilon)

    Implemented per parameter, equivalently: every step adds ``g`` to a chunk accumulator, and after steps
    ``f, 2f, ...`` the accumulator is folded into ``M2``, cleared, and ``O2 = NS(M2)`` is cached for the next
    ``f`` steps (so steps 1..f use ``O2 = 0``). The printed sum runs over ``i = (k-1)f .. kf``, f+1 terms; we read
    it as the f gradients of the previous chunk, so that every gradient enters ``M2`` exactly once.

    ``variant`` chooses how the three recurrences read:

    - ``"paper"`` (default): as printed, undecayed sums scaled by beta. Note what this implies: NS is
      scale-invariant, so beta_1 and beta_3 do not change the update of a matrix, V is an AdaGrad-style running
      sum (the effective step shrinks like 1/sqrt(t)), and M2 is M1 lagged by up to f steps, up to scale.
    - ``"ema"``: the reading that makes each beta a decay coefficient, as the paper's constraint ``beta < 1``
      suggests: ``X <- beta X + (1 - beta) u`` for M1, V and M2 (u = g, g^2, chunk sum), each bias-corrected as
      in Adam (M2 by ``1 - beta_3^k`` after k chunks). Here M1 remembers ~1/(1-beta_1) steps and M2
      ~f/(1-beta_3) steps, which is what makes the two momenta two time scales.

    In both variants the numerator O is unit-free while sqrt(V) carries the gradient's units, so unlike Adam the
    step scales as 1/|g|: a good ``lr`` depends on the gradient scale (and ``eps`` caps the step where g ~ 0).

    Beyond Algorithm 1: decoupled weight decay ``Theta <- Theta (1 - eta lambda)`` before the step (AdamW's; 0 by
    default). Tensors that are not matrices get the same algorithm without orthogonalisation (``O = M``); tensors
    with ``ndim > 2`` are orthogonalised as ``(shape[0], -1)`` matrices. (:func:`build_optimizer` routes only 2-D
    hidden matrices here, so neither case arises there.) Newton-Schulz uses Muon's quintic coefficients; the algorithm
    box names only "Newton-Schulz_T" and gives no hyperparameter values; the defaults here are ours.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9),
                 alpha: float = 1.0, eps: float = 1e-8, frequency: int = 4, ns_steps: int = 5,
                 weight_decay: float = 0.0, variant: M3Variant = "paper") -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be three values in [0, 1), got {betas}")
        if alpha < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"need alpha >= 0, eps > 0, weight_decay >= 0; got {alpha}, {eps}, {weight_decay}")
        if int(frequency) != frequency or frequency < 1 or ns_steps < 0:
            raise ValueError(f"frequency must be an integer >= 1 and ns_steps >= 0; got {frequency}, {ns_steps}")
        if variant not in ("paper", "ema"):
            raise ValueError(f"variant must be 'paper' or 'ema', got {variant!r}")
        defaults = dict(lr=lr, betas=tuple(betas), alpha=alpha, eps=eps, frequency=int(frequency),
                        ns_steps=ns_steps, weight_decay=weight_decay, variant=variant)
        super().__init__(params, defaults)

    @staticmethod
    def _direction(buf: Tensor, correction: float, ns_steps: int) -> Tensor:
        """O = Newton-Schulz_T(M) for matrices; M itself (bias-corrected in the "ema" variant) otherwise."""
        if buf.ndim >= 2:  # NS is scale-invariant, so the bias correction would not change it
            return newton_schulz(buf.reshape(buf.shape[0], -1), ns_steps).reshape_as(buf)
        return buf / correction

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps, f = group["lr"], group["alpha"], group["eps"], group["frequency"]
            beta1, beta2, beta3 = group["betas"]
            ema = group["variant"] == "ema"
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("M3 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    for key in ("fast_momentum", "slow_momentum", "second_moment", "chunk_grad_sum", "slow_direction"):
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m1, v = state["fast_momentum"], state["second_moment"]

                if group["weight_decay"] != 0:
                    p.mul_(1 - lr * group["weight_decay"])
                if ema:
                    m1.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    c1, c2 = 1 - beta1**t, 1 - beta2**t
                else:  # Algorithm 1: M1 <- M1 + beta_1 g ;  V <- V + beta_2 g^2
                    m1.add_(g, alpha=beta1)
                    v.addcmul_(g, g, value=beta2)
                    c1 = c2 = 1.0
                state["chunk_grad_sum"].add_(g)

                # Theta <- Theta - eta (O1 + alpha O2) / sqrt(V + eps)
                update = self._direction(m1, c1, group["ns_steps"])
                if alpha != 0:
                    update = update.add_(state["slow_direction"], alpha=alpha)
                denom = (v / c2).add_(eps).sqrt_()
                p.addcdiv_(update, denom, value=-lr)

                if t % f == 0:  # end of chunk k: the slow level writes once, for use during chunk k+1
                    m2, s = state["slow_momentum"], state["chunk_grad_sum"]
                    if ema:
                        m2.mul_(beta3).add_(s, alpha=1 - beta3)
                        c3 = 1 - beta3 ** (t // f)
                    else:  # M2 <- M2 + beta_3 sum_{i in chunk} g_i
                        m2.add_(s, alpha=beta3)
                        c3 = 1.0
                    s.zero_()
                    state["slow_direction"].copy_(self._direction(m2, c3, group["ns_steps"]))
        return loss


class CombinedOptimizer(Optimizer):
    """Several optimisers over disjoint parameters, driven as one (Muon/M3 on matrices + AdamW on the rest).

    A ``torch.optim.Optimizer`` subclass, so ``isinstance`` checks (torch LR schedulers, type hints) pass, that
    owns no state of its own: ``param_groups`` is the concatenation of the children's group dicts (the same dict
    objects, so writing ``group["lr"]`` reaches the child), ``state`` a read-only merged view, and ``step``,
    ``zero_grad``, ``state_dict`` and ``load_state_dict`` delegate to each child in order. Both are properties
    rather than stored lists because a child's ``load_state_dict`` replaces its group dicts.
    ``add_param_group`` is not supported: add the group to a child instead.
    """

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimizer")
        self.optimizers = list(optimizers)
        self._initialising = True
        params = [p for opt in self.optimizers for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {})  # for the hook bookkeeping; its own groups and state are discarded
        self._initialising = False

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if not self._initialising:
            raise AttributeError("CombinedOptimizer.param_groups is the children's groups; edit those instead")

    @property  # type: ignore[override]
    def state(self) -> dict[Tensor, Any]:
        merged: dict[Tensor, Any] = {}
        for opt in self.optimizers:
            merged.update(opt.state)
        return merged

    @state.setter
    def state(self, value: Any) -> None:
        if not self._initialising:
            raise AttributeError("CombinedOptimizer.state is the children's state; edit those instead")

    def __getstate__(self) -> dict[str, Any]:  # pickle/deepcopy: everything lives in the children
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self._initialising:
            return
        raise NotImplementedError("add the group to one of CombinedOptimizer.optimizers instead")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["optimizers"]
        if len(saved) != len(self.optimizers):
            raise ValueError(f"state dict holds {len(saved)} optimizers, this CombinedOptimizer has "
                             f"{len(self.optimizers)} (was it built for another optimizer_type or model?)")
        for opt, sd in zip(self.optimizers, saved):
            opt.load_state_dict(sd)


def decays(name: str, p: Tensor, no_decay: Collection[str] = ()) -> bool:
    """Whether weight decay applies: nanoGPT's split (tensors with ndim >= 2) minus the names in `no_decay` (the
    parameters whose layers declare the `no_decay` role, `hope.layers.roles`: the memories' priors and gates, which
    decay would pull towards zero and sigmoid(0); architecture.md, "No weight decay")."""
    return p.ndim >= 2 and name not in no_decay


def _decay_groups(named: list[tuple[str, Tensor]], weight_decay: float, no_decay: Collection[str] = ()
                  ) -> list[dict[str, Any]]:
    """Decay matrices and embeddings (:func:`decays`), not gains, biases, scalars or the names in `no_decay`."""
    decayed = [(n, p) for n, p in named if decays(n, p, no_decay)]
    kept = [(n, p) for n, p in named if not decays(n, p, no_decay)]
    groups = [dict(params=decayed, weight_decay=weight_decay, lr_scale=1.0),
              dict(params=kept, weight_decay=0.0, lr_scale=1.0)]
    return [g for g in groups if g["params"]]


# M3's beta_3 (slow momentum) under build_optimizer: not a config key. Under the "paper" variant it only scales M2,
# which Newton-Schulz ignores; under "ema" it sets the slow memory's horizon, ~f / (1 - beta_3) steps.
M3_DEFAULT_BETA3 = 0.9


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], optimizer_type: str, lr: float,
                    base_momentum: float, weight_decay: float, *, beta2: float = 0.95, eps: float = 1e-8,
                    m3_frequency: int = 4, m3_alpha: float = 1.0, m3_variant: M3Variant = "paper",
                    fused: bool = False, no_decay: Collection[str] = ()) -> Optimizer:
    """The outer optimiser for ``named_params`` (e.g. ``model.named_parameters()``; frozen ones are skipped).

    Args:
        named_params: ``(name, parameter)`` pairs; names decide embedding/head routing under "muon"/"m3" and are
            kept as each group's ``param_names``.
        optimizer_type: one of :data:`OPTIMIZER_TYPES` (see the module docstring).
        lr: peak learning rate, the same for every group (``lr_scale`` 1.0); a schedule overwrites ``group["lr"]``.
        base_momentum: first-moment coefficient: AdamW beta1, SGD momentum, Muon momentum, M3 beta_1.
        weight_decay: decoupled decay (L2 for SGD) on tensors with ``ndim >= 2`` except the names in `no_decay`;
            0 on the rest.
        beta2: second-moment coefficient of AdamW (and of the AdamW half of "muon"/"m3") and M3's beta_2.
        eps: denominator epsilon of AdamW and M3.
        m3_frequency: M3's f, optimiser steps per slow-momentum write.
        m3_alpha: M3's alpha, weight of the slow direction.
        m3_variant: M3's recurrences, "paper" (Algorithm 1 as printed) or "ema" (see :class:`M3`).
        fused: AdamW (alone or as the other half) as one fused kernel per device and dtype (``fused=True``), whose
            ``found_inf`` input skips a step on the device: parameters, moments and step count unchanged, no host
            read (the training loop's non-finite guard uses it); needs the parameters on a CPU or CUDA device.
        no_decay: parameter names kept out of weight decay although matrices (the training loop passes those with
            the `no_decay` role, `hope.layers.roles`).

    Returns a ``torch.optim.Optimizer``: AdamW/SGD directly, a :class:`CombinedOptimizer` (matrix optimiser first,
    then AdamW; a half with no parameters is left out) for "muon"/"m3".
    """
    if optimizer_type not in OPTIMIZER_TYPES:
        raise ValueError(f"unknown optimizer_type {optimizer_type!r}; valid: {', '.join(OPTIMIZER_TYPES)}")
    named = [(n, p) for n, p in named_params if p.requires_grad]
    if not named:
        raise ValueError("build_optimizer: no trainable parameters")

    def adamw(params: list[tuple[str, Tensor]]) -> Optimizer:
        return torch.optim.AdamW(_decay_groups(params, weight_decay, no_decay), lr=lr, betas=(base_momentum, beta2), eps=eps,
                                 fused=fused or None)

    if optimizer_type == "adamw":
        return adamw(named)
    if optimizer_type == "sgd":
        return torch.optim.SGD(_decay_groups(named, weight_decay, no_decay), lr=lr, momentum=base_momentum, nesterov=False)

    matrices = [(n, p) for n, p in named if p.ndim == 2 and decays(n, p, no_decay) and not is_embedding_or_head(n)]
    matrix_ids = {id(p) for _, p in matrices}
    rest = [(n, p) for n, p in named if id(p) not in matrix_ids]
    children: list[Optimizer] = []
    if matrices:
        group = [dict(params=matrices, weight_decay=weight_decay, lr_scale=1.0)]
        if optimizer_type == "muon":
            if not hasattr(torch.optim, "Muon"):
                raise ValueError(f"optimizer_type 'muon' needs torch.optim.Muon (torch >= 2.9); this is torch "
                                 f"{torch.__version__}")
            children.append(torch.optim.Muon(group, lr=lr, weight_decay=weight_decay, momentum=base_momentum,
                                             nesterov=True, adjust_lr_fn="match_rms_adamw"))
        else:
            children.append(M3(group, lr=lr, betas=(base_momentum, beta2, M3_DEFAULT_BETA3), alpha=m3_alpha, eps=eps,
                               frequency=m3_frequency, weight_decay=weight_decay, variant=m3_variant))
    if rest:
        children.append(adamw(rest))
    return CombinedOptimizer(children)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr * group["lr_scale"]`` (1.0 where a group has no ``lr_scale``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


__all__ = ["OPTIMIZER_TYPES", "MUON_NS_COEFFICIENTS", "M3", "CombinedOptimizer", "build_optimizer", "set_lr",
           "newton_schulz", "is_embedding_or_head"]
