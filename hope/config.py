"""All configuration: typed dataclasses, YAML loading, command-line overrides, validation, dump.

Precedence: dataclass defaults < `--config` YAML file < command-line flags (`--steps`, ..., `--set a.b=v`).
Every key is documented in `configs/example.yaml`; `tests/test_config.py` keeps the two in sync.
A resolved `Config` round-trips through `config_to_dict` / `config_from_dict` (and YAML) unchanged, which is
how it travels inside checkpoints.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

import yaml

from hope.errors import HopeError
from hope.mqar_layout import MAX_PAIRS, row_length

MODEL_TYPES = ("hope", "baseline")
OPTIMIZER_TYPES = ("adamw", "sgd", "muon", "m3")
AMP_DTYPES = ("bf16", "fp16")
CMS_KINDS = ("chain", "mlp")
CMS_OBJECTIVES = ("surrogate", "task")
BANK_INPUTS = ("block", "context")
MEMORY_KINDS = ("linear", "mlp")
RECALL_TASKS = ("episodes", "mqar")
RECALL_ANSWERS = ("shown", "hidden")  # MQAR: the query half shows each answer, or filler in its place (Zoology)
LOSS_ON = ("all", "answers")
DISTRIBUTED = ("ddp", "fsdp")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"  # device: and --device (hope.runtime.resolve_device)
# Keys that existed once and were removed, with the reason a user reads when an old config still sets them.
REMOVED_KEYS = {
    "memory_momentum": "memory_momentum was removed: the memory's write is now the exact delta rule, which has no "
                       "momentum (docs/architecture.md, 'No momentum'); delete the key",
}


class ConfigError(HopeError):
    """A bad config key or value."""


@dataclass
class Schedule:
    """A value ramped linearly from `start` (step 0) to `end` (step >= warmup_steps).

    In YAML either a plain number (constant) or `{start, end, warmup_steps}`.
    """

    start: float
    end: float
    warmup_steps: int = 0

    def at(self, step: int) -> float:
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return self.end
        return self.start + (self.end - self.start) * step / self.warmup_steps


@dataclass
class UpdateFrequencies:
    mem_write: int = 64  # tokens per SMT chunk (keys/targets refresh, bank commit); measured: docs/performance.md
    error_update: int = 32  # cms_objective: task: tokens per in-context step of the fast CMS level
    optimizer_step: int = 4  # optimiser steps per update of the slow CMS level


@dataclass
class Metrics:
    track_ppl: bool = True
    track_accuracy: bool = True


@dataclass
class Meta:
    use: bool = False
    inner_steps: int = 1  # in-context adaptation steps on the support segment
    outer_steps: int = 1  # meta-updates per meta round
    outer_frequency: int = 50  # training steps between meta rounds
    lr: float = 1e-4  # meta-optimiser learning rate
    support_len: int = 64  # bytes in the support segment
    query_len: int = 64  # bytes in the query segment that follows it
    split: float = 0.05  # fraction of the training split held out as the meta split


@dataclass
class Stream:
    """Long-stream training (truncated backpropagation through time), hope.data.stream and hope.train.stream."""

    use: bool = False  # carry the model state across consecutive segments of one stream
    bptt_segments: int = 2  # seq_len segments per optimiser step, backpropagated through together
    reset_bytes: int = 16384  # a stream restarts (fresh state, new offset) after this many bytes


@dataclass
class Config:
    # ---- model size
    model_type: str = "hope"
    dim: int = 128
    depth: int = 4
    num_heads: int = 4
    ff_mult: float = 4.0
    max_len: int = 256
    attn_window: int = 64
    dropout: float = 0.0
    # ---- memory
    memory_kind: str = "linear"
    memory_capacity: int = 64
    top_k: int = 4
    bank_input: str = "context"
    bank_writes: int = 32  # write candidates per chunk: half its bytes, as 8 of 16 before the chunk was 64
    bank_aging: float = 0.9995
    error_decay: float = 0.9
    surprise_scale: Schedule = field(default_factory=lambda: Schedule(1.0, 1.0, 0))
    mem_write: Schedule = field(default_factory=lambda: Schedule(1.0, 1.0, 0))
    memory_hidden_mult: float = 2.0
    # Timescale heads: one entry per head, bytes (0: a free head); a head of timescale T forgets neither by decay
    # nor by overwriting within ~T bytes (retention floor, inner-rate ceiling). Empty: every head free.
    memory_timescales: list[float] = field(default_factory=list)
    write_threshold: float | None = None  # sparse writes: only tokens with normalised surprise above it write
    self_modifying: bool = True
    cms: str = "chain"
    cms_objective: str = "surrogate"
    update_frequencies: UpdateFrequencies = field(default_factory=UpdateFrequencies)
    # ---- optimiser and stability
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta2: float = 0.99
    base_momentum: float = 0.9
    ema_decay: float = 0.0
    optimizer_type: str = "adamw"
    grad_clip_norm: float = 1.0
    grad_accum_steps: int = 1
    max_bad_steps: int = 10
    # ---- data and training
    data: str | None = None
    batch_size: int = 8
    seq_len: int = 128
    steps: int = 200
    num_workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int = 2
    recall_fraction: float = 0.0
    recall_episodes: int = 1
    recall_task: str = "episodes"
    recall_pairs: int = 8
    recall_gap_min: int = 0
    recall_gap_max: int = 64
    loss_on: str = "all"
    recall_answers: str = "shown"
    stream: Stream = field(default_factory=Stream)
    seed: int = 1337
    log_interval: int = 10
    eval_interval: int = 100
    eval_batches: int = 20
    out: str = "hope_checkpoint.pt"
    # ---- device and mixed precision
    device: str = "auto"
    cuda_device: int = 0
    amp: bool = False
    amp_dtype: str = "bf16"
    compile: bool = False
    recompute_memory: bool = False
    debug_anomaly: bool = False
    distributed: str = "ddp"  # under torchrun: ddp (replicas) | fsdp (FSDP2 fully_shard: sharded replicas)
    # ---- metrics and meta-learning
    metrics: Metrics = field(default_factory=Metrics)
    meta: Meta = field(default_factory=Meta)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


# ----------------------------------------------------------------------------- dict <-> dataclass


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain nested dict of YAML/JSON-safe values (Schedules as {start, end, warmup_steps})."""
    return dataclasses.asdict(cfg)


