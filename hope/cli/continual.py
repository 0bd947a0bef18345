"""`hope-continual`: sequential training A -> B -> C for HOPE and its matched baseline; how much each forgets.

Run as:
    hope-continual --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --steps_per_stage 1000
    hope-continual --config configs/example.yaml --data a.txt,b.txt,c.txt --steps_per_stage 500 --out_dir reports

Domains are the three contiguous thirds of --data, or one file each when --data lists several comma-separated
paths. After each stage both models are evaluated on every domain's validation split. Writes
<out_dir>/continual_metrics.json (3x3 loss matrix, average forgetting, backward transfer per model) and
<out_dir>/continual_report.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from hope.cli.args import add_config_args, add_overwrite_arg, config_from_args, new_parser, run


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("hope-continual", "Continual learning A->B->C and forgetting, HOPE vs baseline.")
    add_config_args(parser, steps=False)
    parser.add_argument("--steps_per_stage", type=int, required=True, help="optimiser steps on each domain")
    # Not in --help: each stage trains --steps_per_stage steps; a stray --steps (also the prefix argparse would
    # otherwise complete to --steps_per_stage) gets an error saying so instead of being ignored.
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out_dir", default="reports", help="where the JSON and markdown reports go")
    add_overwrite_arg(parser)
    parser.add_argument("--verbose", action="store_true", help="print the training log of every stage")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.errors import HopeError
        from hope.experiments.continual import run_continual

        if args.steps is not None:
            raise HopeError("hope-continual trains --steps_per_stage steps on each domain in turn; it has no --steps "
                            f"(did you mean --steps_per_stage {args.steps}?)")
        cfg = config_from_args(args)
        run_continual(cfg, args.steps_per_stage, args.out_dir, command=shlex.join(["hope-continual", *argv]),
                      verbose=args.verbose, overwrite=args.overwrite)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
