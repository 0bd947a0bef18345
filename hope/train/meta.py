"""Meta-learning outer loop (architecture.md, "Meta-parameters"): learn the fast memories' starting point and write rates.

Every `meta.outer_frequency` optimiser steps the training loop calls `MetaLearner.round(step)`, which runs
`meta.outer_steps` meta-updates. One meta-update:

    support, query  = a segment of `support_len` bytes and the `query_len` bytes that follow it (meta split)
    state           = init_state; then `inner_steps` in-context passes over the support, state carried
                      (each pass is an ordinary forward: the SMT, fast CMS level and episodic bank write in
                      context; inner_steps 0 = no adaptation, the state stays at init)
    L_adapted       = loss on the query read from that adapted state
    meta-parameters <- Adam(meta.lr) step on dL_adapted/dtheta_meta, backpropagated THROUGH the writes

The meta-parameters are exactly those whose layers declare the `meta` role (`hope.layers.roles`): the memories'
initial states (the priors `smt.prior_w`
of a linear memory or `smt.prior_w1/2` of an mlp one, `cms.prior_w1/2`), the SMT gate biases (`smt.gates.bias`:
eta = inner learning rate, alpha = retention), the k/v boxes' relative rates (`smt.kv_rate_logit`) and the fast CMS level's inner learning-rate scale (`cms.eta_logit`). The training loop's
optimiser also holds them; the meta-step changes only them and leaves every `.grad` in the model as it found
it (gradients are taken with `torch.autograd.grad`, handed to the meta-optimiser, then the previous `.grad`
is put back), so nothing leaks into the outer optimiser's next step or into the slow CMS level's gradient
accumulation.

Data (a deliberate deviation from the manual): the manual says the meta update runs "on the validation set".
Here it runs on a **meta split held out of the training data** instead: the last `meta.split` fraction of
`corpus.train`, which is also removed from the training batches (`hold_out_meta`). Meta-updates on the
validation split would train on the very text every reported validation figure is computed on. The
validation split is only read by `adaptation_gain` (evaluation, no updates) for the reports.

Metrics of a round (averaged over its outer steps): `meta_query_loss_init` (query read cold, from the init
state), `meta_query_loss_adapted` (after the support passes) and `meta_gain` = init - adapted (nats/byte;
positive = adaptation helps). The adapted query also sees the support through attention (the state carries
the attention cache), so `adaptation_gain` additionally measures the gain with memory writes switched off
(mem_write gate 0: context through attention only) to separate what the memory writes contribute.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hope.config import Config
from hope.data.corpus import Corpus
from hope.errors import HopeError
from hope.layers.roles import META, with_role
from hope.runtime import autocast

GAIN_KEYS = ("meta_query_loss_init", "meta_query_loss_adapted", "meta_gain")


# ----------------------------------------------------------------------------------------------- data


@dataclass
class MetaSplitCorpus(Corpus):
    """A corpus whose `train` excludes the meta split; `meta` holds it (the bytes just before `val`)."""

    meta: torch.Tensor  # (N_meta,) uint8: the last `fraction` of the original training split


def hold_out_meta(corpus: Corpus, fraction: float) -> MetaSplitCorpus:
    """Split the last `fraction` of `corpus.train` off as the meta split; `train` keeps the rest, `val` is untouched.

    Idempotent: a corpus that already holds a meta split is returned as is.
    """
    if isinstance(corpus, MetaSplitCorpus):
        return corpus
    n_meta = int(round(len(corpus.train) * fraction))
    if not 0 < n_meta < len(corpus.train):
        raise HopeError(f"{corpus.name}: meta.split {fraction} of {len(corpus.train)} training bytes leaves no meta "
                        "split or no training data (use a longer file or change meta.split)")
    return MetaSplitCorpus(train=corpus.train[:-n_meta], val=corpus.val, name=corpus.name, meta=corpus.train[-n_meta:])


def _pair_rows(data: torch.Tensor, starts: list[int], support_len: int, query_len: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support (B, S), query inputs (B, Q), query targets (B, Q)) of the spans data[s : s + S + Q + 1]."""
    span = support_len + query_len + 1
    rows = torch.stack([data[s:s + span] for s in starts]).long()  # (B, S + Q + 1)
    return rows[:, :support_len], rows[:, support_len:support_len + query_len], rows[:, support_len + 1:]


