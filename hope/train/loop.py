"""The training loop: `train(cfg)` is what `hope-train`, `hope-run-experiment`, `hope-continual`,
`hope-meta-train` and the tests all call.

One optimiser step = `grad_accum_steps` micro-batches (loss divided by that count), then a finite-loss/grad guard
(torchtitan's habit: skip and count, abort after `max_bad_steps` in a row), global-norm clipping, the step, the
EMA update.

No host synchronisation per step (so a GPU is fed step after step): the loss, the token sums behind accuracy,
the finiteness flag and the bad-step counters stay on the device, and the host reads them only at log steps
(`log_interval` and the last step), evaluation steps and when stopping (`_read_window`). The guard's exact
semantics: a step whose mean loss, global gradient norm or slow-level gradients are not all finite is skipped
on the device (`_masked_step`: parameters, optimiser state, EMA, slow-level sums and counts keep their values
bit for bit), counted in `skipped_steps`, and its token sums left out; its loss (non-finite) is still recorded
in `TrainResult.losses`. When `max_bad_steps` steps in a row are bad, the run raises `HopeError` naming the step
where the run of bad steps reached the limit, at the next read point: the steps in between run (skipped too
if non-finite) but nothing of them is saved, since every evaluation and checkpoint is a read point. The one
per-step host read left: an optimiser whose state is not all device tensors reads the skip flag (the first
step of each optimiser, which creates its state; M3, whose step count is a Python int). `tests/test_train.py`
(`test_no_host_read_between_log_steps`) pins this. Nested level stepping (architecture.md, "Slow level"): the slow CMS level's parameters live in their own
optimiser that steps only every `update_frequencies.optimizer_step` steps on the average of the gradients of the
steps in between (kept in an accumulator that the checkpoint carries); the fast levels (SMT, bank, fast CMS) learn
in context inside `forward`.

Micro-batches are independent `seq_len` windows from a fresh state, or with `stream.use` pieces of long streams
with the model state carried from step to step per micro-batch slot (truncated BPTT, hope.train.stream).

Resume is exact: batches are a pure function of (seed, step, rank), and the checkpoint holds model, EMA,
optimisers, the slow level's accumulated gradients, scaler, step, RNG states and the carried stream states.
SIGINT/SIGTERM finish the current step, save a resumable checkpoint and raise `TrainingInterrupted`.

Output: a tqdm bar (loss/acc/top5/top10/lr/tok/s) when stdout is a terminal, plain log lines otherwise, and
the run's files next to the checkpoint (`hope.runs`: `<ckpt stem>.metrics.jsonl`, `<ckpt stem>.config.yaml`). The
metrics log has one schema (`hope.runs.METRICS_SCHEMA`): a `"split": "train"` record per `log_interval`, a
`"split": "val"` record per periodic validation, and two `"final": true` records (val and train) at the end; with
`tensorboard=DIR` the same numbers go to TensorBoard. Under torchrun only rank 0 writes;
the step loss, the skip decision and the stop decision are all-reduced so every rank takes the same path.

Under torchrun the model is replicated with DDP, or with `distributed: fsdp` sharded with FSDP2
(hope.train.sharding): then parameters, gradients, optimiser state, EMA shadows and the slow level's gradient
sums are DTensor shards, every rank runs the same number of forward calls (evaluation included: each call
all-gathers), the checkpoint is gathered to the single-process format (resume loads it under DDP, FSDP or one
process alike), and the returned model is a plain copy of the full weights.

This module holds the run's orchestration (`train`, `_train`), its setup and one optimiser step; the concerns it
calls live beside it: hope.train.guard (the device-side step guard: `guard_step`, `masked_step`, `BadSteps`),
hope.train.levels (the nested levels' stepping), hope.train.resume (checkpoint payload, restore, RNG states) and
hope.train.progress (stop signal, progress bar, host reads and metrics-log records).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hope.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hope.config import Config
from hope.data.corpus import Corpus, DataError, data_exists, load_corpus
from hope.data.loader import make_loader
from hope.data.mqar import MQARSpec
from hope.data.stream import StreamSchedule
from hope.errors import HopeError
from hope.eval.lm import evaluate_lm, token_sums
from hope.layers.roles import NO_DECAY, parameter_roles
from hope.models import build_model, compile_model
from hope.runs import (MetricsLog, RunFiles, absolute_data, check_writable, metrics_log_path, open_tensorboard,
                       refuse_overwrite, require_tensorboard, write_run_config)
from hope.runtime import DistInfo, autocast, init_distributed, resolve_device, seed_everything, shutdown_distributed
from hope.train.ema import EMA
from hope.train.guard import BadSteps as _BadSteps
from hope.train.guard import device_resident as _device_resident
from hope.train.guard import guard_step as _guard
from hope.train.guard import masked_step as _masked_step
from hope.train.levels import add_slow_gradients, split_slow_params
from hope.train.levels import step_slow_level as _step_slow_level
from hope.train.optim import build_optimizer, set_lr
from hope.train.progress import Progress as _Progress
from hope.train.progress import StopSignal as _StopSignal
from hope.train.progress import Window as _Window
from hope.train.progress import eval_record as _eval_record
from hope.train.progress import log_step as _log_step
from hope.train.progress import read_window as _read_window
from hope.train.progress import write_record as _write_record
from hope.train.resume import checkpoint_payload, restore
from hope.train.resume import rng_state as _rng_state  # noqa: F401  (tests read it here)
from hope.train.resume import set_rng_state as _set_rng_state
from hope.train.schedule import lr_at
from hope.train.sharding import average_gradients, full_model_state, shard_model
from hope.train.stream import StreamBatches, WindowBatches

# The loop's concerns live in their own modules; their functions are imported here under the names the loop calls
# (tests patch these names on this module): hope.train.guard (the device-side step guard), hope.train.levels (the
# nested levels' stepping), hope.train.resume (checkpoint and resume), hope.train.progress (progress and logging).


class TrainingInterrupted(HopeError):
    """SIGINT/SIGTERM during training; a resumable checkpoint was written. `signum` is the signal received."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: Config
    step: int
    val: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    tokens_per_s: float = 0.0
    train_time_s: float = 0.0
    losses: list[float] = field(default_factory=list)  # one per optimiser step taken (skipped steps included)
    skipped_steps: int = 0
    dist: DistInfo = field(default_factory=DistInfo)  # this process's rank: only rank 0 reports
    files: list[Path] = field(default_factory=list)  # what this run wrote (checkpoint, metrics log, config, ...)


