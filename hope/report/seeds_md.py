"""The seeds table: one row per model or variant, mean ± sample std over its runs (``scripts/summarize_seeds.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hope.report.markdown import fmt_number, md_table
from hope.report.stats import mean_spread


# (column, key in the final record's "val", number format) of the seeds table.
_SEED_COLUMNS = (
    ("val loss", "loss", "{:.4f}"),
    ("val bpb", "bpb", "{:.4f}"),
    ("top-1", "accuracy", "pct"),
    ("top-5", "top5_acc", "pct"),
    ("top-10", "top10_acc", "pct"),
)


def seeds_table_md(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """A markdown table, one row per group (a model or variant), of mean ± sample std over the group's runs.

    Each run is the final validation record of a ``hope-train`` metrics log
    (``{"split": "val", "final": true, "loss": ..., "tokens_per_s": ...}``; an older log's nested
    ``{"final": true, "val": {...}, "tokens_per_s": ...}`` works too). Spread is the sample standard deviation
    across seeds, so with 3 seeds a difference of about 2 spreads is the least worth reading.
    """
    header = ["model", "seeds"] + [c[0] for c in _SEED_COLUMNS] + ["train tokens/s"]
    rows = []
    for name, runs in groups.items():
        if not runs:
            raise ValueError(f"group {name!r} has no runs")
        cells = [name, str(len(runs))]
        for _, key, fmt in _SEED_COLUMNS:
            mean, std = mean_spread([(run["val"] if isinstance(run.get("val"), Mapping) else run)[key]
                                     for run in runs])
            cells.append(f"{fmt_number(mean, fmt)} ± {fmt_number(std, fmt)}")
        mean, std = mean_spread([run["tokens_per_s"] for run in runs])
        cells.append(f"{mean:.0f} ± {std:.0f}")
        rows.append(cells)
    return "\n".join(md_table(header, rows)) + "\n"