def sample_meta_pairs(data: torch.Tensor, batch_size: int, support_len: int, query_len: int, seed: int, index: int,
                      rank: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Meta batch number `index`: random support/query spans inside `data`, a pure function of (seed, index, rank)."""
    span = support_len + query_len + 1
    if len(data) < span:
        raise HopeError(f"the meta split has {len(data)} bytes, fewer than support_len + query_len + 1 = {span} "
                        "(raise meta.split, use a longer file, or shorten meta.support_len/query_len)")
    gen = torch.Generator().manual_seed((seed * 1_000_003 + index * 7_919 + rank * 104_729 + 17) % (2**63))
    starts = torch.randint(0, len(data) - span + 1, (batch_size,), generator=gen).tolist()
    return _pair_rows(data, starts, support_len, query_len)


def eval_pair_starts(n_bytes: int, support_len: int, query_len: int, n_pairs: int) -> list[int]:
    """Start offsets of non-overlapping support+query spans spread evenly over a split of `n_bytes`."""
    span = support_len + query_len + 1
    total = n_bytes // span
    if total == 0:
        raise HopeError(f"the validation split has {n_bytes} bytes, fewer than support_len + query_len + 1 = {span}")
    if n_pairs >= total:
        return [i * span for i in range(total)]
    stride = total / n_pairs
    return [int(i * stride) * span for i in range(n_pairs)]


# ----------------------------------------------------------------------------------------------- model side


def check_meta_supported(cfg: Config) -> None:
    """Meta-learning adapts fast state; the baseline has none."""
    if cfg.model_type != "hope":
        raise HopeError(f"meta-learning needs HOPE's fast memories (model_type: hope); model_type "
                        f"'{cfg.model_type}' has no fast state to meta-learn")


def meta_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The named meta-parameters of `model`: those with the `meta` role (architecture.md, "Meta-parameters")."""
    named = with_role(model, META)
    if not named:
        raise HopeError("this model has no meta-parameters (memory initial states, gate biases, inner-lr scales)")
    return named


def adapt(model: torch.nn.Module, support: torch.Tensor, inner_steps: int) -> dict:
    """Fresh state, then `inner_steps` in-context passes over `support` (B, S) with the state carried."""
    state = model.init_state(support.shape[0], support.device)
    for _ in range(inner_steps):
        _, _, state = model(support, state=state)
    return state


def query_row_losses(model: torch.nn.Module, query_x: torch.Tensor, query_y: torch.Tensor, state: dict | None
                     ) -> torch.Tensor:
    """Mean next-byte loss of each query row (B,), read from `state` (None = a fresh state)."""
    logits, _, _ = model(query_x, state=state)  # (B, Q, V)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), query_y.reshape(-1), reduction="none")
    return nll.view(query_y.shape).mean(1)


def meta_loss(model: torch.nn.Module, support: torch.Tensor, query_x: torch.Tensor, query_y: torch.Tensor,
              inner_steps: int) -> torch.Tensor:
    """The meta-objective: query loss after adapting on the support; differentiable through the writes."""
    return query_row_losses(model, query_x, query_y, adapt(model, support, inner_steps)).mean()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class MetaLearner:
    """Runs the meta rounds of `hope.train.loop.train` (constructed there when `meta.use` is true).

    `corpus` should already hold the meta split out of its training data (`hold_out_meta`, applied by the
    caller before the training batches are drawn); `train_corpus` is the corpus training should sample from.
    With distributed training every rank draws its own pairs and the meta-gradients are averaged across ranks,
    so the meta-parameters stay identical everywhere.
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, corpus: Corpus, device: torch.device | str):
        check_meta_supported(cfg)
        if not isinstance(corpus, MetaSplitCorpus):
            warnings.warn("MetaLearner got a corpus without a held-out meta split: the meta split is taken from the "
                          "end of corpus.train now, but the training batches were drawn from all of it (apply "
                          "hope.train.meta.hold_out_meta before building the loader)", stacklevel=2)
            corpus = hold_out_meta(corpus, cfg.meta.split)
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self.train_corpus: MetaSplitCorpus = corpus
        self.meta_data = corpus.meta
        span = cfg.meta.support_len + cfg.meta.query_len + 1
        if len(self.meta_data) < span:
            raise HopeError(f"the meta split has {len(self.meta_data)} bytes, fewer than support_len + query_len + 1 "
                            f"= {span} (raise meta.split, use a longer file, or shorten meta.support_len/query_len)")
        self.named_params = meta_parameters(model)
        self.params = [p for _, p in self.named_params]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.meta.lr)
        self.rank, self.world_size = _world()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def _step(self, grads: list[torch.Tensor]) -> float:
        """One meta-optimiser step with `grads`; returns the (pre-clip) gradient norm, nan when skipped."""
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        if not torch.isfinite(norm):
            return float("nan")
        clip = self.cfg.grad_clip_norm
        if clip > 0 and norm > clip:
            grads = [g * (clip / (norm + 1e-6)) for g in grads]
        saved = [p.grad for p in self.params]  # whatever the training loop holds (e.g. None after its step)
        try:
            for p, g in zip(self.params, grads):
                p.grad = g.to(p.dtype)
            self.optimizer.step()
        finally:
            for p, g in zip(self.params, saved):
                p.grad = g
        return float(norm)

    def round(self, step: int) -> dict[str, float | int | None]:
        """`meta.outer_steps` meta-updates; returns the round's metrics averaged over them."""
        cfg, meta, model = self.cfg, self.cfg.meta, self.model
        was_training = model.training
        model.eval()  # no dropout: deterministic, and no draws from the global RNG the training run uses
        sums = torch.zeros(3, dtype=torch.float64)
        norms, skipped = [], 0
        try:
            for k in range(meta.outer_steps):
                support, qx, qy = (t.to(self.device) for t in sample_meta_pairs(
                    self.meta_data, cfg.batch_size, meta.support_len, meta.query_len, cfg.seed,
                    step * meta.outer_steps + k, self.rank))
                with autocast(self.device, cfg.amp, cfg.amp_dtype):
                    adapted = meta_loss(model, support, qx, qy, meta.inner_steps)
                if meta.inner_steps > 0:
                    with torch.no_grad(), autocast(self.device, cfg.amp, cfg.amp_dtype):
                        cold = query_row_losses(model, qx, qy, None).mean()
                else:
                    cold = adapted.detach()  # no adaptation: the same number, not a recomputation
                grads = torch.autograd.grad(adapted, self.params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]
                losses = torch.stack([cold.detach().double(), adapted.detach().double()])
                if self.world_size > 1:
                    flat = torch.cat([g.reshape(-1).float() for g in grads])
                    dist.all_reduce(flat)
                    dist.all_reduce(losses)
                    flat, losses = flat / self.world_size, losses / self.world_size
                    grads = [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in self.params]), self.params)]
                norm = self._step(grads)
                if math.isnan(norm):
                    skipped += 1
                else:
                    norms.append(norm)
                c, a = losses.tolist()
                sums += torch.tensor([c, a, c - a], dtype=torch.float64)
        finally:
            model.train(was_training)
        avg = (sums / meta.outer_steps).tolist()
        out = dict(zip(GAIN_KEYS, avg))
        out["meta_grad_norm"] = sum(norms) / len(norms) if norms else None  # None: every update was skipped
        out["meta_skipped"] = skipped
        return out


