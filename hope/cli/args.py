"""Command-line plumbing shared by every console command: config flags and the error boundary.

The flags map onto config keys (one name per concept): `--steps` is `steps`, `--workers` is `num_workers`,
`--amp bf16` is `amp: true, amp_dtype: bf16`, and `--set a.b=value` reaches any key. Names shared by the commands:
`--ckpt` a checkpoint read, `--out` the file a command writes (checkpoint, CSV, data file), `--out_dir` the folder
of a command's reports, `--samples` how many evaluation samples (windows, episodes, support/query pairs) to
average over (older spellings `--max_windows`, `--windows`, `--trials`, `--eval_pairs` still work), `--amp` one of
AMP_CHOICES everywhere, `--overwrite` to replace another run's outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable

from hope.config import Config, ConfigError, load_config, parse_set
from hope.errors import HopeError

DOWNLOAD_DATA = "data/tiny_shakespeare.txt"  # where --download puts tiny shakespeare when the run names no data file
AMP_CHOICES = ("bf16", "fp16", "off")  # also accepted: on/true/1/yes (amp on, the config's dtype), fp32/false/0/no
_AMP_ON, _AMP_OFF = ("on", "true", "1", "yes"), ("off", "false", "0", "no", "fp32")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default in --help, except where there is none to show (None, a False switch) or the
    help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default == [] or (
            action.default == argparse.SUPPRESS)
        if "default" in text or nothing:
            return text
        return super()._get_help_string(action)


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser of a hope command: defaults shown in --help."""
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def parse_amp(value: str) -> dict[str, Any]:
    """`--amp` in every command -> config keys: bf16/fp16 -> {amp: true, amp_dtype}, on -> {amp: true},
    off -> {amp: false}; anything else is a one-line ConfigError."""
    choice = str(value).lower()
    if choice in ("bf16", "fp16"):
        return {"amp": True, "amp_dtype": choice}
    if choice in _AMP_ON:
        return {"amp": True}
    if choice in _AMP_OFF:
        return {"amp": False}
    raise ConfigError(f"--amp must be bf16, fp16 or off, got '{value}'")


def add_samples_arg(parser: argparse.ArgumentParser, default: int, what: str, alias: str) -> None:
    """`--samples N` (with the command's older spelling as an alias), dest `samples`."""
    parser.add_argument("--samples", alias, dest="samples", type=int, default=default,
                        help=f"{what} to average over (alias {alias})")


def add_long_task_args(parser: argparse.ArgumentParser) -> None:
    """The task flags hope-eval-long and hope-track-long share (--task, --pairs, --passage, --lead, --control,
    --answers)."""
    parser.add_argument("--task", choices=("episodes", "mqar", "copy"), default="episodes",
                        help="episodes: one key/value episode (recall_prob); mqar: multi-query key lookup (accuracy); "
                             "copy: a passage, the gap, the passage again (copy_gain)")
    parser.add_argument("--pairs", type=int, default=8, help="--task mqar: key/value pairs per row (1-64)")
    parser.add_argument("--passage", type=int, default=256, help="--task copy: bytes per passage (>= 2)")
    parser.add_argument("--lead", type=int, default=1024,
                        help="--task copy: bytes of other text before the first occurrence (the gap's last bytes)")
    parser.add_argument("--control", action="store_true",
                        help="--task copy: also read each row with another passage first (loss_control, "
                             "control_gain: the gain net of any drift along the stream; twice the compute)")
    parser.add_argument("--answers", choices=("shown", "hidden"), default="shown",
                        help="--task mqar: the query half shows each answer after it is scored, or filler in its "
                             "place (Zoology's format, config recall_answers: hidden)")


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that another run wrote (without it the command refuses)")


def add_eval_amp_arg(parser: argparse.ArgumentParser) -> None:
    """`--amp` of the commands that read a checkpoint (no config to take it from): fp32 unless asked."""
    parser.add_argument("--amp", default="off", metavar="{bf16,fp16,off}", help="autocast for evaluation")


def eval_amp(value: str) -> tuple[bool, str]:
    """That `--amp` -> (amp, amp_dtype) as the evaluation functions take them; `on` is bf16."""
    amp = {"amp_dtype": "bf16", **parse_amp(value)}
    return amp["amp"], amp["amp_dtype"]


def add_download_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download", action="store_true",
                        help="fetch tiny shakespeare to the run's data file if it is missing (with no --data and "
                             f"no data in the config: to {DOWNLOAD_DATA}, which the run then trains on)")


def download_data(cfg: Config, download: bool) -> Config:
    """`--download`: fetch tiny shakespeare to `cfg.data` unless the file is there; a run that names no data
    trains on DOWNLOAD_DATA (not silently on the synthetic corpus). Returns the config with that data."""
    if not download:
        return cfg
    from hope.data.download import ensure_data

    if not cfg.data:
        cfg = dataclasses.replace(cfg, data=DOWNLOAD_DATA)
    if "," in cfg.data:
        raise HopeError(f"--download fetches one file; --data lists several ({cfg.data}): drop --download")
    ensure_data(cfg.data)
    return cfg


def add_config_args(parser: argparse.ArgumentParser, *, training: bool = True, steps: bool = True) -> None:
    """The config flags of the manual; later flags win over the --config file. `steps=False`: the command
    counts its steps another way (hope-continual: --steps_per_stage)."""
    parser.add_argument("--config", help="YAML config file (see configs/example.yaml); defaults apply without it")
    parser.add_argument("--data", help="training/evaluation text or binary file; omit for the synthetic quick-check corpus")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N; auto picks CUDA when available (config "
                                         "default auto)")
    parser.add_argument("--amp", metavar="{bf16,fp16,off}",
                        help="mixed precision (default: the config's amp/amp_dtype; fp32 on CPU unless asked)")
    defaults = Config()
    parser.add_argument("--seed", type=int, help=f"random seed (config default {defaults.seed})")
    parser.add_argument("--seq_len", type=int, help=f"bytes per training segment, <= max_len (config default "
                                                    f"{defaults.seq_len})")
    parser.add_argument("--batch_size", type=int, help=f"sequences per micro-batch (config default "
                                                       f"{defaults.batch_size})")
    if training and steps:
        parser.add_argument("--steps", type=int, help=f"optimiser steps (config default {defaults.steps})")
    if training:
        parser.add_argument("--lr", type=float, help=f"peak learning rate (config default {defaults.lr})")
        parser.add_argument("--workers", type=int, help=f"DataLoader worker processes, num_workers (config "
                                                        f"default {defaults.num_workers})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set update_frequencies.mem_write=8 (repeatable)")


def overrides_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    flat: dict[str, Any] = {}
    for flag, key in (("data", "data"), ("device", "device"), ("seed", "seed"), ("seq_len", "seq_len"),
                      ("batch_size", "batch_size"), ("steps", "steps"), ("lr", "lr"), ("workers", "num_workers")):
        value = getattr(args, flag, None)
        if value is not None:
            flat[key] = value
    amp = getattr(args, "amp", None)
    if amp is not None:
        flat.update(parse_amp(amp))
    overrides = [flat] if flat else []
    overrides += [parse_set(item) for item in getattr(args, "set", []) or []]
    return overrides


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """defaults < --config < extra (command-specific) < flags."""
    overrides = ([extra] if extra else []) + overrides_from_args(args)
    return load_config(getattr(args, "config", None), overrides)


def run(main: Callable[[], int]) -> int:
    """The error boundary: a HopeError becomes one line on stderr and exit status 2 (no traceback)."""
    try:
        return main()
    except HopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
