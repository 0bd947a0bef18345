"""`hope-train`: train HOPE (or the baseline) and save a checkpoint.

Run as:
    hope-train --config configs/example.yaml                       # quick check on the synthetic corpus
    hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device auto --amp bf16
    hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --amp bf16 \
        --steps 10000 --batch_size 32 --workers 4
    torchrun --standalone --nproc_per_node=2 -m hope.cli.train --config configs/example.yaml --data data/tiny_shakespeare.txt
    hope-train --resume hope_checkpoint.pt                           # continue exactly where it stopped
    hope-train --config configs/example.yaml --out runs/a.pt --tensorboard runs/tb   # also log to TensorBoard

Prints the final validation metrics {loss, ppl, accuracy, top5_acc, top10_acc} as JSON (rank 0 only), then
the files it wrote: the checkpoint (--out, default hope_checkpoint.pt), its metrics log `<stem>.metrics.jsonl`
(schema: `hope.runs.METRICS_SCHEMA`) and its resolved config `<stem>.config.yaml`, side by side. It refuses to
replace another run's files unless `--overwrite`. `--resume` without `--config` continues with the checkpoint's
own config (flags still override it, e.g. `--steps` to train longer) and writes back to the resumed checkpoint
unless `--out` says otherwise. SIGINT/SIGTERM save a resumable checkpoint and exit with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import sys

from hope.cli.args import (add_config_args, add_download_arg, add_overwrite_arg, download_data, new_parser,
                           overrides_from_args, run)

FINAL_KEYS = ("loss", "ppl", "accuracy", "top5_acc", "top10_acc")


def build_parser(prog: str = "hope-train", default_out: str = "hope_checkpoint.pt") -> argparse.ArgumentParser:
    parser = new_parser(prog, "Train HOPE or the baseline on a byte corpus.")
    add_config_args(parser)
    parser.add_argument("--out", help=f"checkpoint to write (default: the config's out, else {default_out}); "
                                      "<stem>.metrics.jsonl and <stem>.config.yaml go beside it")
    parser.add_argument("--resume", help="continue from this checkpoint (exact: step, optimiser, EMA, RNG)")
    parser.add_argument("--model_type", choices=["hope", "baseline"], help="override model_type (default: the "
                                                                           "config's, hope)")
    add_download_arg(parser)
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="also log the metrics to TensorBoard event files in DIR (needs the tensorboard package)")
    add_overwrite_arg(parser)
    return parser


def print_files(files: list, stream=None) -> None:
    """The last lines of a training-type command: every file it wrote, one per line."""
    for path in files:
        print(f"wrote {path}", file=stream or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.config import load_config
        from hope.train.loop import TrainingInterrupted, train

        out = args.out or args.resume  # a resumed run writes back to its checkpoint unless told otherwise
        extra = {k: v for k, v in (("out", out), ("model_type", args.model_type)) if v is not None}
        base: list[dict] = []
        if args.resume and not args.config:  # defaults < the checkpoint's config < flags
            from hope.checkpoint import load_checkpoint, stored_config

            base = [stored_config(load_checkpoint(args.resume), args.resume)]
        cfg = load_config(args.config, base + ([extra] if extra else []) + overrides_from_args(args))
        if args.tensorboard:
            from hope.runs import require_tensorboard

            require_tensorboard()
        cfg = download_data(cfg, args.download)
        try:
            result = train(cfg, resume=args.resume, overwrite=args.overwrite, tensorboard=args.tensorboard)
        except TrainingInterrupted as exc:
            print(str(exc), file=sys.stderr)
            return 128 + exc.signum
        if result.dist.is_main:
            print(json.dumps({k: round(result.val[k], 6) for k in FINAL_KEYS if k in result.val}))
            print(f"saved {result.checkpoint}", file=sys.stderr)
            print_files(result.files[1:])
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
