"""The training loop: `train(cfg)` is what `hope-train`, `hope-run-experiment`, `hope-continual`,
`hope-meta-train` and the tests all call.

One optimiser step = `grad_accum_steps` micro-batches (loss divided by that count), then a finite-loss/grad guard
(torchtitan's habit: skip and count, abort after `max_bad_steps` in a row), global-norm clipping, the step, the
EMA update. Nested level stepping (architecture.md §3): the slow CMS level's parameters live in their own
optimiser that steps only every `update_frequencies.optimizer_step` steps, its gradients summed in between and
averaged at its step; the fast levels (SMT, bank, fast CMS) learn in context inside `forward`.
Resume is exact: batches are a pure function of (seed, step), and the checkpoint holds model, EMA, optimisers,
scaler, step and RNG states. SIGINT/SIGTERM finish the current step, save a resumable checkpoint and exit.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from hope.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, model_state, save_checkpoint
from hope.config import Config, config_to_dict
from hope.data.corpus import Corpus, load_corpus
from hope.data.loader import make_loader
from hope.errors import HopeError
from hope.eval.lm import evaluate_lm, summarize, token_sums
from hope.models import build_model
from hope.runtime import (DistInfo, autocast, init_distributed, print0, resolve_device, seed_everything,
                          shutdown_distributed)
from hope.train.ema import EMA
from hope.train.optim import build_optimizer, set_lr
from hope.train.schedule import lr_at

SLOW_LEVEL = ".cms.slow."  # parameter-name marker of the slow CMS level


class TrainingInterrupted(HopeError):
    """SIGINT/SIGTERM during training; a resumable checkpoint was written."""


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
    losses: list[float] = field(default_factory=list)
    skipped_steps: int = 0


def metrics_path(cfg: Config) -> Path:
    """metrics.jsonl lives next to the checkpoint."""
    return Path(cfg.out).with_name("metrics.jsonl")


def split_slow_params(model: torch.nn.Module, cfg: Config) -> tuple[list, list]:
    """(fast/normal named params, slow-level named params); slow only with a CMS chain stepping every N > 1."""
    named = list(model.named_parameters())
    if cfg.model_type != "hope" or cfg.cms != "chain" or cfg.update_frequencies.optimizer_step <= 1:
        return named, []
    slow = [(n, p) for n, p in named if SLOW_LEVEL in f".{n}"]
    slow_ids = {id(p) for _, p in slow}
    return [(n, p) for n, p in named if id(p) not in slow_ids], slow


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
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
    """tqdm bar on a terminal, plain periodic log lines otherwise (CI logs, files)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, desc="train")

    def update(self, step: int, total: int, record: dict[str, float], log_line: bool) -> None:
        if not self.enabled:
            return
        shown = {k: record[k] for k in ("loss", "acc", "top5", "top10", "lr", "tok/s") if k in record}
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