def metrics_path(cfg: Config) -> Path:
    """The run's metrics log: `<ckpt stem>.metrics.jsonl` next to the checkpoint `cfg.out`."""
    return metrics_log_path(cfg.out)


def train(cfg: Config, *, resume: str | Path | None = None, corpus: Corpus | None = None,
          model: torch.nn.Module | None = None, save: bool = True, verbose: bool = True,
          final_eval: bool = True, on_step: Callable[[int, dict], None] | None = None,
          overwrite: bool = True, tensorboard: str | Path | None = None) -> TrainResult:
    """Train `cfg.model_type` for `cfg.steps` optimiser steps and return the model and its metrics.

    `corpus` overrides `cfg.data` (used by experiments that train on prepared splits); `model` continues training
    a given model (continual learning) instead of building a fresh one; `resume` continues a checkpoint exactly;
    `on_step(step, record)` is called after every optimiser step with host values only: the metrics-log record
    at log steps, `{"step", "lr"}` between them (the loss is read at log steps only). The returned model holds the EMA weights when
    `ema_decay > 0`. With `save`, the run writes `cfg.out`, its metrics log and its resolved config
    (`hope.runs.RunFiles`), all checked for writability first; `overwrite=False` refuses (HopeError) when one of
    them already exists and is not the checkpoint being resumed. `tensorboard` also logs the metrics there.
    Raises `TrainingInterrupted` after SIGINT/SIGTERM (with a resumable checkpoint saved) and `HopeError` for bad
    input or after `max_bad_steps` non-finite steps in a row.
    """
    if cfg.data and "," not in cfg.data and data_exists(cfg.data):  # the checkpoint works from any folder
        cfg = dataclasses.replace(cfg, data=absolute_data(cfg.data))
    files = RunFiles(Path(cfg.out))
    main_rank = int(os.environ.get("RANK", "0")) == 0  # torchrun: one checker, before any rank writes
    if save and main_rank:
        check_writable(files.paths())
        if tensorboard:
            require_tensorboard()
            check_writable([Path(tensorboard) / "events"])
        if not overwrite:
            refuse_overwrite(files.paths(), allowed=RunFiles(Path(resume)).paths() if resume else ())
    device = resolve_device(cfg.device, cfg.cuda_device)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info: DistInfo = init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device(f"cuda:{info.local_rank}")
        torch.cuda.set_device(device)
    if info.is_main and (verbose or save):
        if cfg.warmup_steps >= cfg.steps:
            print(f"warning: warmup_steps ({cfg.warmup_steps}) >= steps ({cfg.steps}): the learning rate ramps up "
                  "for the whole run and never decays (lower warmup_steps)", file=sys.stderr)
        if cfg.compile:
            print("compiling the model with torch.compile (compile: true): the first steps take a while",
                  file=sys.stderr, flush=True)
    log = None
    if save and info.is_main:
        write_run_config(files.config, cfg)
        log = MetricsLog(files.metrics, open_tensorboard(tensorboard) if tensorboard else None)
    anomaly_before = torch.is_anomaly_enabled()
    try:
        result = _train(cfg, device, info, resume=resume, corpus=corpus, model=model, save=save, verbose=verbose,
                        final_eval=final_eval, on_step=on_step, run_log=log)
    finally:
        torch.autograd.set_detect_anomaly(anomaly_before)  # debug_anomaly is for this run, not the process
        if log is not None:
            log.close()
        if owns_group:
            shutdown_distributed()
    if log is not None:
        result.files = [p for p in (result.checkpoint, files.metrics, files.config) if p is not None]
        result.files += [Path(tensorboard)] if tensorboard else []
    return result


