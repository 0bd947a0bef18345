"""A training run's files: what a run writes, the checks before it starts, and its metrics log.

A run named by its checkpoint `runs/a.pt` writes, side by side,

    runs/a.pt                 the checkpoint (`hope.checkpoint`)
    runs/a.metrics.jsonl      the metrics log: one JSON record per line, schema in METRICS_SCHEMA
    runs/a.config.yaml        the resolved config the run trained with

so two runs in one folder (`--out a.pt`, `--out b.pt`) never share a log. Before training starts every output path
is checked for writability (`check_writable`) and, unless the user passed `--overwrite`, for belonging to another
run (`refuse_overwrite`): both raise a one-line `HopeError` instead of a traceback minutes later. A run that stopped
before its first checkpoint and metrics record (bad input) leaves only its config, which does not count as
another run's output (`unstarted_configs`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hope.atomic import write_text
from hope.config import dump_yaml
from hope.errors import HopeError

METRICS_SUFFIX = ".metrics.jsonl"
CONFIG_SUFFIX = ".config.yaml"

# The one schema of every metrics record (README "Metrics log"). Every record has step and split; the rest is
# there when it means something for that split.
METRICS_SCHEMA: dict[str, str] = {
    "step": "optimiser steps done when the record was written",
    "split": "train (running training metrics over the last log interval), val (validation), meta (a meta round)",
    "tokens": "training tokens seen so far (all ranks, all accumulation micro-batches)",
    "lr": "learning rate of the last step",
    "loss": "cross-entropy, nats/byte",
    "ppl": "exp(loss)",
    "accuracy": "top-1 next-byte accuracy",
    "top5_acc": "top-5 next-byte accuracy",
    "top10_acc": "top-10 next-byte accuracy",
    "final": "true on the two records (val and train, EMA weights, fixed windows) written at the end of the run",
}


@dataclass(frozen=True)
class RunFiles:
    """The files of the run whose checkpoint is `checkpoint`."""

    checkpoint: Path

    @property
    def metrics(self) -> Path:
        return metrics_log_path(self.checkpoint)

    @property
    def config(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.stem + CONFIG_SUFFIX)

    def paths(self) -> list[Path]:
        return [self.checkpoint, self.metrics, self.config]


def metrics_log_path(checkpoint: str | Path) -> Path:
    """`runs/a.pt` -> `runs/a.metrics.jsonl`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + METRICS_SUFFIX)