def train(cfg: Config, *, resume: str | Path | None = None, corpus: Corpus | None = None,
          model: torch.nn.Module | None = None, save: bool = True, verbose: bool = True,
          final_eval: bool = True, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train `cfg.model_type` for `cfg.steps` optimiser steps and return the model and its metrics.

    `corpus` overrides `cfg.data` (used by experiments that train on prepared splits); `model` continues training
    a given model (continual learning) instead of building a fresh one.
    """
    device = resolve_device(cfg.device, cfg.cuda_device)
    info: DistInfo = init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device(f"cuda:{info.local_rank}")
        torch.cuda.set_device(device)
    log = verbose and info.is_main
    seed_everything(cfg.seed)
    corpus = corpus if corpus is not None else load_corpus(cfg.data, seed=cfg.seed)
    corpus.check_length(cfg.seq_len + 1)
    if cfg.debug_anomaly:
        torch.autograd.set_detect_anomaly(True)

    model = (model if model is not None else build_model(cfg)).to(device)
    main_named, slow_named = split_slow_params(model, cfg)
    opt_args = dict(lr=cfg.lr, base_momentum=cfg.base_momentum, weight_decay=cfg.weight_decay, beta2=cfg.beta2)
    optimizer = build_optimizer(main_named, cfg.optimizer_type, **opt_args)
    slow_optimizer = build_optimizer(slow_named, cfg.optimizer_type, **opt_args) if slow_named else None
    use_scaler = cfg.amp and cfg.amp_dtype == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = EMA(model, cfg.ema_decay)
    start_step = 0

    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        stored = checkpoint_config(ckpt, resume)
        if stored.model_type != cfg.model_type or build_model(stored).num_params() != model.num_params():
            raise CheckpointError(f"{resume}: checkpoint is a {stored.model_type} model of a different shape than the config")
        model.load_state_dict(ckpt["model"])
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            if slow_optimizer is not None and ckpt.get("slow_optimizer"):
                slow_optimizer.load_state_dict(ckpt["slow_optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{resume}: optimiser state does not match optimizer_type {cfg.optimizer_type} ({exc})") from None
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema.enabled and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        start_step = int(ckpt["step"])
        if ckpt.get("rng"):
            _set_rng_state(ckpt["rng"])
        if log:
            print(f"resumed from {resume} at step {start_step}")

    run_model = model
    if cfg.compile:
        run_model = torch.compile(model)
    if info.enabled:
        run_model = DistributedDataParallel(run_model, device_ids=[device.index] if device.type == "cuda" else None)

    accum = cfg.grad_accum_steps
    loader = make_loader(corpus.train, cfg.batch_size, cfg.seq_len, cfg.seed, start_step * accum, cfg.steps * accum,
                         rank=info.rank, recall_fraction=cfg.recall_fraction, num_workers=cfg.num_workers,
                         pin_memory=cfg.pin_memory and device.type == "cuda", prefetch_factor=cfg.prefetch_factor)
    batches = iter(loader)
    mpath = metrics_path(cfg)
    if info.is_main and save:
        mpath.parent.mkdir(parents=True, exist_ok=True)
        if start_step == 0:
            mpath.write_text("")

    def checkpoint(step: int) -> Path | None:
        if not (save and info.is_main):
            return None
        payload = {"model_type": cfg.model_type, "config": config_to_dict(cfg), "model": model_state(model),
                   "ema": ema.state_dict() if ema.enabled else None, "optimizer": optimizer.state_dict(),
                   "slow_optimizer": slow_optimizer.state_dict() if slow_optimizer is not None else None,
                   "scaler": scaler.state_dict() if use_scaler else None, "step": step, "rng": _rng_state(),
                   "params": model.num_params()}
        return save_checkpoint(cfg.out, payload)

    def write_record(record: dict) -> None:
        if save and info.is_main:
            with open(mpath, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    meta = None
    if cfg.meta.use:
        from hope.train.meta import MetaLearner  # only HOPE has fast state to meta-learn

        meta = MetaLearner(model, cfg, corpus, device)

    progress = _Progress(cfg.steps, start_step, log)
    result = TrainResult(model=model, config=cfg, step=start_step)
    tokens_per_step = cfg.batch_size * cfg.seq_len * accum * info.world_size
    bad_in_row, window_sums, window_start, window_steps = 0, torch.zeros(5, dtype=torch.float64), time.perf_counter(), 0
    train_start = time.perf_counter()
    step = start_step
    if log:
        print0(f"training {cfg.model_type}: {model.num_params():,} parameters on {device}, data {corpus.name}, "
               f"{cfg.steps} steps of {tokens_per_step} tokens", info=info)
    model.train()
    with _StopSignal() as stop:
        while step < cfg.steps:
            lr = lr_at(step, cfg.lr, min(cfg.warmup_steps, cfg.steps), cfg.steps, cfg.min_lr)
            set_lr(optimizer, lr)
            if slow_optimizer is not None:
                set_lr(slow_optimizer, lr)
            model.set_schedules(cfg.mem_write.at(step), cfg.surprise_scale.at(step))
            loss_sum = 0.0
            for micro in range(accum):
                x, y = next(batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = not info.enabled or micro == accum - 1
                ctx = run_model.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    with autocast(device, cfg.amp, cfg.amp_dtype):
                        logits, loss, _ = run_model(x, y)
                    scaler.scale(loss / accum).backward()
                loss_sum += loss.item() / accum
                if micro == accum - 1:
                    window_sums += token_sums(logits.detach(), y).cpu()
            scaler.unscale_(optimizer)
            params = [p for _, p in main_named]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm if cfg.grad_clip_norm > 0 else float("inf"))
            if not (math.isfinite(loss_sum) and torch.isfinite(grad_norm)):
                bad_in_row += 1
                result.skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
                if slow_optimizer is not None:
                    slow_optimizer.zero_grad(set_to_none=True)
                scaler.update()
                if log:
                    print(f"step {step}: non-finite loss/gradient ({loss_sum}, {float(grad_norm)}), step skipped")
                if bad_in_row >= cfg.max_bad_steps:
                    raise HopeError(f"{bad_in_row} non-finite steps in a row at step {step}: training diverged "
                                    "(lower lr or surprise_scale, raise error_decay, enable grad_clip_norm)")
                step += 1
                continue
            bad_in_row = 0
            scaler.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            if slow_optimizer is not None and (step + 1) % cfg.update_frequencies.optimizer_step == 0:
                slow_params = [p for _, p in slow_named]
                for p in slow_params:  # average the gradients summed over the slow level's period
                    if p.grad is not None:
                        p.grad.div_(cfg.update_frequencies.optimizer_step)
                if cfg.grad_clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(slow_params, cfg.grad_clip_norm)
                slow_optimizer.step()
                slow_optimizer.zero_grad(set_to_none=True)
            scaler.update()
            ema.update(model)
            step += 1
            window_steps += 1
            result.losses.append(loss_sum)
            if meta is not None and step % cfg.meta.outer_frequency == 0:
                write_record({"step": step, **meta.round(step)})
            log_now = step % cfg.log_interval == 0 or step == cfg.steps
            record = {"loss": loss_sum, "lr": lr}
            if log_now:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                stats = summarize(window_sums, cfg.metrics.track_ppl, cfg.metrics.track_accuracy)
                record = {"step": step, "loss": loss_sum, "lr": lr, "grad_norm": float(grad_norm),
                          "tok/s": window_steps * tokens_per_step / elapsed}
                if cfg.metrics.track_ppl:
                    record["ppl"] = math.exp(min(loss_sum, 50.0))
                if cfg.metrics.track_accuracy:
                    record.update(acc=stats["accuracy"], top5=stats["top5_acc"], top10=stats["top10_acc"])
                write_record(record)
                window_sums.zero_()
                window_start, window_steps = time.perf_counter(), 0
            progress.update(step, cfg.steps, record, log_now)
            if on_step is not None:
                on_step(step, record)
            if step % cfg.eval_interval == 0 and step < cfg.steps:
                with ema.swapped_in(model):
                    val = evaluate_lm(model, corpus.val, cfg.seq_len, cfg.batch_size, device,
                                      cfg.eval_batches * cfg.batch_size, cfg.amp, cfg.amp_dtype,
                                      cfg.metrics.track_ppl, cfg.metrics.track_accuracy, info.rank, info.world_size)
                write_record({"step": step, "split": "val", **val})
                if log and progress.bar is None:
                    print(f"step {step} val loss {val['loss']:.4f}", flush=True)
                checkpoint(step)
            if stop.received is not None:
                break
    progress.close()
    result.train_time_s = time.perf_counter() - train_start
    result.tokens_per_s = (step - start_step) * tokens_per_step / max(result.train_time_s, 1e-9)
    result.step = step
    if stop.received is not None:
        path = checkpoint(step)
        shutdown_distributed()
        raise TrainingInterrupted(f"interrupted at step {step}/{cfg.steps}; resumable checkpoint saved to {path} "
                                  f"(continue with --resume {path})")
    if final_eval:
        with ema.swapped_in(model):
            kwargs = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, device=device, amp=cfg.amp,
                          amp_dtype=cfg.amp_dtype, track_ppl=cfg.metrics.track_ppl,
                          track_accuracy=cfg.metrics.track_accuracy, rank=info.rank, world_size=info.world_size)
            windows = cfg.eval_batches * cfg.batch_size  # fixed, evenly spread windows of each split
            result.val = evaluate_lm(model, corpus.val, max_windows=windows, **kwargs)
            result.train = evaluate_lm(model, corpus.train, max_windows=windows, **kwargs)
        write_record({"step": step, "final": True, "val": result.val, "train": result.train,
                      "tokens_per_s": result.tokens_per_s, "skipped_steps": result.skipped_steps})
    result.checkpoint = checkpoint(step)
    if ema.enabled:  # evaluation-time users of the returned model get the EMA weights, as from the checkpoint
        ema.copy_to(model)
    shutdown_distributed()
    return result
