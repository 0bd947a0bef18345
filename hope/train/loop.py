"""The training loop: `train(cfg)` is what `hope-train`, `hope-run-experiment`, `hope-continual`,
`hope-meta-train` and the tests all call.

One optimiser step = `grad_accum_steps` micro-batches (loss divided by that count), then a finite-loss/grad guard
(torchtitan's habit: skip and count, abort after `max_bad_steps` in a row), global-norm clipping, the step, the
EMA update. Nested level stepping (architecture.md §3): the slow CMS level's parameters live in their own
optimiser that steps only every `update_frequencies.optimizer_step` steps on the average of the gradients of the
steps in between (kept in an accumulator that the checkpoint carries); the fast levels (SMT, bank, fast CMS) learn
in context inside `forward`.

Resume is exact: batches are a pure function of (seed, step, rank), and the checkpoint holds model, EMA,
optimisers, the slow level's accumulated gradients, scaler, step and RNG states. SIGINT/SIGTERM finish the current
step, save a resumable checkpoint and raise `TrainingInterrupted`.

Output: a tqdm bar (loss/acc/top5/top10/lr/tok/s) when stdout is a terminal, plain log lines otherwise, and
the run's files next to the checkpoint (`hope.runs`: `<ckpt stem>.metrics.jsonl`, `<ckpt stem>.config.yaml`). The
metrics log has one schema (`hope.runs.METRICS_SCHEMA`): a `"split": "train"` record per `log_interval`, a
`"split": "val"` record per periodic validation, and two `"final": true` records (val and train) at the end; with
`tensorboard=DIR` the same numbers go to TensorBoard. Under torchrun only rank 0 writes;
the step loss, the skip decision and the stop decision are all-reduced so every rank takes the same path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hope.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, model_state, save_checkpoint
from hope.config import Config, config_to_dict
from hope.data.corpus import Corpus, load_corpus
from hope.data.loader import make_loader
from hope.errors import HopeError
from hope.eval.lm import evaluate_lm, summarize, token_sums
from hope.models import build_model
from hope.runs import (MetricsLog, RunFiles, absolute_data, check_writable, metrics_log_path, open_tensorboard,
                       refuse_overwrite, require_tensorboard, write_run_config)
from hope.runtime import DistInfo, autocast, init_distributed, resolve_device, seed_everything, shutdown_distributed
from hope.train.ema import EMA
from hope.train.optim import build_optimizer, set_lr
from hope.train.schedule import lr_at

SLOW_LEVEL = ".cms.slow."  # parameter-name marker of the slow CMS level


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


def split_slow_params(model: torch.nn.Module, cfg: Config) -> tuple[list, list]:
    """(fast/normal named params, slow-level named params); slow only with a CMS chain stepping every N > 1."""
    named = list(model.named_parameters())
    if cfg.model_type != "hope" or cfg.cms != "chain" or cfg.update_frequencies.optimizer_step <= 1:
        return named, []
    slow = [(n, p) for n, p in named if SLOW_LEVEL in f".{n}"]
    slow_ids = {id(p) for _, p in slow}
    return [(n, p) for n, p in named if id(p) not in slow_ids], slow


def _rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and primitives (so `torch.load(weights_only=True)` reads it)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(py[1]), "python_gauss": py[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_gauss": [int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), state.get("python_gauss")))
    has_gauss, cached = state.get("numpy_gauss", (0, 0.0))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state.get("numpy_pos", 624)),
                         int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (so the step finishes cleanly)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Progress:
    """tqdm bar on a terminal, plain periodic log lines otherwise (CI logs, files); both on stdout."""

    KEYS = (("loss", "loss"), ("acc", "accuracy"), ("top5", "top5_acc"), ("top10", "top10_acc"), ("lr", "lr"),
            ("tok/s", "tokens_per_s"))  # (shown as, record key)

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, desc="train", file=sys.stdout)

    def message(self, text: str) -> None:
        """A line of text that does not tear the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def update(self, step: int, total: int, record: dict[str, float], log_line: bool) -> None:
        if not self.enabled:
            return
        shown = {label: record[key] for label, key in self.KEYS if key in record}
        if self.bar is not None:
            self.bar.update(1)
            if log_line:
                self.bar.set_postfix({k: (f"{v:.3g}" if k != "tok/s" else f"{v:.0f}") for k, v in shown.items()})
        elif log_line:
            text = " ".join(f"{k} {v:.4g}" if k != "tok/s" else f"{k} {v:.0f}" for k, v in shown.items())
            print(f"step {step}/{total} {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global gradient norm of `params`, clipping to `max_norm` when it is > 0."""
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def _check_resumable(ckpt: dict[str, Any], stored: Config, model: torch.nn.Module, cfg: Config, path: Any) -> None:
    """The checkpoint must hold the same model type with the same tensor shapes as the config builds."""
    if stored.model_type != cfg.model_type:
        raise CheckpointError(f"{path}: the checkpoint holds a {stored.model_type} model but the config asks for "
                              f"{cfg.model_type}")
    ours = {k: tuple(v.shape) for k, v in model_state(model).items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in ckpt["model"].items()}
    if ours != theirs:
        name = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))[0]
        raise CheckpointError(f"{path}: the checkpoint's model has a different shape than the config ({name}: "
                              f"checkpoint {theirs.get(name, 'absent')}, config {ours.get(name, 'absent')}); use the "
                              f"checkpoint's dim/depth/num_heads/ff_mult/memory settings, or omit --config to "
                              f"continue with its own")


