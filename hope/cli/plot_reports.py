"""`hope-plot-reports`: draw the report figures from the files the other commands wrote.

Run as:
    hope-plot-reports --recall_csv reports/long_context.csv --binned_csv reports/binned_ppl.csv \
        --metrics_json reports/metrics.json --out_dir reports
    hope-plot-reports --continual_json reports/continual_metrics.json --out_dir reports
    hope-plot-reports --metrics_jsonl reports/hope_checkpoint.pt reports/baseline_checkpoint.pt --out_dir reports

Writes recall_curve.png, binned_ppl.png, compare_metrics.png (and forgetting_heatmap.png with --continual_json,
loss_curves.png with --metrics_jsonl: train and validation loss against step, one colour per run) for the inputs
given, and prints each PNG path.
"""

from __future__ import annotations

import argparse
import sys

from hope.cli.args import new_parser, run


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("hope-plot-reports", "Draw the report figures.")
    parser.add_argument("--recall_csv",
                        help="long-context CSV of hope-track-long: episodes or --task mqar -> recall_curve.png; "
                             "--task copy -> copy_gain.png")
    parser.add_argument("--binned_csv", help="binned-perplexity CSV of hope-eval-binned -> binned_ppl.png")
    parser.add_argument("--metrics_json", help="metrics.json of hope-run-experiment -> compare_metrics.png")
    parser.add_argument("--continual_json", help="continual_metrics.json of hope-continual -> forgetting_heatmap.png")
    parser.add_argument("--metrics_jsonl", nargs="+", metavar="RUN",
                        help="training runs -> loss_curves.png; each RUN is a metrics log, its checkpoint or its folder")
    parser.add_argument("--out_dir", default="reports", help="where the PNGs go")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.errors import HopeError
        from hope.report.plots import plot_reports

        if not any((args.recall_csv, args.binned_csv, args.metrics_json, args.continual_json, args.metrics_jsonl)):
            raise HopeError("nothing to plot: pass --recall_csv, --binned_csv, --metrics_json, --continual_json "
                            "and/or --metrics_jsonl")
        try:
            paths = plot_reports(args.recall_csv, args.binned_csv, args.metrics_json, args.continual_json,
                                 args.out_dir, metrics_jsonl=args.metrics_jsonl)
        except (FileNotFoundError, ValueError) as exc:
            raise HopeError(" ".join(str(exc).split())) from None
        for path in paths:
            print(path)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