def _train(cfg: Config, device: torch.device, info: DistInfo, *, resume: str | Path | None, corpus: Corpus | None,
           model: torch.nn.Module | None, save: bool, verbose: bool, final_eval: bool,
           on_step: Callable[[int, dict], None] | None, run_log: MetricsLog | None = None) -> TrainResult:
    """The run, in its named steps: `_setup` (and `_restore` on resume), `_wrap`, `_batches`, then per optimiser step
    `_set_step_lr` -> `_accumulate_gradients` -> `_guard` -> `_apply_step` -> `_log_step`, `_evaluate` and
    `_checkpoint` every `eval_interval`, and the final evaluation and checkpoint."""
    run = _setup(cfg, device, info, corpus=corpus, model=model, save=save, verbose=verbose)
    run.run_log = run_log
    if resume is not None:
        _restore(run, resume)
    run.run_model = _wrap(run, cfg, info, device)  # after the restore: DDP broadcasts the loaded weights
    run.batches = _batches(run, resume)  # the loader draws its base seed from the torch RNG: before its restore
    if run.saved_rng:
        _set_rng_state(run.saved_rng)
    if run_log is not None:
        run_log.start(run.start_step)

    progress = _Progress(cfg.steps, run.start_step, run.log)
    result = TrainResult(model=run.model, config=cfg, step=run.start_step, dist=info)
    window = _Window(sums=torch.zeros(5, dtype=torch.float64, device=device))
    guard = _BadSteps(device, cfg.max_bad_steps)
    train_start = time.perf_counter()
    step, stopping = run.start_step, False
    if resume is not None:
        progress.message(f"resumed from {resume} at step {run.start_step}")
    progress.message(f"training {cfg.model_type}: {run.model.num_params():,} parameters on {device}, data "
                     f"{run.corpus.name}, {cfg.steps} steps of {run.tokens_per_step} tokens")
    run.model.train()
    try:
        with _StopSignal() as stop:
            while step < cfg.steps and not stopping:
                lr = _set_step_lr(run, step)
                loss, step_sums = _accumulate_gradients(run, step)
                loss, grad_norm, ok, stopping = _guard(run, loss, stop)
                guard.record(step + 1, ok)
                window.sums += torch.where(ok, step_sums, 0.0)
                _apply_step(run, step, ok)
                step += 1
                window.steps += 1
                window.losses.append(loss)
                if run.meta is not None and step % cfg.meta.outer_frequency == 0:
                    _write_record(run, {"step": step, "split": "meta", "tokens": step * run.tokens_per_step,
                                        **run.meta.round(step)})
                evaluate_now = step % cfg.eval_interval == 0 and step < cfg.steps
                log_now = step % cfg.log_interval == 0 or step == cfg.steps
                if log_now or evaluate_now or stopping:  # the host reads of this window, all at once
                    _read_window(run, step, window, guard, result, progress)
                record = _log_step(run, step, lr, grad_norm, window, guard.skipped) if log_now else {
                    "step": step, "lr": lr}
                progress.update(step, cfg.steps, record, log_now)
                if on_step is not None:
                    on_step(step, record)
                if evaluate_now:
                    val = _evaluate(run, step, run.corpus.val)
                    _write_record(run, _eval_record(step, "val", step * run.tokens_per_step, lr, val))
                    progress.message(f"step {step} val loss {val['loss']:.4f}")
                    _checkpoint(run, step)
                if not info.enabled:  # a signal during the bookkeeping above still stops after this step
                    stopping = stop.received is not None
            signum = stop.received
            _read_window(run, step, window, guard, result, progress)  # a signal from the bookkeeping above
    finally:
        progress.close()
    result.train_time_s = time.perf_counter() - train_start
    result.tokens_per_s = (step - run.start_step) * run.tokens_per_step / max(result.train_time_s, 1e-9)
    result.step = step
    if stopping:
        signum = signum if signum is not None else signal.SIGTERM  # another rank got it
        path = _checkpoint(run, step)
        where = f"resumable checkpoint saved to {path} (continue with --resume {path})" if path is not None else (
            "checkpoint saved by rank 0" if save else "no checkpoint saved")
        raise TrainingInterrupted(f"interrupted by {signal.Signals(signum).name} at step {step}/{cfg.steps}; {where}",
                                  signum)
    _set_schedules(run, step)
    if final_eval:
        result.val = _evaluate(run, step, run.corpus.val)
        result.train = _evaluate(run, step, run.corpus.train)
        last_lr = run.optimizer.param_groups[0]["lr"]  # the rate of the last step taken
        for split, metrics in (("val", result.val), ("train", result.train)):
            _write_record(run, {**_eval_record(step, split, step * run.tokens_per_step, last_lr, metrics), "final": True,
                                "tokens_per_s": result.tokens_per_s, "skipped_steps": result.skipped_steps})
    result.checkpoint = _checkpoint(run, step)
    if run.ema.enabled:  # evaluation-time users of the returned model get the EMA weights, as from the checkpoint
        run.ema.copy_to(run.model)
    if run.sharded:  # the sharded module needs the process group, which ends with train(): hand back full weights
        result.model = _plain_copy(run)
    return result


