"""What the markdown reports share: number formatting, tables and model labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def model_label(name: str) -> str:
    return {"hope": "HOPE", "baseline": "Baseline"}.get(name, name)


def fmt_number(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if fmt == "pct":
        return f"{100.0 * value:.2f}%"
    return fmt.format(value)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines
