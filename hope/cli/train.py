"""`hope-train`: train HOPE (or the baseline) and save a checkpoint.

Run as:
    hope-train --config configs/example.yaml                       # quick check on the synthetic corpus
    hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device auto --amp bf16
    hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --amp bf16 \
        --steps 10000 --batch_size 32 --workers 4
    torchrun --standalone --nproc_per_node=2 -m hope.cli.train --config configs/example.yaml --data data/tiny_shakespeare.txt
    hope-train --resume hope_checkpoint.pt                           # continue exactly where it stopped

Prints the final validation metrics {loss, ppl, accuracy, top5_acc, top10_acc} as JSON (rank 0 only);
metrics.jsonl (one record per log interval, validation records, and a final record with train and validation) is
written next to the checkpoint. `--resume` without `--config` continues with the checkpoint's own config (flags
still override it, e.g. `--steps` to train longer). SIGINT/SIGTERM save a resumable checkpoint and exit with
128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import sys

from hope.cli.args import add_config_args, overrides_from_args, run

FINAL_KEYS = ("loss", "ppl", "accuracy", "top5_acc", "top10_acc")


def build_parser(prog: str = "hope-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train HOPE or the baseline on a byte corpus.")
    add_config_args(parser)
    parser.add_argument("--out", help="checkpoint path (default hope_checkpoint.pt); metrics.jsonl goes beside it")
    parser.add_argument("--resume", help="continue from this checkpoint (exact: step, optimiser, EMA, RNG)")
    parser.add_argument("--model_type", choices=["hope", "baseline"], help="override model_type")
    parser.add_argument("--download", action="store_true", help="fetch tiny shakespeare to --data if it is missing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.config import load_config
        from hope.train.loop import TrainingInterrupted, train

        extra = {k: v for k, v in (("out", args.out), ("model_type", args.model_type)) if v is not None}
        base: list[dict] = []
        if args.resume and not args.config:  # defaults < the checkpoint's config < flags
            from hope.checkpoint import load_checkpoint

            base = [load_checkpoint(args.resume)["config"]]
        cfg = load_config(args.config, base + ([extra] if extra else []) + overrides_from_args(args))
        if args.download and cfg.data:
            from hope.data.download import ensure_data

            ensure_data(cfg.data)
        try:
            result = train(cfg, resume=args.resume)
        except TrainingInterrupted as exc:
            print(str(exc), file=sys.stderr)
            return 128 + exc.signum
        if result.dist.is_main:
            print(json.dumps({k: round(result.val[k], 6) for k in FINAL_KEYS if k in result.val}))
            print(f"saved {result.checkpoint}", file=sys.stderr)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