def _plain_copy(run: _Run) -> torch.nn.Module:
    """An unsharded model with the FSDP model's full weights (and schedules), on every rank. Collective."""
    state = full_model_state(run.model, all_ranks=True)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG as it was
        plain = build_model(run.cfg)
    plain.load_state_dict(state)
    plain.set_schedules(run.model.mem_gate, run.model.surprise_scale)
    return plain.to(run.device).train(run.model.training)


# ----------------------------------------------------------------------------- setup and resume


@dataclass
class _Run:
    """What one training run holds between optimiser steps: built by `_setup`, filled by `_restore`, saved by
    `_checkpoint`. `run_model` is `model` compiled and/or DDP-wrapped (what the forward pass calls); `model` is
    the module whose weights are saved (with `sharded`, FSDP2-sharded in place: `run_model` wraps no further)."""

    cfg: Config
    device: torch.device
    info: DistInfo
    corpus: Corpus
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    slow_optimizer: torch.optim.Optimizer | None  # the slow CMS level's (nested level stepping), or None
    main_params: list[torch.Tensor]
    slow_named: list[tuple[str, torch.Tensor]]
    slow_grads: dict[str, torch.Tensor]  # unscaled gradient sum of the slow level over its current period
    scaler: torch.amp.GradScaler
    use_scaler: bool
    ema: EMA
    meta: Any  # MetaLearner or None
    save: bool
    log: bool
    slow_count: int | torch.Tensor = 0  # finite steps summed into slow_grads (a device tensor once training)
    start_step: int = 0
    saved_rng: dict[str, Any] | None = None
    saved_streams: dict[str, Any] | None = None  # the checkpoint's carried streams (stream.use), read by `_batches`
    run_model: torch.nn.Module | None = None  # set by `_wrap`
    batches: WindowBatches | StreamBatches | None = None  # set by `_batches`
    run_log: MetricsLog | None = None  # rank 0's metrics log (hope.runs), None when not saving
    control_group: Any = None  # torchrun: the gloo group of the per-step stop flag (None: the default group)
    sharded: bool = False  # torchrun with distributed: fsdp (hope.train.sharding)
    replicated: list[torch.Tensor] = field(default_factory=list)  # FSDP: the scalar parameters left unsharded

    @property
    def slow_params(self) -> list[torch.Tensor]:
        return [p for _, p in self.slow_named]

    @property
    def tokens_per_step(self) -> int:
        piece = self.cfg.seq_len * (self.cfg.stream.bptt_segments if self.cfg.stream.use else 1)
        return self.cfg.batch_size * piece * self.cfg.grad_accum_steps * self.info.world_size


