"""`hope-plot-reports`: draw the report figures from the files the other commands wrote.

Run as:
    hope-plot-reports --recall_csv reports/long_context.csv --binned_csv reports/binned_ppl.csv \
        --metrics_json reports/metrics.json --out_dir reports
    hope-plot-reports --continual_json reports/continual_metrics.json --out_dir reports

Writes recall_curve.png, binned_ppl.png, compare_metrics.png (and forgetting_heatmap.png with --continual_json)
for the inputs given, and prints each PNG path.
"""

from __future__ import annotations

import argparse
import sys

from hope.cli.args import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hope-plot-reports", description="Draw the report figures.")
    parser.add_argument("--recall_csv", help="long-context CSV of hope-track-long -> recall_curve.png")
    parser.add_argument("--binned_csv", help="binned-perplexity CSV of hope-eval-binned -> binned_ppl.png")
    parser.add_argument("--metrics_json", help="metrics.json of hope-run-experiment -> compare_metrics.png")
    parser.add_argument("--continual_json", help="continual_metrics.json of hope-continual -> forgetting_heatmap.png")
    parser.add_argument("--out_dir", default="reports", help="where the PNGs go (default reports)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.errors import HopeError
        from hope.report.plots import plot_reports

        if not any((args.recall_csv, args.binned_csv, args.metrics_json, args.continual_json)):
            raise HopeError("nothing to plot: pass --recall_csv, --binned_csv, --metrics_json and/or --continual_json")
        try:
            paths = plot_reports(args.recall_csv, args.binned_csv, args.metrics_json, args.continual_json,
                                 args.out_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise HopeError(" ".join(str(exc).split())) from None
        for path in paths:
            print(path)
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
