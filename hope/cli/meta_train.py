"""`hope-meta-train`: train HOPE with the meta-learning outer loop and report the adaptation gain.

Run as:
    hope-meta-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --download
    hope-meta-train --config configs/example.yaml --data data/tiny_shakespeare.txt --steps 500 \
        --set meta.outer_frequency=10 --set meta.inner_steps=2 --out_dir reports
    hope-meta-train --config configs/example.yaml --reference init     # skip the meta-off reference run

Trains as `hope-train` does, with `meta.use: true`: every `meta.outer_frequency` steps, `meta.outer_steps`
meta-updates of the memories' initial states, gate biases and inner learning-rate scales, on a meta split held
out of the TRAINING data (the last `meta.split` of it, also excluded from the training batches; not the
validation split: see `hope.train.meta`). Then measures the adaptation gain on validation text for the model
at init, the same config trained with meta off (same steps, seed and batches; `--reference plain`, the
default) and the meta-trained model, and writes `<out_dir>/meta_metrics.json` and `<out_dir>/meta_report.md`.
The checkpoint (default `hope_meta_checkpoint.pt`, so `hope-train`'s `hope_checkpoint.pt` is left alone), its
metrics log (with the `"split": "meta"` rounds) and config are written as by `hope-train`, and listed at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from hope.cli.args import add_samples_arg, config_from_args, download_data, run
from hope.cli.train import build_parser as build_train_parser
from hope.cli.train import print_files

DEFAULT_OUT = "hope_meta_checkpoint.pt"  # not hope-train's hope_checkpoint.pt: the manual's next steps evaluate that


def build_parser():
    parser = build_train_parser("hope-meta-train", default_out=DEFAULT_OUT)
    parser.description = "Train HOPE with the meta-learning outer loop and report the adaptation gain."
    parser.add_argument("--out_dir", default="reports", help="where meta_metrics.json and meta_report.md go")
    parser.add_argument("--reference", choices=["plain", "init"], default="plain",
                        help="'before' model: plain = the same config trained with meta off (an extra training run), "
                             "init = the untrained model only")
    add_samples_arg(parser, 64, "support/query pairs of validation text for the adaptation gain", "--eval_pairs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.experiments.meta import run_meta_experiment
        from hope.train.meta import check_meta_supported

        import dataclasses

        from hope.config import Config

        extra = {"meta": {"use": True}}
        out = args.out or args.resume
        extra.update({k: v for k, v in (("out", out), ("model_type", args.model_type)) if v is not None})
        cfg = config_from_args(args, extra)
        if out is None and cfg.out == Config().out:  # the config did not name one either
            cfg = dataclasses.replace(cfg, out=DEFAULT_OUT)
        check_meta_supported(cfg)  # before any download or training
        cfg = download_data(cfg, args.download)
        command = shlex.join(["hope-meta-train", *(sys.argv[1:] if argv is None else argv)])
        metrics = run_meta_experiment(cfg, out_dir=args.out_dir, reference=args.reference, eval_pairs=args.samples,
                                      command=command, resume=args.resume, overwrite=args.overwrite,
                                      tensorboard=args.tensorboard)
        if int(os.environ.get("RANK", "0")) == 0:
            summary = {name: {k: round(m[k], 6) for k in ("query_loss_init", "query_loss_adapted", "gain")}
                       for name, m in metrics["models"].items()}
            print(json.dumps(summary))
            print(f"saved {metrics['checkpoint']}", file=sys.stderr)
            print_files(metrics["files"][1:])
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