def _setup(cfg: Config, device: torch.device, info: DistInfo, *, corpus: Corpus | None,
           model: torch.nn.Module | None, save: bool, verbose: bool) -> _Run:
    """Seed, load the corpus, build (or take) the model, its optimisers, scaler, EMA and meta-learner."""
    seed_everything(cfg.seed)
    corpus = corpus if corpus is not None else load_corpus(cfg.data, seed=cfg.seed)
    if cfg.meta.use:  # meta-learning reads a held-out meta split: keep it out of the training batches
        from hope.train.meta import hold_out_meta

        corpus = hold_out_meta(corpus, cfg.meta.split)
    corpus.check_length(cfg.seq_len + 1)
    if cfg.debug_anomaly:
        torch.autograd.set_detect_anomaly(True)

    sharded = info.enabled and cfg.distributed == "fsdp"
    if sharded and model is not None:
        model = copy.deepcopy(model)  # fully_shard works in place: leave the caller's module usable
    model = (model if model is not None else build_model(cfg)).to(device)
    replicated = shard_model(model) if sharded else []  # before anything holds the parameters: the optimisers,
    # EMA shadows and slow-level sums must hold the shards
    main_named, slow_named = split_slow_params(model, cfg)
    # M3's slow momentum period is the slow level's period: one name per concept (update_frequencies.optimizer_step)
    opt_args = dict(lr=cfg.lr, base_momentum=cfg.base_momentum, weight_decay=cfg.weight_decay, beta2=cfg.beta2,
                    m3_frequency=cfg.update_frequencies.optimizer_step,
                    no_decay={n for n, r in parameter_roles(model).items() if NO_DECAY in r})
    # Fused AdamW skips a non-finite step inside its kernel (`_masked_step`), on FSDP's DTensor shards too.
    opt_args["fused"] = device.type in ("cpu", "cuda")
    optimizer = build_optimizer(main_named, cfg.optimizer_type, **opt_args)
    slow_optimizer = build_optimizer(slow_named, cfg.optimizer_type, **opt_args) if slow_named else None
    use_scaler = cfg.amp and cfg.amp_dtype == "fp16"  # fp16's range needs loss scaling on any device
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = EMA(model, cfg.ema_decay)
    meta = None
    if cfg.meta.use:
        from hope.train.meta import MetaLearner  # only HOPE has fast state to meta-learn

        meta = MetaLearner(model, cfg, corpus, device)
    control_group = None  # the default group when it is gloo; else a gloo group for the host-side stop flag
    if info.enabled and dist.get_backend() != "gloo":
        control_group = dist.new_group(backend="gloo")
    run = _Run(cfg=cfg, device=device, info=info, corpus=corpus, model=model,
               optimizer=optimizer, slow_optimizer=slow_optimizer, main_params=[p for _, p in main_named],
               slow_named=slow_named, slow_grads={n: torch.zeros_like(p) for n, p in slow_named}, scaler=scaler,
               use_scaler=use_scaler, ema=ema, meta=meta, save=save, log=verbose and info.is_main,
               control_group=control_group, sharded=sharded, replicated=replicated)
    _device_resident(run)
    return run