def find_metrics_log(path: str | Path) -> Path:
    """A metrics log given as the log itself, its checkpoint, or a run folder holding one log (older runs:
    `metrics.jsonl`). Raises HopeError when there is none or the folder holds several."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        return path
    if path.suffix == ".pt":
        candidates = [metrics_log_path(path), path.with_name("metrics.jsonl")]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise HopeError(f"no metrics log for checkpoint {path} (looked for {candidates[0]})")
    if path.is_dir():
        logs = sorted(path.glob("*" + METRICS_SUFFIX)) or sorted(path.glob("metrics.jsonl"))
        if len(logs) == 1:
            return logs[0]
        if not logs:
            raise HopeError(f"no *{METRICS_SUFFIX} metrics log in {path}")
        raise HopeError(f"{path} holds {len(logs)} metrics logs ({', '.join(p.name for p in logs)}): name one")
    raise HopeError(f"metrics log not found: {path} (pass a *{METRICS_SUFFIX} file, its checkpoint or its folder)")


# ----------------------------------------------------------------------------- checks before a run starts


def check_writable(paths: Iterable[str | Path]) -> None:
    """Every path can be created or replaced: its nearest existing parent is a writable folder where the run's
    folder or file can be created (tried, not only asked: root passes every permission check, yet cannot create
    `/proc/nope`), and the path itself (if it exists) is a writable file. Raises HopeError naming the first that
    cannot."""
    tried: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            raise HopeError(f"cannot write {path}: it is a directory (give a file path)")
        if path.exists() and not os.access(path, os.W_OK):
            raise HopeError(f"cannot write {path}: permission denied")
        parent, missing = path.parent if str(path.parent) else Path("."), None
        while not parent.exists() and parent != parent.parent:
            parent, missing = parent.parent, parent
        if not parent.is_dir():
            raise HopeError(f"cannot write {path}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise HopeError(f"cannot write {path}: folder {parent} is not writable")
        if parent not in tried:
            _try_create(path, parent, missing)
            tried.add(parent)


def _try_create(path: Path, parent: Path, missing: Path | None) -> None:
    """Create and remove what the run will create in `parent`: the `missing` folder of `path`, else a file."""
    try:
        if missing is None:
            fd, probe = tempfile.mkstemp(prefix=".hope-check-", dir=parent)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".hope-check-", dir=parent))
    except OSError as exc:
        what = f"files in {parent}" if missing is None else f"folder {missing}"
        raise HopeError(f"cannot write {path}: cannot create {what} ({exc.strerror})") from None


def refuse_overwrite(paths: Iterable[str | Path], *, allowed: Iterable[str | Path] = ()) -> None:
    """Raise HopeError if any of `paths` exists (another run's output), except those in `allowed` (e.g. the
    checkpoint being resumed and its log), empty files, and the config of a run that never started
    (`unstarted_configs`)."""
    paths = [Path(p) for p in paths]
    keep = {p.resolve() for p in map(Path, allowed)} | {p.resolve() for p in unstarted_configs(paths)}
    for path in paths:
        if path.exists() and path.resolve() not in keep and not (path.is_file() and path.stat().st_size == 0):
            raise HopeError(f"{path} already exists (another run's output): pass --overwrite to replace it, "
                            "or write elsewhere (--out / --out_dir)")


def unstarted_configs(paths: Iterable[str | Path]) -> list[Path]:
    """The run configs among `paths` whose run has neither a checkpoint nor a metrics record. A run writes its
    config before it reads its data or builds its model, so bad input (a missing --data, a corpus shorter than a
    segment) leaves one behind with nothing else: it holds no result, and must not block the corrected run."""
    paths = [Path(p) for p in paths]
    listed = set(paths)
    unstarted = []
    for path in paths:  # each checkpoint among `paths` names its run's other files
        run = RunFiles(path)
        if run.config in listed and run.config.is_file() and not any(
                p.is_file() and p.stat().st_size > 0 for p in (run.checkpoint, run.metrics)):
            unstarted.append(run.config)
    return unstarted


def write_run_config(path: str | Path, cfg: Any) -> Path:
    """The resolved config a run trains with, as YAML (`hope.config.dump_yaml`), written atomically."""
    return write_text(path, dump_yaml(cfg))


# ----------------------------------------------------------------------------- data paths


def absolute_data(data: str | None) -> str | None:
    """The data path a checkpoint stores: absolute, so the checkpoint works from any folder."""
    return str(Path(data).expanduser().resolve()) if data else data


def resolve_data(data: str | None, checkpoint: str | Path) -> str | None:
    """A checkpoint's stored data path: absolute as stored; a relative one (older checkpoints) relative to the
    checkpoint's folder if it exists there, else as given (relative to the current folder)."""
    if not data or Path(data).is_absolute():
        return data
    beside = Path(checkpoint).parent / data
    return str(beside.resolve()) if beside.exists() else data


# ----------------------------------------------------------------------------- the metrics log


def require_tensorboard() -> Any:
    """`torch.utils.tensorboard.SummaryWriter`; HopeError (one line) if the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise HopeError("--tensorboard needs the tensorboard package: pip install 'hope[tensorboard]' "
                        "(or pip install tensorboard)") from None
    return SummaryWriter


def open_tensorboard(log_dir: str | Path) -> Any:
    """A TensorBoard `SummaryWriter` writing event files into `log_dir`."""
    return require_tensorboard()(log_dir=str(log_dir))


class MetricsLog:
    """Appends records to a JSON-lines file and, when given a TensorBoard writer, logs every finite number of
    each record as the scalar `<split>/<key>` at the record's step."""

    def __init__(self, path: str | Path, tensorboard: Any = None):
        self.path = Path(path)
        self.tensorboard = tensorboard

    def start(self, step: int) -> None:
        """A fresh run empties the log; a resumed one drops the records after `step` (they are redone)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if step == 0 or not self.path.is_file():
            self.path.write_text("", encoding="utf-8")
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or int(record.get("step", 0)) <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            step, split = int(record.get("step", 0)), str(record.get("split", "train"))
            prefix = f"{split}_final" if record.get("final") else split
            for key, value in record.items():
                if key in ("step", "split", "final") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tensorboard.add_scalar(f"{prefix}/{key}", value, step)
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics log, in this schema; older logs (acc/top5/top10 keys, a nested final record,
    no split) are converted so every reader sees one schema."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("val"), dict):  # old final record {"final": true, "val": {...}, "train": {...}}
            for split in ("val", "train"):
                if isinstance(record.get(split), dict):
                    records.append({"step": record.get("step", 0), "split": split, "final": True, **record[split]})
            continue
        for old, new in (("acc", "accuracy"), ("top5", "top5_acc"), ("top10", "top10_acc")):
            if old in record:
                record.setdefault(new, record.pop(old))
        record.setdefault("split", "meta" if "meta_gain" in record else "train")
        records.append(record)
    return records


__all__ = ["METRICS_SCHEMA", "RunFiles", "metrics_log_path", "find_metrics_log", "check_writable",
           "refuse_overwrite", "unstarted_configs", "write_run_config", "absolute_data", "resolve_data",
           "require_tensorboard", "open_tensorboard", "MetricsLog", "read_metrics"]
