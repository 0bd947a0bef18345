"""Progress and logging of the training loop (hope.train.loop): the stop signal, the tqdm bar or plain log lines,
the window of device values between host reads (`read_window`), and the metrics-log records (`log_step`,
`eval_record`; the schema is `hope.runs.METRICS_SCHEMA`).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hope.eval.lm import summarize

if TYPE_CHECKING:
    from hope.train.guard import BadSteps
    from hope.train.loop import TrainResult, _Run


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (so the step finishes cleanly)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
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


class Progress:
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


@dataclass
class Window:
    """What accumulates on the device between host reads (`read_window`): the finite steps' token sums and
    every step's loss; plus throughput since the last log record. `loss` is the last read step loss."""

    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(5, dtype=torch.float64))
    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    losses: list[torch.Tensor] = field(default_factory=list)  # 0-dim device tensors, one per step, not yet read
    loss: float = float("nan")


def read_window(run: _Run, step: int, window: Window, guard: BadSteps, result: TrainResult,
                 progress: Progress) -> None:
    """The host reads, done only at log, evaluation and stop steps: the guard (raises after `max_bad_steps` bad
    steps in a row), then the window's step losses into `result.losses`."""
    guard.check()
    if guard.skipped > guard.reported:
        progress.message(f"step {step}: {guard.skipped - guard.reported} non-finite step(s) skipped since the last "
                         f"log ({guard.skipped} in all)")
        guard.reported = guard.skipped
    if window.losses:
        losses = torch.stack(window.losses).tolist()
        result.losses += losses
        window.loss = losses[-1]
        window.losses.clear()
    result.skipped_steps = guard.skipped


def log_step(run: _Run, step: int, lr: float, grad_norm: torch.Tensor, window: Window,
              skipped_steps: int) -> dict:
    """The metrics-log record of a log step (written here; after `read_window`), with the step's loss and the
    window's accuracy and throughput."""
    cfg = run.cfg
    loss = window.loss
    stats = summarize(window.sums, cfg.metrics.track_ppl, cfg.metrics.track_accuracy)
    grad_norm = float(grad_norm)
    elapsed = max(time.perf_counter() - window.start, 1e-9)  # after the reads: the device work is done
    record = {"step": step, "split": "train", "tokens": step * run.tokens_per_step, "lr": lr, "loss": loss,
              "grad_norm": grad_norm, "tokens_per_s": window.steps * run.tokens_per_step / elapsed}
    if cfg.metrics.track_ppl:
        record["ppl"] = math.exp(min(loss, 50.0)) if math.isfinite(loss) else float("nan")
    if cfg.metrics.track_accuracy:
        record.update(accuracy=stats["accuracy"], top5_acc=stats["top5_acc"], top10_acc=stats["top10_acc"])
    if skipped_steps:
        record["skipped_steps"] = skipped_steps
    write_record(run, record)
    window.sums.zero_()
    window.start, window.steps = time.perf_counter(), 0
    return record


def write_record(run: _Run, record: dict) -> None:
    if run.run_log is not None:
        run.run_log.write(record)


def eval_record(step: int, split: str, tokens: int, lr: float, metrics: dict[str, float]) -> dict[str, Any]:
    """A metrics-log record of an evaluation (`evaluate_lm`'s `tokens`, the count scored, is `eval_tokens`)."""
    scores = {k: v for k, v in metrics.items() if k != "tokens"}
    return {"step": step, "split": split, "tokens": tokens, "lr": lr, **scores, "eval_tokens": metrics.get("tokens")}