def _restore(run: _Run, resume: str | Path) -> None:
    """Load a checkpoint written by `_checkpoint` into `run` (weights, optimisers, slow level, scaler, EMA,
    meta-learner, step, RNG states)."""
    # FSDP: every rank reads the full checkpoint into host memory and keeps its shards on the device
    # Loaded on the host whatever the device: the RNG states must stay CPU tensors (`_set_rng_state`), and
    # load_state_dict copies weights, optimiser state and sums onto their parameters' devices.
    ckpt = load_checkpoint(resume, map_location="cpu")
    restore(run, ckpt, resume)


def _wrap(run: _Run, cfg: Config, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """What the forward pass calls: `run.model`, compiled when `compile`, DDP-wrapped under torchrun unless it is
    FSDP-sharded already (`_setup`)."""
    run_model = run.model
    if cfg.compile:
        run_model = compile_model(run_model)
    if info.enabled and not run.sharded:
        # A segment shorter than a memory chunk commits none: the bank's write path then gets no gradient in that
        # step, which DDP refuses unless told to look for unused parameters (a graph walk per step: only then).
        piece = cfg.seq_len * (cfg.stream.bptt_segments if cfg.stream.use else 1)
        unused = cfg.model_type == "hope" and piece < cfg.update_frequencies.mem_write
        run_model = DistributedDataParallel(run_model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=unused)
    return run_model


def mqar_spec(cfg: Config) -> MQARSpec | None:
    """The MQAR rows training mixes in (`recall_task: mqar`), or None for the single-episode rows."""
    if cfg.recall_task != "mqar":
        return None
    return MQARSpec(cfg.recall_pairs, cfg.recall_gap_min, cfg.recall_gap_max, answers_only=cfg.loss_on == "answers",
                    hide_answers=cfg.recall_answers == "hidden")


def _batches(run: _Run, resume: str | Path | None = None) -> WindowBatches | StreamBatches:
    """This rank's training micro-batches from the resumed step on, with the state each starts from: independent
    windows (a pure function of seed, index, rank: hope.data.loader) or, with `stream.use`, long streams with the
    state carried (hope.train.stream; the carried states come from the checkpoint on resume)."""
    cfg, accum = run.cfg, run.cfg.grad_accum_steps
    if cfg.stream.use:
        piece = cfg.stream.bptt_segments * cfg.seq_len
        if len(run.corpus.train) < piece + 1:
            raise DataError(f"{run.corpus.name}: the train split has {len(run.corpus.train)} bytes, fewer than "
                            f"stream.bptt_segments * seq_len + 1 = {piece + 1}")
        schedule = StreamSchedule(run.corpus.train, cfg.batch_size, cfg.seq_len, cfg.stream.bptt_segments,
                                  cfg.stream.reset_bytes, cfg.seed, rank=run.info.rank,
                                  recall_fraction=cfg.recall_fraction, recall_episodes=cfg.recall_episodes,
                                  documents=run.corpus.train_docs)
        if schedule.note and run.log:
            print(schedule.note, file=sys.stderr, flush=True)
        batches = StreamBatches(schedule, accum, run.info.rank, run.info.world_size)
        if run.saved_streams:
            try:
                batches.load_state_dict(run.saved_streams, run.start_step,
                                        lambda: run.model.init_state(cfg.batch_size, run.device))
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{resume}: cannot continue its streams: {exc}") from None
        return batches
    loader = make_loader(run.corpus.train, cfg.batch_size, cfg.seq_len, cfg.seed, run.start_step * accum,
                         cfg.steps * accum, rank=run.info.rank, recall_fraction=cfg.recall_fraction,
                         recall_episodes=cfg.recall_episodes, mqar_spec=mqar_spec(cfg), num_workers=cfg.num_workers,
                         pin_memory=cfg.pin_memory and run.device.type == "cuda", prefetch_factor=cfg.prefetch_factor)
    return WindowBatches(iter(loader))


# ----------------------------------------------------------------------------- one optimiser step


def _set_step_lr(run: _Run, step: int) -> float:
    """Set the learning rate and the memory schedules of `step`; return the learning rate."""
    cfg = run.cfg
    lr = lr_at(step, cfg.lr, min(cfg.warmup_steps, cfg.steps), cfg.steps, cfg.min_lr)
    set_lr(run.optimizer, lr)
    if run.slow_optimizer is not None:
        set_lr(run.slow_optimizer, lr)
    _set_schedules(run, step)
    return lr


def _accumulate_gradients(run: _Run, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward `grad_accum_steps` micro-batches (DDP and FSDP reduce the gradients on the last) ->
    (mean loss, token sums), both float64 tensors on the device, not read here.

    Each micro-batch starts from the state its slot carries (None: fresh) and hands its new state back, detached
    (`stream.use`; the plain windows carry nothing)."""
    accum, info = run.cfg.grad_accum_steps, run.info
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    step_sums = torch.zeros(5, dtype=torch.float64, device=run.device)
    for micro in range(accum):
        x, y, state = run.batches.take(step, micro)
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        sync = not info.enabled or micro == accum - 1
        if run.sharded:  # FSDP2's no_sync: accumulate unsharded gradients, reduce-scatter on the last micro-batch
            run.model.set_requires_gradient_sync(sync)
        with run.run_model.no_sync() if not sync and not run.sharded else contextlib.nullcontext():
            with autocast(run.device, run.cfg.amp, run.cfg.amp_dtype):
                logits, loss, state = run.run_model(x, y, state=state)
            run.scaler.scale(loss / accum).backward()  # micro-batches of equal size: mean of means
        run.batches.carry(micro, state)
        if run.sharded and sync:  # what fully_shard left replicated, averaged as DDP would
            average_gradients(run.replicated, info.world_size)
        loss_sum += loss.detach().double() / accum  # what loss.item() / accum summed in Python floats
        step_sums += token_sums(logits.detach(), y)
    return loss_sum, step_sums


def _apply_step(run: _Run, step: int, ok: torch.Tensor) -> None:
    """The optimiser step (a no-op where `ok` is False), the slow level's gradient sum and its every-N-steps
    step, the scaler update and the EMA update; gradients are zeroed either way. Nothing here reads `ok` on the
    host (see `_masked_step` for the one exception)."""
    # The GradScaler's own step would read its inf flag on the host; `ok` already covers it (the unscaled main
    # gradients' norm is finite), and `scaler.update` below still reads the flag `unscale_` recorded, on device.
    _masked_step(run.optimizer, ok)
    if run.slow_named:
        add_slow_gradients(run, ok)
    run.optimizer.zero_grad(set_to_none=True)
    if run.slow_optimizer is not None:
        run.slow_optimizer.zero_grad(set_to_none=True)
        if (step + 1) % run.cfg.update_frequencies.optimizer_step == 0:
            _step_slow_level(run)
    run.scaler.update()
    run.ema.update(run.model, ok)


# ----------------------------------------------------------------------------- logging, evaluation, checkpoint


def _set_schedules(run: _Run, step: int) -> None:
    """Evaluation at step s sees the schedules training at step s would."""
    run.model.set_schedules(run.cfg.mem_write.at(step), run.cfg.surprise_scale.at(step))


def _evaluate(run: _Run, step: int, data: torch.Tensor) -> dict[str, float]:
    """LM metrics of the (EMA) model on `data` over fixed, evenly spread windows, all-reduced across ranks."""
    cfg = run.cfg
    _set_schedules(run, step)
    with run.ema.swapped_in(run.model):
        metrics = evaluate_lm(run.model, data, seq_len=cfg.seq_len, batch_size=cfg.batch_size, device=run.device,
                              amp=cfg.amp, amp_dtype=cfg.amp_dtype, track_ppl=cfg.metrics.track_ppl,
                              track_accuracy=cfg.metrics.track_accuracy, rank=run.info.rank,
                              world_size=run.info.world_size, max_windows=cfg.eval_batches * cfg.batch_size,
                              lockstep=run.sharded)
        if run.sharded:  # FSDP2 leaves the root's parameters gathered after a forward that no backward follows:
            run.model.reshard()  # shards again, as the EMA swap-back and the optimiser expect
    return metrics


def _checkpoint(run: _Run, step: int) -> Path | None:
    """Save a resumable checkpoint at `step` (rank 0, when saving); the keys are listed in hope.checkpoint."""
    payload = checkpoint_payload(run, step)  # collective under torchrun
    return save_checkpoint(run.cfg.out, payload) if payload is not None else None