def _eval_record(step: int, split: str, tokens: int, lr: float, metrics: dict[str, float]) -> dict[str, Any]:
    """A metrics-log record of an evaluation (`evaluate_lm`'s `tokens`, the count scored, is `eval_tokens`)."""
    scores = {k: v for k, v in metrics.items() if k != "tokens"}
    return {"step": step, "split": split, "tokens": tokens, "lr": lr, **scores, "eval_tokens": metrics.get("tokens")}


def train(cfg: Config, *, resume: str | Path | None = None, corpus: Corpus | None = None,
          model: torch.nn.Module | None = None, save: bool = True, verbose: bool = True,
          final_eval: bool = True, on_step: Callable[[int, dict], None] | None = None,
          overwrite: bool = True, tensorboard: str | Path | None = None) -> TrainResult:
    """Train `cfg.model_type` for `cfg.steps` optimiser steps and return the model and its metrics.

    `corpus` overrides `cfg.data` (used by experiments that train on prepared splits); `model` continues training
    a given model (continual learning) instead of building a fresh one; `resume` continues a checkpoint exactly;
    `on_step(step, record)` is called after every optimiser step. The returned model holds the EMA weights when
    `ema_decay > 0`. With `save`, the run writes `cfg.out`, its metrics log and its resolved config
    (`hope.runs.RunFiles`), all checked for writability first; `overwrite=False` refuses (HopeError) when one of
    them already exists and is not the checkpoint being resumed. `tensorboard` also logs the metrics there.
    Raises `TrainingInterrupted` after SIGINT/SIGTERM (with a resumable checkpoint saved) and `HopeError` for bad
    input or after `max_bad_steps` non-finite steps in a row.
    """
    if cfg.data and "," not in cfg.data and Path(cfg.data).is_file():  # the checkpoint works from any folder
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
    log = verbose and info.is_main
    seed_everything(cfg.seed)
    corpus = corpus if corpus is not None else load_corpus(cfg.data, seed=cfg.seed)
    if cfg.meta.use:  # meta-learning reads a held-out meta split: keep it out of the training batches
        from hope.train.meta import hold_out_meta

        corpus = hold_out_meta(corpus, cfg.meta.split)
    corpus.check_length(cfg.seq_len + 1)
    if cfg.debug_anomaly:
        torch.autograd.set_detect_anomaly(True)

    model = (model if model is not None else build_model(cfg)).to(device)
    main_named, slow_named = split_slow_params(model, cfg)
    main_params, slow_params = [p for _, p in main_named], [p for _, p in slow_named]
    # M3's slow momentum period is the slow level's period: one name per concept (update_frequencies.optimizer_step)
    opt_args = dict(lr=cfg.lr, base_momentum=cfg.base_momentum, weight_decay=cfg.weight_decay, beta2=cfg.beta2,
                    m3_frequency=cfg.update_frequencies.optimizer_step)
    optimizer = build_optimizer(main_named, cfg.optimizer_type, **opt_args)
    slow_optimizer = build_optimizer(slow_named, cfg.optimizer_type, **opt_args) if slow_named else None
    slow_period = cfg.update_frequencies.optimizer_step
    slow_grads = {n: torch.zeros_like(p) for n, p in slow_named}  # unscaled gradient sum over the current period
    slow_count = 0  # finite steps summed into slow_grads
    use_scaler = cfg.amp and cfg.amp_dtype == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = EMA(model, cfg.ema_decay)
    meta = None
    if cfg.meta.use:
        from hope.train.meta import MetaLearner  # only HOPE has fast state to meta-learn

        meta = MetaLearner(model, cfg, corpus, device)
    start_step, saved_rng = 0, None

    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        _check_resumable(ckpt, checkpoint_config(ckpt, resume), model, cfg, resume)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if slow_optimizer is not None:
                if not ckpt.get("slow_optimizer"):
                    raise ValueError("it has no slow-level optimiser (was update_frequencies.optimizer_step 1?)")
                slow_optimizer.load_state_dict(ckpt["slow_optimizer"])
                for name, saved in (ckpt.get("slow_grads") or {}).items():
                    slow_grads[name].copy_(saved)
                slow_count = int(ckpt.get("slow_count") or 0)
            if use_scaler and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            if ema.enabled and ckpt.get("ema"):
                ema.load_state_dict(ckpt["ema"])
            if meta is not None and ckpt.get("meta"):
                meta.load_state_dict(ckpt["meta"])
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            why = " ".join(str(exc).strip().splitlines()[:1])[:200]
            raise CheckpointError(f"{resume}: cannot continue this checkpoint with this config (optimizer_type or "
                                  f"update_frequencies.optimizer_step changed?): {why}") from None
        start_step = int(ckpt["step"])
        saved_rng = ckpt.get("rng")

    run_model = model
    if cfg.compile:
        run_model = torch.compile(model)
    if info.enabled:
        run_model = DistributedDataParallel(run_model, device_ids=[device.index] if device.type == "cuda" else None)

    accum = cfg.grad_accum_steps
    loader = make_loader(corpus.train, cfg.batch_size, cfg.seq_len, cfg.seed, start_step * accum, cfg.steps * accum,
                         rank=info.rank, recall_fraction=cfg.recall_fraction,
                         recall_episodes=cfg.recall_episodes, num_workers=cfg.num_workers,
                         pin_memory=cfg.pin_memory and device.type == "cuda", prefetch_factor=cfg.prefetch_factor)
    batches = iter(loader)  # draws the loader's base seed from the torch RNG, so it comes before the restore
    if saved_rng:
        _set_rng_state(saved_rng)
    if run_log is not None:
        run_log.start(start_step)

    def checkpoint(step: int) -> Path | None:
        if not (save and info.is_main):
            return None
        payload = {"model_type": cfg.model_type, "config": config_to_dict(cfg), "model": model_state(model),
                   "ema": ema.state_dict() if ema.enabled else None, "optimizer": optimizer.state_dict(),
                   "slow_optimizer": slow_optimizer.state_dict() if slow_optimizer is not None else None,
                   "slow_grads": dict(slow_grads) if slow_optimizer is not None else None, "slow_count": slow_count,
                   "scaler": scaler.state_dict() if use_scaler else None, "step": step, "rng": _rng_state(),
                   "meta": meta.state_dict() if meta is not None else None, "params": model.num_params()}
        return save_checkpoint(cfg.out, payload)

    def write_record(record: dict) -> None:
        if run_log is not None:
            run_log.write(record)

    def set_schedules(step: int) -> None:  # evaluation at step s sees the schedules training at step s would
        model.set_schedules(cfg.mem_write.at(step), cfg.surprise_scale.at(step))

    eval_args = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, device=device, amp=cfg.amp,
                     amp_dtype=cfg.amp_dtype, track_ppl=cfg.metrics.track_ppl,
                     track_accuracy=cfg.metrics.track_accuracy, rank=info.rank, world_size=info.world_size,
                     max_windows=cfg.eval_batches * cfg.batch_size)  # fixed, evenly spread windows of each split

    progress = _Progress(cfg.steps, start_step, log)
    result = TrainResult(model=model, config=cfg, step=start_step, dist=info)
    tokens_per_step = cfg.batch_size * cfg.seq_len * accum * info.world_size
    warmup = min(cfg.warmup_steps, cfg.steps)
    bad_in_row, window_sums, window_start, window_steps = 0, torch.zeros(5, dtype=torch.float64), time.perf_counter(), 0
    train_start = time.perf_counter()
    step, stopping = start_step, False
    if resume is not None:
        progress.message(f"resumed from {resume} at step {start_step}")
    progress.message(f"training {cfg.model_type}: {model.num_params():,} parameters on {device}, data {corpus.name}, "
                     f"{cfg.steps} steps of {tokens_per_step} tokens")
    model.train()
    try:
        with _StopSignal() as stop:
            while step < cfg.steps and not stopping:
                lr = lr_at(step, cfg.lr, warmup, cfg.steps, cfg.min_lr)
                set_lr(optimizer, lr)
                if slow_optimizer is not None:
                    set_lr(slow_optimizer, lr)
                set_schedules(step)
                loss_sum, step_sums = 0.0, torch.zeros(5, dtype=torch.float64)
                for micro in range(accum):
                    x, y = next(batches)
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    sync = not info.enabled or micro == accum - 1
                    with run_model.no_sync() if not sync else contextlib.nullcontext():
                        with autocast(device, cfg.amp, cfg.amp_dtype):
                            logits, loss, _ = run_model(x, y)
                        scaler.scale(loss / accum).backward()  # micro-batches of equal size: mean of means
                    loss_sum += loss.item() / accum
                    step_sums += token_sums(logits.detach(), y).cpu()
                scaler.unscale_(optimizer)
                grad_norm = _grad_norm(main_params, cfg.grad_clip_norm)
                slow_ok = all(bool(torch.isfinite(p.grad).all()) for p in slow_params if p.grad is not None)
                bad = not (math.isfinite(loss_sum) and bool(torch.isfinite(grad_norm)) and slow_ok)
                stopping = stop.received is not None
                if info.enabled:  # every rank must skip, stop and log alike
                    flags = torch.tensor([loss_sum, float(bad), float(stopping)], dtype=torch.float64, device=device)
                    dist.all_reduce(flags)
                    loss_sum = flags[0].item() / info.world_size
                    bad, stopping = bad or flags[1].item() > 0, flags[2].item() > 0
                if bad:
                    bad_in_row += 1
                    result.skipped_steps += 1
                    progress.message(f"step {step + 1}: non-finite loss/gradient ({loss_sum}, {float(grad_norm)}), "
                                     "step skipped")
                    if bad_in_row >= cfg.max_bad_steps:
                        raise HopeError(f"{bad_in_row} non-finite steps in a row at step {step + 1}: training "
                                        "diverged (lower lr or surprise_scale, raise error_decay, enable "
                                        "grad_clip_norm)")
                else:
                    bad_in_row = 0
                    inv_scale = 1.0 / scaler.get_scale() if use_scaler else 1.0
                    scaler.step(optimizer)
                    for n, p in slow_named:
                        if p.grad is not None:
                            slow_grads[n].add_(p.grad, alpha=inv_scale)
                    slow_count += 1 if slow_named else 0
                    window_sums += step_sums
                optimizer.zero_grad(set_to_none=True)
                if slow_optimizer is not None:
                    slow_optimizer.zero_grad(set_to_none=True)
                    if (step + 1) % slow_period == 0:  # the slow level's step: average of its period's gradients
                        if slow_count > 0:
                            for n, p in slow_named:
                                p.grad = slow_grads[n] / slow_count
                            if cfg.grad_clip_norm > 0:
                                torch.nn.utils.clip_grad_norm_(slow_params, cfg.grad_clip_norm)
                            slow_optimizer.step()
                            slow_optimizer.zero_grad(set_to_none=True)
                        for buf in slow_grads.values():
                            buf.zero_()
                        slow_count = 0
                scaler.update()
                if not bad:
                    ema.update(model)
                step += 1
                window_steps += 1
                result.losses.append(loss_sum)
                if meta is not None and step % cfg.meta.outer_frequency == 0:
                    write_record({"step": step, "split": "meta", "tokens": step * tokens_per_step, **meta.round(step)})
                log_now = step % cfg.log_interval == 0 or step == cfg.steps
                record = {"loss": loss_sum, "lr": lr}
                if log_now:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    stats = summarize(window_sums, cfg.metrics.track_ppl, cfg.metrics.track_accuracy)
                    record = {"step": step, "split": "train", "tokens": step * tokens_per_step, "lr": lr,
                              "loss": loss_sum, "grad_norm": float(grad_norm),
                              "tokens_per_s": window_steps * tokens_per_step / elapsed}
                    if cfg.metrics.track_ppl:
                        record["ppl"] = math.exp(min(loss_sum, 50.0)) if math.isfinite(loss_sum) else float("nan")
                    if cfg.metrics.track_accuracy:
                        record.update(accuracy=stats["accuracy"], top5_acc=stats["top5_acc"],
                                      top10_acc=stats["top10_acc"])
                    if result.skipped_steps:
                        record["skipped_steps"] = result.skipped_steps
                    write_record(record)
                    window_sums.zero_()
                    window_start, window_steps = time.perf_counter(), 0
                progress.update(step, cfg.steps, record, log_now)
                if on_step is not None:
                    on_step(step, record)
                if step % cfg.eval_interval == 0 and step < cfg.steps:
                    set_schedules(step)
                    with ema.swapped_in(model):
                        val = evaluate_lm(model, corpus.val, **eval_args)
                    write_record(_eval_record(step, "val", step * tokens_per_step, lr, val))
                    progress.message(f"step {step} val loss {val['loss']:.4f}")
                    checkpoint(step)
                if not info.enabled:  # a signal during the bookkeeping above still stops after this step
                    stopping = stop.received is not None
            signum = stop.received
    finally:
        progress.close()
    result.train_time_s = time.perf_counter() - train_start
    result.tokens_per_s = (step - start_step) * tokens_per_step / max(result.train_time_s, 1e-9)
    result.step = step
    if stopping:
        signum = signum if signum is not None else signal.SIGTERM  # another rank got it
        path = checkpoint(step)
        where = f"resumable checkpoint saved to {path} (continue with --resume {path})" if path is not None else (
            "checkpoint saved by rank 0" if save else "no checkpoint saved")
        raise TrainingInterrupted(f"interrupted by {signal.Signals(signum).name} at step {step}/{cfg.steps}; {where}",
                                  signum)
    set_schedules(step)
    if final_eval:
        with ema.swapped_in(model):
            result.val = evaluate_lm(model, corpus.val, **eval_args)
            result.train = evaluate_lm(model, corpus.train, **eval_args)
        last_lr = lr_at(max(step - 1, 0), cfg.lr, warmup, cfg.steps, cfg.min_lr)
        for split, metrics in (("val", result.val), ("train", result.train)):
            write_record({**_eval_record(step, split, step * tokens_per_step, last_lr, metrics), "final": True,
                          "tokens_per_s": result.tokens_per_s, "skipped_steps": result.skipped_steps})
    result.checkpoint = checkpoint(step)
    if ema.enabled:  # evaluation-time users of the returned model get the EMA weights, as from the checkpoint
        ema.copy_to(model)
    return result
