"""`hope-run-experiment`: train HOPE and a parameter-matched Transformer++ baseline the same way, compare them.

Run as:
    hope-run-experiment --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --amp bf16 \
        --workers 4 --download
    HF_HUB_OFFLINE=1 hope-run-experiment --config configs/example.yaml --data data/tiny_shakespeare.txt
    hope-run-experiment --config configs/example.yaml --steps 200 --hf_model none --out_dir runs/quick

Writes into --out_dir (default reports): metrics.json, experiment_report.md, hope_checkpoint.pt,
baseline_checkpoint.pt, each with its training log (<model>_checkpoint.metrics.jsonl) and resolved config
(<model>_checkpoint.config.yaml), and lists them at the end; it refuses to replace an earlier run's files there
unless --overwrite. The next steps evaluate both checkpoints:
    hope-track-long --ckpt reports/hope_checkpoint.pt,reports/baseline_checkpoint.pt --gaps 256,512,1024,2048
The Hugging Face reference (bits per byte on the validation text) is optional: offline (HF_HUB_OFFLINE=1), without
transformers, or with an unavailable model it is skipped with one line and the rest of the run proceeds.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from hope.cli.args import (add_config_args, add_download_arg, add_overwrite_arg, config_from_args, download_data,
                           new_parser, run)
from hope.experiments.hf import DEFAULT_HF_MODEL


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("hope-run-experiment", "Train and compare HOPE with a parameter-matched baseline.")
    add_config_args(parser)
    add_download_arg(parser)
    parser.add_argument("--out_dir", default="reports", help="where reports and checkpoints go")
    add_overwrite_arg(parser)
    parser.add_argument("--hf_model", default=DEFAULT_HF_MODEL,
                        help=f"Hugging Face model name or local path to score in bits per byte (default {DEFAULT_HF_MODEL}; "
                             "'none' disables)")
    parser.add_argument("--hf_max_tokens", type=int, default=None,
                        help="score at most this many tokens of the validation text with the HF model (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.errors import HopeError
        from hope.experiments.compare import run_experiment

        if args.hf_max_tokens is not None and args.hf_max_tokens <= 0:
            raise HopeError(f"--hf_max_tokens must be > 0, got {args.hf_max_tokens}")
        cfg = download_data(config_from_args(args), args.download)
        run_experiment(cfg, args.out_dir, command=shlex.join(["hope-run-experiment", *argv]),
                       hf_model=args.hf_model, hf_max_tokens=args.hf_max_tokens, overwrite=args.overwrite)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
