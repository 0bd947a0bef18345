"""Mean ± spread over seeds of hope-train runs, as the markdown tables of docs/results.md.

Run as:
    python scripts/summarize_seeds.py HOPE=runs/hope_s0,runs/hope_s1,runs/hope_s2 baseline=runs/base_s0,...

Each GROUP=DIR[,DIR...] names the run directories (each holds the one <stem>.metrics.jsonl that hope-train writes next to
its checkpoint); the table has one row per group, in the order given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hope.errors import HopeError
from hope.report.writers import seeds_table_md
from hope.runs import find_metrics_log, read_metrics


def final_record(run_dir: Path) -> dict:
    try:
        path = find_metrics_log(run_dir)
    except HopeError as exc:
        raise SystemExit(f"error: {exc} (is {run_dir} a finished hope-train run?)") from None
    finals = [r for r in read_metrics(path) if r.get("final") and r.get("split") == "val"]
    if not finals:
        raise SystemExit(f"error: {path} has no final record: the run did not finish")
    return finals[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", metavar="GROUP=DIR[,DIR...]")
    args = parser.parse_args()
    groups = {}
    for spec in args.groups:
        name, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            raise SystemExit(f"error: expected GROUP=DIR[,DIR...], got {spec!r}")
        groups[name] = [final_record(Path(d)) for d in dirs.split(",")]
    sys.stdout.write(seeds_table_md(groups))


if __name__ == "__main__":
    main()
