"""Seed-paired comparison of per-bin or per-gap CSVs (hope-eval-binned, hope-track-long) as a markdown table.

Run as:
    python scripts/paired_seeds.py --metric loss --ref baseline \\
        HOPE=runs/ld3/hope_s1337.binned.csv,runs/ld3/hope_s1.binned.csv,runs/ld3/hope_s2.binned.csv \\
        baseline=runs/ld3/base_s1337.binned.csv,runs/ld3/base_s1.binned.csv,runs/ld3/base_s2.binned.csv

Each GROUP=CSV[,CSV...] lists one CSV per seed, in the same seed order in every group (the n-th files of two
groups are paired). A CSV holds one checkpoint's rows; the columns of the table are its position bins
(`bin_start`-`bin_end`) or its gaps (`gap`). Per group the table gives the mean over seeds and their standard
deviation; per group other than --ref, the difference from --ref paired by seed, its standard error (the
standard deviation of the paired differences / sqrt(n)), and a verdict: a difference smaller than twice its
standard error is a tie (docs/results.md §10).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def read_metric(path: Path, metric: str) -> dict[str, float]:
    """{column label: value} of one CSV: labels "[a, b)" for position bins, "G" for gaps."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows or metric not in rows[0]:
        raise SystemExit(f"error: {path} has no column {metric!r}")
    if len({r.get("checkpoint") for r in rows}) > 1:
        raise SystemExit(f"error: {path} holds several checkpoints; give one CSV per seed")
    if "bin_start" in rows[0]:
        return {f"[{r['bin_start']}, {r['bin_end']})": float(r[metric]) for r in rows}
    return {r["gap"]: float(r[metric]) for r in rows}


def mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return m, sd


def verdict(diff: float, se: float, lower_is_better: bool, resolution: float) -> str:
    if not math.isfinite(se):
        return "one seed"
    if abs(diff) < 2 * se or abs(diff) < resolution:  # under twice its se, or under the table's last digit
        return "tie"
    return "better" if (diff < 0) == lower_is_better else "worse"


def table(groups: dict[str, list[dict[str, float]]], ref: str, lower_is_better: bool, digits: int = 4) -> str:
    labels = list(next(iter(groups.values()))[0])
    fmt = f"{{:.{digits}f}}"
    lines = ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, runs in groups.items():
        cells = []
        for label in labels:
            m, sd = mean_sd([run[label] for run in runs])
            cells.append(fmt.format(m) + ("" if math.isnan(sd) else " ± " + fmt.format(sd)))
        lines.append(f"| {name} (n = {len(runs)}) | " + " | ".join(cells) + " |")
    for name, runs in groups.items():
        if name == ref:
            continue
        cells = []
        for label in labels:
            diffs = [run[label] - base[label] for run, base in zip(runs, groups[ref])]
            d, sd = mean_sd(diffs)
            se = sd / math.sqrt(len(diffs))
            spread = "" if math.isnan(se) else f" ± {se:.{digits}f}"
            cells.append(f"{d:+.{digits}f}{spread} ({verdict(d, se, lower_is_better, 0.5 * 10 ** -digits)})")
        lines.append(f"| {name} - {ref}, paired (± se) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", metavar="GROUP=CSV[,CSV...]")
    p.add_argument("--metric", default="loss", help="column to compare (loss, copy_gain, control_gain, accuracy)")
    p.add_argument("--ref", default=None, help="the group the others are compared with (default: the last)")
    p.add_argument("--higher_is_better", action="store_true", help="for gains and accuracies")
    args = p.parse_args(argv)
    groups: dict[str, list[dict[str, float]]] = {}
    for spec in args.groups:
        name, sep, paths = spec.partition("=")
        if not sep or not paths:
            print(f"error: expected GROUP=CSV[,CSV...], got {spec!r}", file=sys.stderr)
            return 2
        files = [Path(x) for x in paths.split(",")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
            return 2
        groups[name] = [read_metric(f, args.metric) for f in files]
    ref = args.ref or list(groups)[-1]
    if ref not in groups:
        print(f"error: --ref {ref!r} is not one of the groups ({', '.join(groups)})", file=sys.stderr)
        return 2
    if any(len(runs) > len(groups[ref]) for runs in groups.values()):
        print(f"error: a group has more seeds than {ref} ({len(groups[ref])}) to pair them with", file=sys.stderr)
        return 2
    print(table(groups, ref, lower_is_better=not args.higher_is_better))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
