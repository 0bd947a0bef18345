"""`hope-train`: train HOPE (or the baseline) and save a checkpoint.

Run as:
    hope-train --config configs/example.yaml                       # quick check on the synthetic corpus
    hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device auto --amp bf16
    hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --amp bf16 \
        --steps 10000 --batch_size 32 --workers 4
    torchrun --nproc_per_node=2 -m hope.cli.train --config configs/example.yaml --data data/tiny_shakespeare.txt
    hope-train --config configs/example.yaml --resume hope_checkpoint.pt     # continue exactly where it stopped

Prints the final validation metrics {loss, ppl, accuracy, top5_acc, top10_acc} as JSON; metrics.jsonl (one
record per log interval, validation records, and a final record with train and validation) is written next to
the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from hope.cli.args import add_config_args, config_from_args, run
from hope.runtime import DistInfo

FINAL_KEYS = ("loss", "ppl", "accuracy", "top5_acc", "top10_acc")


def build_parser(prog: str = "hope-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train HOPE or the baseline on a byte corpus.")
    add_config_args(parser)
    parser.add_argument("--out", help="checkpoint path (default hope_checkpoint.pt)")
    parser.add_argument("--resume", help="continue from this checkpoint (exact: step, optimiser, EMA, RNG)")
    parser.add_argument("--model_type", choices=["hope", "baseline"], help="override model_type")
    parser.add_argument("--download", action="store_true", help="fetch tiny shakespeare to --data if it is missing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.train.loop import train

        extra = {k: v for k, v in (("out", args.out), ("model_type", args.model_type)) if v is not None}
        cfg = config_from_args(args, extra)
        if args.download and cfg.data:
            from hope.data.download import ensure_data

            ensure_data(cfg.data)
        result = train(cfg, resume=args.resume)
        if DistInfo().is_main and int(__import__("os").environ.get("RANK", "0")) == 0:
            print(json.dumps({k: round(result.val[k], 6) for k in FINAL_KEYS if k in result.val}))
            print(f"saved {result.checkpoint}", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
