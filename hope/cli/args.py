"""Command-line plumbing shared by every console command: config flags and the error boundary.

The flags map onto config keys (one name per concept): `--steps` is `steps`, `--workers` is `num_workers`,
`--amp bf16` is `amp: true, amp_dtype: bf16`, and `--set a.b=value` reaches any key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from hope.config import Config, ConfigError, load_config, parse_set
from hope.errors import HopeError


def add_config_args(parser: argparse.ArgumentParser, *, training: bool = True) -> None:
    """The config flags of the manual; later flags win over the --config file."""
    parser.add_argument("--config", help="YAML config file (see configs/example.yaml); defaults apply without it")
    parser.add_argument("--data", help="training/evaluation text or binary file; omit for the synthetic quick-check corpus")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (auto picks CUDA when available)")
    parser.add_argument("--amp", help="mixed precision: bf16 | fp16 | off (fp32 on CPU unless asked)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--seq_len", type=int, help="bytes per training segment (<= max_len)")
    parser.add_argument("--batch_size", type=int, help="sequences per micro-batch")
    if training:
        parser.add_argument("--steps", type=int, help="optimiser steps")
        parser.add_argument("--lr", type=float, help="peak learning rate")
        parser.add_argument("--workers", type=int, help="DataLoader worker processes (num_workers)")
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
        choice = str(amp).lower()
        if choice in ("bf16", "fp16"):
            flat.update(amp=True, amp_dtype=choice)
        elif choice in ("on", "true", "1", "yes"):
            flat["amp"] = True
        elif choice in ("off", "false", "0", "no", "fp32"):
            flat["amp"] = False
        else:
            raise ConfigError(f"--amp must be bf16, fp16 or off, got '{amp}'")
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