# ----------------------------------------------------------------------------------------------- evaluation


@dataclass
class GainResult:
    """Per-pair query losses (N,) of an adaptation-gain evaluation; `*_nowrite` with memory writes off."""

    loss_init: torch.Tensor
    loss_adapted: torch.Tensor
    loss_init_nowrite: torch.Tensor
    loss_adapted_nowrite: torch.Tensor

    @property
    def gain(self) -> torch.Tensor:
        return self.loss_init - self.loss_adapted

    @property
    def memory_gain(self) -> torch.Tensor:
        """The part of the gain that needs memory writes: gain minus the gain with writes off."""
        return self.gain - (self.loss_init_nowrite - self.loss_adapted_nowrite)

    def summary(self) -> dict[str, float]:
        n = len(self.loss_init)
        return {"pairs": n, "query_loss_init": _mean(self.loss_init), "query_loss_adapted": _mean(self.loss_adapted),
                "gain": _mean(self.gain), "gain_se": _se(self.gain),
                "context_gain_no_writes": _mean(self.loss_init_nowrite - self.loss_adapted_nowrite),
                "memory_write_gain": _mean(self.memory_gain), "memory_write_gain_se": _se(self.memory_gain)}


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def _se(x: torch.Tensor) -> float:
    return float(x.double().std() / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def paired_difference(after: torch.Tensor, before: torch.Tensor) -> dict[str, float]:
    """Mean and standard error of after - before over the same pairs."""
    diff = after - before
    return {"mean": _mean(diff), "se": _se(diff)}


@torch.no_grad()
def adaptation_gain(model: torch.nn.Module, data: torch.Tensor, cfg: Config, n_pairs: int,
                    device: torch.device | str | None = None) -> GainResult:
    """Adaptation gain of `model` on support/query pairs spread evenly over `data` (evaluation only, no updates).

    Each pair: the query read cold, and after `meta.inner_steps` passes over its support; both again with
    memory writes switched off (mem_write gate 0), which leaves only the context attention sees.
    """
    meta = cfg.meta
    device = torch.device(device) if device is not None else next(model.parameters()).device
    starts = eval_pair_starts(len(data), meta.support_len, meta.query_len, n_pairs)
    was_training, gate, surprise = model.training, model.mem_gate, model.surprise_scale
    model.eval()
    out: dict[str, list[torch.Tensor]] = {f.name: [] for f in dataclasses.fields(GainResult)}
    try:
        for suffix, mem_gate in (("", gate), ("_nowrite", 0.0)):
            model.set_schedules(mem_gate, surprise)
            for i in range(0, len(starts), cfg.batch_size):
                support, qx, qy = (t.to(device) for t in _pair_rows(data, starts[i:i + cfg.batch_size],
                                                                     meta.support_len, meta.query_len))
                with autocast(device, cfg.amp, cfg.amp_dtype):
                    cold = query_row_losses(model, qx, qy, None)
                    adapted = (query_row_losses(model, qx, qy, adapt(model, support, meta.inner_steps))
                               if meta.inner_steps > 0 else cold)
                out["loss_init" + suffix].append(cold.double().cpu())
                out["loss_adapted" + suffix].append(adapted.double().cpu())
    finally:
        model.set_schedules(gate, surprise)
        model.train(was_training)
    return GainResult(**{k: torch.cat(v) for k, v in out.items()})