def _type_name(tp: Any) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " or null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value to the declared field type, or raise ConfigError."""
    if get_origin(tp) in (Union, types.UnionType):  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key)
    if get_origin(tp) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (inner,) = get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Schedule:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Schedule(float(value), float(value), 0)
        if isinstance(value, dict):
            return _from_dict(Schedule, value, key)
        raise ConfigError(f"{key}: expected a number or {{start, end, warmup_steps}}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {[f.name for f in dataclasses.fields(tp)]}, got {value!r}")
        return _from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names and cls is Config and key in REMOVED_KEYS:
            raise ConfigError(REMOVED_KEYS[key])
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f" (did you mean '{(prefix + '.' if prefix else '') + close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    if cls is Schedule and not {"start", "end"} <= kwargs.keys():
        raise ConfigError(f"{prefix}: a schedule needs both 'start' and 'end'")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Nested dict -> validated Config (unknown keys and wrong types raise ConfigError)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(data).__name__}")
    cfg = _from_dict(Config, data)
    validate(cfg)
    return cfg


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):  # schedules merge too: --set mem_write.end=0
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- files and overrides


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (PyYAML follows YAML 1.1, which wants `1.0e-3`)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; a missing file or malformed YAML raises ConfigError (with the line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def parse_set(assignment: str) -> dict[str, Any]:
    """`a.b=value` -> {"a": {"b": value}}; the value is parsed as YAML (numbers, bools, mappings)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got '{assignment}'")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else None  # noqa: S506 (safe loader)
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[dict[str, Any]] | None = None) -> Config:
    """defaults < YAML file at `path` < each override dict in order; validated."""
    data = config_to_dict(Config())
    if path is not None:
        data = _merge(data, read_yaml(path))
    for override in overrides or []:
        data = _merge(data, override)
    return config_from_dict(data)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------- validation


def check_device(device: str, name: str = "device") -> None:
    """auto | cpu | cuda | cuda:N, else a one-line ConfigError (`name`: how the user spelled the setting).
    Apple MPS is refused by name: the training loop's device-side sums are float64, which MPS does not have."""
    if re.fullmatch(DEVICE_PATTERN, str(device).strip().lower()):
        return
    why = (" (Apple MPS is not supported: training keeps float64 sums on the device, which MPS lacks; use cpu)"
           if str(device).strip().lower() == "mps" else "")
    raise ConfigError(f"{name} must be auto, cpu, cuda or cuda:N, got '{device}'{why}")


@dataclass(frozen=True)
class Range:
    """The allowed values of a number: from `lo` (open: `lo` itself excluded) up to `hi` (None: no upper bound);
    `note` follows the bound in the message."""

    lo: float
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""

    def outside(self, value: Any) -> bool:
        if self.hi is None and not self.lo_open:  # `value < lo`: a NaN passes a closed lower bound, as it always has
            return value < self.lo
        low = value > self.lo if self.lo_open else value >= self.lo
        high = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return not (low and high)

    def message(self, name: str, value: Any) -> str:
        if self.hi is None:
            return f"{name} must be {'>' if self.lo_open else '>='} {self.lo}{self.note}, got {value}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"{name} must be in {left}{self.lo}, {self.hi}{right}, got {value}"


@dataclass(frozen=True)
class Choice:
    """The allowed values of a string setting; `unknown` words the message "unknown NAME 'x' (choose from ...)"."""

    options: tuple[str, ...]
    unknown: bool = False

    def outside(self, value: Any) -> bool:
        return value not in self.options

    def message(self, name: str, value: Any) -> str:
        if self.unknown:
            return f"unknown {name} '{value}' (choose from {', '.join(self.options)})"
        return f"{name} must be one of {', '.join(self.options)}, got '{value}'"


POSITIVE, AT_LEAST_0, AT_LEAST_1 = Range(0, lo_open=True), Range(0), Range(1)
FRACTION = Range(0, 1, hi_open=True)  # [0, 1): decays, momentum, dropout


def _cms_objective_needs_chain(cfg: Config) -> None:
    if cfg.cms_objective == "task" and (cfg.model_type != "hope" or cfg.cms != "chain"):
        raise ConfigError(f"cms_objective: task trains the fast CMS level, which needs model_type: hope and cms: chain "
                          f"(got model_type: {cfg.model_type}, cms: {cfg.cms})")


def _head_shapes(cfg: Config) -> None:
    if cfg.dim % cfg.num_heads != 0:
        raise ConfigError(f"dim ({cfg.dim}) must be divisible by num_heads ({cfg.num_heads})")
    if cfg.head_dim % 2 != 0:
        raise ConfigError(f"dim / num_heads ({cfg.head_dim}) must be even for rotary positions")
    if cfg.max_len < cfg.seq_len:
        raise ConfigError(f"max_len ({cfg.max_len}) must be >= seq_len ({cfg.seq_len})")


def _memory_timescales(cfg: Config) -> None:
    if cfg.memory_timescales and len(cfg.memory_timescales) != cfg.num_heads:
        raise ConfigError(f"memory_timescales: one entry per head ({cfg.num_heads}), got {len(cfg.memory_timescales)}")
    if any(not (math.isfinite(t) and t >= 0) for t in cfg.memory_timescales):
        raise ConfigError(f"memory_timescales: bytes >= 0 (0: a free head), got {cfg.memory_timescales}")
    if cfg.write_threshold is not None and not abs(cfg.write_threshold) < 3:
        raise ConfigError(f"write_threshold: a normalised surprise in (-3, 3) (it is clipped to +-3), "
                          f"got {cfg.write_threshold}")


def _top_k_within_capacity(cfg: Config) -> None:
    if cfg.memory_capacity > 0 and not 0 < cfg.top_k <= cfg.memory_capacity:
        raise ConfigError(f"top_k ({cfg.top_k}) must be between 1 and memory_capacity ({cfg.memory_capacity})")


def _schedules(cfg: Config) -> None:
    for name in ("surprise_scale", "mem_write"):
        sched: Schedule = getattr(cfg, name)
        if sched.warmup_steps < 0 or not (math.isfinite(sched.start) and math.isfinite(sched.end)):
            raise ConfigError(f"{name}: warmup_steps must be >= 0 and start/end finite")
        if min(sched.start, sched.end) < 0:
            raise ConfigError(f"{name}: start and end must be >= 0")
    if cfg.mem_write.start > 1 or cfg.mem_write.end > 1:
        raise ConfigError("mem_write: start and end are gates in [0, 1]")


def _mqar_rows(cfg: Config) -> None:
    """recall_pairs / recall_gap_min / recall_gap_max / loss_on, and an MQAR row fitting a training window."""
    if not 1 <= cfg.recall_pairs <= MAX_PAIRS:
        raise ConfigError(f"recall_pairs must be between 1 and {MAX_PAIRS} (the MQAR key and value ranges hold "
                          f"{MAX_PAIRS} bytes each), got {cfg.recall_pairs}")
    if not 0 <= cfg.recall_gap_min <= cfg.recall_gap_max:
        raise ConfigError(f"recall_gap_min and recall_gap_max must satisfy 0 <= min <= max, got "
                          f"{cfg.recall_gap_min} and {cfg.recall_gap_max}")
    if cfg.loss_on == "answers" and (cfg.recall_task != "mqar" or cfg.recall_fraction == 0):
        raise ConfigError("loss_on: answers restricts the loss of MQAR rows to their answers; it needs "
                          f"recall_task: mqar and recall_fraction > 0 (got {cfg.recall_task}, {cfg.recall_fraction})")
    if cfg.recall_task != "mqar" or cfg.recall_fraction == 0:
        return
    if cfg.stream.use:
        raise ConfigError("recall_task: mqar is not supported with stream.use (MQAR rows are seq_len + 1 bytes and "
                          "long streams would need answers per piece); use stream.use: false")
    need = row_length(cfg.recall_pairs, cfg.recall_gap_max)
    if need > cfg.seq_len + 1:
        raise ConfigError(f"an MQAR row of recall_pairs={cfg.recall_pairs} and a gap of recall_gap_max="
                          f"{cfg.recall_gap_max} needs {need} bytes (4 * pairs + gap), more than seq_len + 1 = "
                          f"{cfg.seq_len + 1}")


def _stream_pieces(cfg: Config) -> None:
    if cfg.stream.use and cfg.stream.reset_bytes < cfg.stream.bptt_segments * cfg.seq_len:
        raise ConfigError(f"stream.reset_bytes ({cfg.stream.reset_bytes}) must be >= stream.bptt_segments * seq_len "
                          f"({cfg.stream.bptt_segments * cfg.seq_len}), the bytes one optimiser step reads")
    piece = cfg.stream.bptt_segments * cfg.seq_len
    if cfg.stream.use and cfg.cms_objective == "task" and piece % cfg.update_frequencies.error_update:
        # A carried task_tail makes the model return a logits view its loss cannot .view (hope.models.lm).
        raise ConfigError(f"stream.use with cms_objective: task needs stream.bptt_segments * seq_len ({piece}) to be "
                          f"a multiple of update_frequencies.error_update ({cfg.update_frequencies.error_update})")


def _min_lr(cfg: Config) -> None:
    if cfg.min_lr < 0 or cfg.min_lr > cfg.lr:
        raise ConfigError(f"min_lr must be in [0, lr], got {cfg.min_lr}")


def _device(cfg: Config) -> None:
    check_device(cfg.device)


def _fsdp_refusals(cfg: Config) -> None:
    """What FSDP cannot do (the reason is in each message)."""
    if cfg.distributed != "fsdp":
        return
    refusals = [
        (cfg.optimizer_type in ("muon", "m3"),
         f"optimizer_type {cfg.optimizer_type} orthogonalises whole weight matrices (Newton-Schulz), which FSDP "
         "splits across ranks; use adamw or sgd"),
        (cfg.model_type == "hope" and cfg.cms_objective == "task",
         "cms_objective: task takes the fast CMS level's inner gradient (torch.autograd.grad) and step outside the "
         "blocks' forward, where FSDP holds their parameters sharded; use cms_objective: surrogate"),
        (cfg.meta.use,
         "meta.use differentiates through whole forward passes with torch.autograd.grad outside the training "
         "backward, which FSDP's gradient reduce-scatter hooks do not expect; use meta.use: false"),
        (cfg.amp and cfg.amp_dtype == "fp16",
         "amp_dtype: fp16 needs a GradScaler whose overflow check would see only each rank's gradient shard, so "
         "the ranks' loss scales could diverge; use amp_dtype: bf16 (no scaler)"),
    ]
    for refused, why in refusals:
        if refused:
            raise ConfigError(f"distributed: fsdp does not support this: {why} (or distributed: ddp)")


# The checks `validate` makes, in order (the first failing one is reported): (dotted setting, Range or Choice), or
# a cross-field rule (a function of the config that raises ConfigError).
RULES: tuple[tuple[str, Range | Choice] | Callable[[Config], None], ...] = (
    *((name, POSITIVE) for name in ("dim", "depth", "num_heads", "max_len", "batch_size", "seq_len", "steps",
                                    "grad_accum_steps", "log_interval", "eval_interval", "eval_batches", "attn_window",
                                    "prefetch_factor", "max_bad_steps", "ff_mult", "memory_hidden_mult", "lr",
                                    "update_frequencies.mem_write", "update_frequencies.error_update",
                                    "update_frequencies.optimizer_step")),
    ("meta.inner_steps", AT_LEAST_0), ("meta.outer_steps", POSITIVE), ("meta.outer_frequency", POSITIVE),
    ("meta.lr", POSITIVE), ("meta.support_len", POSITIVE), ("meta.query_len", POSITIVE),
    ("meta.split", Range(0, 0.5, lo_open=True, hi_open=True)),
    ("model_type", Choice(MODEL_TYPES, unknown=True)), ("optimizer_type", Choice(OPTIMIZER_TYPES, unknown=True)),
    ("amp_dtype", Choice(AMP_DTYPES)), ("cms", Choice(CMS_KINDS)), ("memory_kind", Choice(MEMORY_KINDS)),
    ("bank_writes", AT_LEAST_1), ("bank_aging", Range(0, 1, lo_open=True)), ("bank_input", Choice(BANK_INPUTS)),
    ("cms_objective", Choice(CMS_OBJECTIVES)),
    _cms_objective_needs_chain,
    _head_shapes,
    ("memory_capacity", AT_LEAST_0),
    _top_k_within_capacity,
    _memory_timescales,
    ("error_decay", FRACTION),
    _schedules,
    ("ema_decay", FRACTION), ("base_momentum", FRACTION), ("dropout", FRACTION), ("recall_fraction", Range(0, 1)),
    ("recall_episodes", AT_LEAST_1),
    ("recall_task", Choice(RECALL_TASKS)), ("loss_on", Choice(LOSS_ON)), ("recall_answers", Choice(RECALL_ANSWERS)),
    _mqar_rows,
    ("stream.bptt_segments", POSITIVE),
    _stream_pieces,
    ("grad_clip_norm", Range(0, note=" (0 disables clipping)")), ("num_workers", AT_LEAST_0),
    _min_lr,
    ("warmup_steps", AT_LEAST_0),
    _device,
    ("distributed", Choice(DISTRIBUTED)),
    _fsdp_refusals,
)


def validate(cfg: Config) -> None:
    """Semantic checks with one-line messages (types were checked while loading): `RULES`, in order."""
    for rule in RULES:
        if callable(rule):
            rule(cfg)
            continue
        name, allowed = rule
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        if allowed.outside(value):
            raise ConfigError(allowed.message(name, value))
