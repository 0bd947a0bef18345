"""Figures of the reports: long-context recall, perplexity by position bin, HOPE vs baseline, forgetting,
training curves.

Each ``plot_*`` function reads one report file written by another command (formats below), draws one PNG and
saves it atomically. ``plot_reports`` draws whichever of them it is given; it is what ``hope-plot-reports``
calls.

- ``long_context.csv``: ``gap,recall_prob,chance,trials,model_type,checkpoint`` (one row per model and gap;
  optional ``step,data``), or the MQAR form of ``hope-track-long --task mqar``:
  ``gap,accuracy,value_prob,chance,repeat,pairs,trials,model_type,checkpoint`` (optional ``step,data,elimination``)
- the copy form of ``hope-track-long --task copy`` (repeated-text recall), drawn as ``copy_gain.png``:
  ``gap,copy_gain,loss_first,loss_second,samples,passage,model_type,checkpoint`` (optional
  ``copy_gain_se,control_gain,control_gain_se,lead,reach,step,data``)
- ``binned_ppl.csv``: ``bin_start,bin_end,loss,ppl,tokens,model_type,checkpoint`` (bin_end exclusive; optional
  ``step,data,max_len,attn_window``)
- ``metrics.json``: ``{"models": {name: {"params", "train": {...}, "val": {...}}}, "hf": ...}``
- ``continual_metrics.json``: ``{"domains": [...], "models": {name: {"loss_matrix", ...}}}``
- ``<run>.metrics.jsonl``: a training run's metrics log (``hope.runs``), one or more runs

Every figure carries a caption naming the checkpoint(s), data and step(s) its inputs record.

Figures are built on a bare ``matplotlib.figure.Figure`` with the Agg canvas instead of through ``pyplot``:
no display is ever needed (headless servers), and no global pyplot state or backend is changed in the
caller's process (a notebook keeps its own backend, and no figure leaks if drawing fails).
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

from hope.report.writers import atomic_open, compute_forgetting
from hope.runs import find_metrics_log, read_metrics

__all__ = [
    "DPI",
    "RECALL_FIGSIZE",
    "BINNED_FIGSIZE",
    "COMPARE_FIGSIZE",
    "heatmap_figsize",
    "plot_recall_curve",
    "plot_copy_gain",
    "plot_binned_ppl",
    "plot_compare_metrics",
    "plot_forgetting_heatmap",
    "plot_loss_curves",
    "plot_reports",
]

PathLike = Union[str, "os.PathLike[str]"]  # a runtime alias: no `|` so it also imports on Python 3.8/3.9

DPI = 120
# Fixed figure sizes in inches (saved without bbox cropping, so the PNG is exactly size * DPI pixels).
RECALL_FIGSIZE = (8.0, 5.0)
BINNED_FIGSIZE = (8.0, 5.0)
COMPARE_FIGSIZE = (14.0, 5.2)
CURVES_FIGSIZE = (9.0, 5.5)

RECALL_COLUMNS = ("gap", "recall_prob", "chance", "trials", "model_type", "checkpoint")
MQAR_COLUMNS = ("gap", "accuracy", "value_prob", "chance", "repeat", "pairs", "trials", "model_type", "checkpoint")
BINNED_COLUMNS = ("bin_start", "bin_end", "loss", "ppl", "tokens", "model_type", "checkpoint")
COPY_COLUMNS = ("gap", "copy_gain", "loss_first", "loss_second", "samples", "passage", "model_type", "checkpoint")
COPY_OPTIONAL = {"copy_gain_se": float, "control_gain": float, "control_gain_se": float, "lead": float,
                 "reach": float}
COPY_FIGSIZE = (8.0, 5.0)

# Okabe-Ito colours (distinguishable with colour-blindness): HOPE and the baseline keep theirs in every figure.
_MODEL_COLORS = {"hope": "#D55E00", "baseline": "#0072B2"}
_OTHER_COLORS = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def heatmap_figsize(n_models: int) -> tuple[float, float]:
    """Figure size of the forgetting heatmap: one square-ish panel per model plus the colour bar."""
    return (4.4 * n_models + 1.4, 5.6)


# --------------------------------------------------------------------------------------------------
# reading inputs
# --------------------------------------------------------------------------------------------------


def _require_file(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p} (run the command that writes it first)")
    if p.stat().st_size == 0:
        raise ValueError(f"{what} is empty: {p}")
    return p


_OPTIONAL_COLUMNS = {"step": float, "data": str, "max_len": float, "attn_window": float, "elimination": float}


def _read_csv(path: PathLike, columns: Sequence[str], what: str,
              optional: Mapping[str, type] | None = None) -> list[dict[str, Any]]:
    """Rows of a report CSV with numeric columns converted to float; clear errors name the file. The optional
    columns (step, data, max_len, attn_window, elimination, and those of `optional`) are read when present (None
    when empty or absent)."""
    p = _require_file(path, what)
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{what} {p} lacks column(s) {missing}; header is {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{what} {p} has a header but no data rows")
    text_columns = {"model_type", "checkpoint"}
    parsed = []
    for line_no, row in enumerate(rows, start=2):
        out: dict[str, Any] = {}
        for c in columns:
            if c in text_columns:
                out[c] = (row[c] or "").strip()
                continue
            try:
                out[c] = float(row[c])
            except (TypeError, ValueError):
                raise ValueError(f"{what} {p}, line {line_no}: column {c!r} is not a number: {row[c]!r}") from None
        for c, kind in {**_OPTIONAL_COLUMNS, **(optional or {})}.items():
            value = (row.get(c) or "").strip()
            try:
                out[c] = kind(value) if value else None
            except ValueError:
                out[c] = None
        parsed.append(out)
    return parsed


def _read_json(path: PathLike, what: str) -> dict[str, Any]:
    p = _require_file(path, what)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {p} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not data.get("models"):
        raise ValueError(f"{what} {p} has no 'models' entry with results")
    return data


# --------------------------------------------------------------------------------------------------
# shared drawing helpers
# --------------------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]) -> Figure:
    # Constrained layout (the successor of tight_layout) also makes room for figure legends and colour bars.
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _caption(fig: Figure, parts: Sequence[str]) -> None:
    """What the figure shows, under it: checkpoint(s), data, step(s); wrapped to the figure's width."""
    text = "; ".join(p for p in parts if p)
    if text:
        width = int(fig.get_figwidth() * 15)
        fig.supxlabel(textwrap.fill(text, width), fontsize=8, color="0.3")


def _rows_caption(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Caption parts from report rows: each checkpoint with its step, and the data."""
    ckpts: dict[str, Any] = {}
    for r in rows:
        ckpts.setdefault(r.get("checkpoint") or "?", r.get("step"))
    named = [f"{c} (step {int(s)})" if isinstance(s, float) and math.isfinite(s) else c for c, s in ckpts.items()]
    data = sorted({str(r["data"]) for r in rows if r.get("data")})
    return ["checkpoints: " + ", ".join(named), ("data: " + ", ".join(data)) if data else ""]


def _save(fig: Figure, out_png: PathLike) -> Path:
    out = Path(out_png)
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return out


def _model_order(names: Sequence[str]) -> list[str]:
    """HOPE first, then the baseline, then anything else alphabetically: the same order in every figure."""
    return sorted(set(names), key=lambda n: ({"hope": 0, "baseline": 1}.get(n, 2), n))


def _display_name(model_type: str) -> str:
    return {"hope": "HOPE", "baseline": "Baseline"}.get(model_type, model_type)


def _base_color(model_type: str, others: list[str]) -> str:
    if model_type in _MODEL_COLORS:
        return _MODEL_COLORS[model_type]
    if model_type not in others:
        others.append(model_type)
    return _OTHER_COLORS[others.index(model_type) % len(_OTHER_COLORS)]


def _lighten(color: str, amount: float) -> tuple[float, float, float]:
    r, g, b = mcolors.to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _series(rows: list[dict[str, Any]]) -> list[tuple[str, tuple[float, float, float], str, list[dict[str, Any]]]]:
    """Group rows into one series per (model_type, checkpoint): ``(label, colour, marker, rows)``.

    The checkpoint is named in the label only when one model type has several checkpoints; those share the
    type's colour in lighter shades so the type stays recognisable.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["model_type"], r["checkpoint"])].append(r)
    others: list[str] = []
    out = []
    for model_type in _model_order([k[0] for k in groups]):
        ckpts = sorted(c for (t, c) in groups if t == model_type)
        short = [Path(c).name or c for c in ckpts]
        # Fall back to the full path when two checkpoints share a file name (e.g. runs/a/x.pt, runs/b/x.pt).
        names = short if len(set(short)) == len(short) else ckpts
        base = _base_color(model_type, others)
        for c_i, (ckpt, name) in enumerate(zip(ckpts, names)):
            label = _display_name(model_type) if len(ckpts) == 1 else f"{_display_name(model_type)} ({name})"
            shade = _lighten(base, 0.55 * c_i / max(1, len(ckpts) - 1)) if len(ckpts) > 1 else mcolors.to_rgb(base)
            marker = _MARKERS[len(out) % len(_MARKERS)]  # every series its own marker, also in greyscale prints
            out.append((label, shade, marker, groups[(model_type, ckpt)]))
    return out


def _label_bars(ax: Axes, bars: Any, values: Sequence[float], fmt: str, fontsize: float) -> None:
    labels = [fmt.format(v) if math.isfinite(v) else "" for v in values]
    ax.bar_label(bars, labels=labels, padding=2, fontsize=fontsize)


# --------------------------------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------------------------------


def _csv_header(path: PathLike, what: str) -> list[str]:
    with _require_file(path, what).open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _gap_axis(ax: Axes, gaps: Sequence[float]) -> None:
    """Gaps on a log2 x-axis with a tick at each; with a gap of 0 the axis is symlog (linear below 1 byte), since
    a log axis has no 0."""
    if gaps[0] <= 0:
        ax.set_xscale("symlog", base=2, linthresh=1, linscale=0.5)
    else:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(gaps))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{int(g)}" if float(g).is_integer() else f"{g:g}" for g in gaps])
    lo, hi = gaps[0], gaps[-1]
    ax.set_xlim(-0.5 if lo <= 0 else lo / 2 ** 0.4, max(hi, 1) * 2 ** 0.4)  # a margin of 0.4 octave on each side


def plot_recall_curve(csv_path: PathLike, out_png: PathLike) -> Path:
    """Recall vs gap (log2 x-axis, log y-axis), one line per model/checkpoint, with chance and the
    repeat-the-last-value level (1/P for P pairs per row) drawn, and for MQAR the eliminate-answered level H_P/P
    when the CSV has its column.

    Episode CSVs plot recall_prob (one pair per episode, so the repeat level is 1); MQAR CSVs (``hope-track-long
    --task mqar``, recognised by their ``accuracy`` column) plot the lookup accuracy, with the repeat level 1/P of
    every P they hold (one series per P when there are several). The y-axis is logarithmic so that sub-chance
    values, both models at chance and the error bands stay apart. The shaded band is +-1 binomial standard error,
    sqrt(p (1 - p) / trials) over the trials (rows), so a difference between two curves smaller than the bands is
    not evidence of anything.
    """
    is_mqar = "accuracy" in _csv_header(csv_path, "long-context CSV")
    rows = _read_csv(csv_path, MQAR_COLUMNS if is_mqar else RECALL_COLUMNS, "long-context CSV")
    key = "accuracy" if is_mqar else "recall_prob"
    all_pairs = sorted({int(r["pairs"]) for r in rows}) if is_mqar else [1]
    positive = [v for r in rows for v in (r[key], r["chance"]) if v > 0]
    floor = min(positive) / 10 if positive else 1e-6  # zero recall sits on the floor, not at -infinity
    fig = _new_figure(RECALL_FIGSIZE)
    ax = fig.add_subplot()
    for label, color, marker, group in _series(rows):
        by_pairs = [(p, [r for r in group if int(r["pairs"]) == p]) for p in all_pairs] if is_mqar else [(1, group)]
        for p_i, (pairs, series) in enumerate(by_pairs):
            if not series:
                continue
            series = sorted(series, key=lambda r: r["gap"])
            name = f"{label}, P = {pairs}" if len(all_pairs) > 1 else label
            shade = _lighten(mcolors.to_hex(color), 0.5 * p_i / max(1, len(all_pairs) - 1))
            gaps = np.array([r["gap"] for r in series])
            p = np.clip(np.array([r[key] for r in series]), floor, 1.0)
            n = np.maximum(np.array([r["trials"] for r in series]), 1.0)
            se = np.sqrt(p * (1.0 - p) / n)
            lo_band, hi_band = np.clip(p - se, floor, 1), np.clip(p + se, floor, 1)
            ax.plot(gaps, p, marker=marker, color=shade, linewidth=2, markersize=6, label=name)
            if len(gaps) > 1:
                ax.fill_between(gaps, lo_band, hi_band, color=shade, alpha=0.15, linewidth=0)
            else:  # a band has no width at a single gap
                ax.errorbar(gaps, p, yerr=[p - lo_band, hi_band - p], color=shade, capsize=5, linewidth=1.5)

    all_gaps = sorted({r["gap"] for r in rows})
    chance_by_gap: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        chance_by_gap[r["gap"]].append(r["chance"])
    chance = [float(np.mean(chance_by_gap[g])) for g in all_gaps]
    if max(chance) - min(chance) < 1e-12:
        ax.axhline(chance[0], color="0.35", linestyle="--", linewidth=1.3, label=f"chance ({chance[0]:.3g})")
    else:
        ax.plot(all_gaps, chance, color="0.35", linestyle="--", linewidth=1.3, label="chance")

    # Episodes hold one key/value pair: repeating the last value written is always right (level 1). MQAR rows
    # hold P distinct values: repeating the last one is right once per row (1/P).
    for i, pairs in enumerate(all_pairs):
        what = "pair per episode" if not is_mqar else "pairs per row"
        ax.axhline(1.0 / pairs, color="0.55", linestyle=(0, (1, 1 + i)), linewidth=1.3,
                   label=f"repeat-last-value level (1/P, P = {pairs} {what})")
        # The query half shows each answer after it is scored: eliminating the answered values scores H_P / P
        # without any lookup (hope.data.mqar). CSVs written before that column existed simply lack the line, and
        # rows with hidden answers have it at the repeat level (nothing to eliminate), already drawn.
        levels = {r["elimination"] for r in rows if is_mqar and int(r["pairs"]) == pairs and r["elimination"]
                  and abs(r["elimination"] - 1.0 / pairs) > 1e-9}
        if levels:
            ax.axhline(max(levels), color="0.55", linestyle=(0, (4, 2 + i)), linewidth=1.3,
                       label=f"eliminate-answered level (H_P/P, P = {pairs})")

    _gap_axis(ax, all_gaps)
    ax.set_yscale("log")
    lowest = min([floor * 10] + [float(r[key]) for r in rows if r[key] > 0] + chance)
    ax.set_ylim(max(floor, lowest / 3), 1.6)
    scale = "log2 scale, linear below 1" if all_gaps[0] <= 0 else "log2 scale"
    if is_mqar:
        ax.set_xlabel(f"filler gap between the pairs and the queries (bytes, {scale})")
        ax.set_ylabel("MQAR accuracy, top-1 at the answers (log scale)")
    else:
        ax.set_xlabel(f"gap between stored fact and query (bytes, {scale})")
        ax.set_ylabel("recall probability (log scale)")
    trials = sorted({int(r["trials"]) for r in rows})
    unit = "rows" if is_mqar else "trials"
    trials_txt = f"{trials[0]} {unit} per point" if len(trials) == 1 else f"{trials[0]}-{trials[-1]} {unit} per point"
    title = "Key lookup (MQAR) vs gap" if is_mqar else "Long-context recall vs gap"
    ax.set_title(f"{title}\n(band: ±1 binomial standard error, {trials_txt})", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", frameon=True, fontsize=8)
    _caption(fig, _rows_caption(rows))
    return _save(fig, out_png)


def _is_copy_csv(path: PathLike) -> bool:
    return "copy_gain" in _csv_header(path, "long-context CSV")


def plot_copy_gain(csv_path: PathLike, out_png: PathLike) -> Path:
    """Repeated-text recall (``hope-track-long --task copy``): the copy gain loss_first - loss_second against the
    gap between the two occurrences (log2 x-axis), one line per model/checkpoint with error bars of +-2 standard
    errors over the passages, a zero line (no gain), and each model's attention reach (depth x (window - 1)) as
    a dotted line of its colour when the CSV records it: past it, a sliding window's gain is 0, and what a model
    keeps is carried by something else. When the CSV holds the control (``--control``), control_gain, the gain
    against another passage read in the first occurrence's place, is drawn dashed in the same colour."""
    rows = _read_csv(csv_path, COPY_COLUMNS, "copy-gain CSV", COPY_OPTIONAL)
    series = _series(rows)
    fig = _new_figure(COPY_FIGSIZE)
    ax = fig.add_subplot()
    all_gaps = sorted({r["gap"] for r in rows})
    ax.axhline(0.0, color="0.35", linestyle="--", linewidth=1.2, label="no gain")
    n_lines = len(series) * (2 if any(r["control_gain"] is not None for r in rows) else 1)

    def dodge(gaps: np.ndarray, k: int) -> np.ndarray:  # side by side, so the error bars do not hide each other
        d = 0.07 * (k - (n_lines - 1) / 2)
        return np.where(gaps > 0, gaps * 2.0 ** d, 2 * d)

    k = 0
    for label, color, marker, group in series:
        group = sorted(group, key=lambda r: r["gap"])
        gaps = np.array([r["gap"] for r in group])
        for key, se_key, dashed in (("copy_gain", "copy_gain_se", False), ("control_gain", "control_gain_se", True)):
            points = [(g, r[key], r[se_key]) for g, r in zip(gaps, group) if r.get(key) is not None]
            if not points:
                continue
            x = dodge(np.array([p[0] for p in points]), k)
            y = np.array([p[1] for p in points])
            err = np.array([2 * p[2] if p[2] is not None and math.isfinite(p[2]) else 0.0 for p in points])
            ax.errorbar(x, y, yerr=err, color=color, marker=marker, markersize=6, linewidth=2 if not dashed else 1.5,
                        linestyle="--" if dashed else "-", capsize=4, markerfacecolor="white" if dashed else color,
                        label=f"{label}, against another passage (control)" if dashed else label)
            k += 1
        reach = group[0].get("reach")
        if reach and all_gaps[0] <= reach <= all_gaps[-1] * 2 ** 0.4:
            ax.axvline(reach, color=color, linestyle=":", linewidth=1.3,
                       label=f"{label}: attention reach {int(reach)} bytes")
    _gap_axis(ax, all_gaps)
    scale = "log2 scale, linear below 1" if all_gaps[0] <= 0 else "log2 scale"
    ax.set_xlabel(f"other text between the passage's two occurrences (bytes, {scale})")
    ax.set_ylabel("copy gain: loss on 1st - loss on 2nd occurrence\n(nats per byte, higher is better)")
    samples = sorted({int(r["samples"]) for r in rows})
    passages = sorted({int(r["passage"]) for r in rows})
    count = f"{samples[0]}" if len(samples) == 1 else f"{samples[0]}-{samples[-1]}"
    size = ", ".join(str(p) for p in passages)
    plural = "" if samples == [1] else "s"
    ax.set_title(f"Repeated-text recall vs gap\n(error bars: ±2 standard errors over {count} passage{plural} of "
                 f"{size} bytes per point)", fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (labels[i] == "no gain" or "attention reach" in labels[i], i))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="best", frameon=True, fontsize=8)
    leads = sorted({int(r["lead"]) for r in rows if r.get("lead") is not None})
    lead = f"lead: {', '.join(map(str, leads))} bytes of other text before the first occurrence" if leads else ""
    _caption(fig, [*_rows_caption(rows), lead])
    return _save(fig, out_png)


def plot_binned_ppl(csv_path: PathLike, out_png: PathLike) -> Path:
    """Perplexity per byte in each position bin, as grouped bars with one bar series per model/checkpoint; the
    positions where each model's attention stops seeing the start (HOPE's attn_window, the baseline's max_len)
    are marked when the CSV records them."""
    rows = _read_csv(csv_path, BINNED_COLUMNS, "binned-perplexity CSV")
    bins = sorted({(r["bin_start"], r["bin_end"]) for r in rows})
    series = _series(rows)
    fig = _new_figure(BINNED_FIGSIZE)
    ax = fig.add_subplot()
    x = np.arange(len(bins))
    width = min(0.8 / len(series), 0.36)  # a lone series would otherwise get slabs 0.8 wide
    n_bars = len(bins) * len(series)
    fontsize = 9 if n_bars <= 12 else 7
    for s_i, (label, color, _, srows) in enumerate(series):
        by_bin = {(r["bin_start"], r["bin_end"]): r["ppl"] for r in srows}
        values = [by_bin.get(b, float("nan")) for b in bins]
        bars = ax.bar(x + (s_i - (len(series) - 1) / 2) * width, values, width * 0.95, color=color, label=label)
        if n_bars <= 32:  # beyond that the labels overlap and only add noise
            _label_bars(ax, bars, values, "{:.2f}", fontsize)
    ax.set_xticks(x)
    ax.set_xticklabels([f"[{int(a)}, {int(b)})" for a, b in bins])
    ax.set_xlabel("position of the predicted byte in the sequence (bytes; bin end exclusive)")
    ax.set_ylabel("perplexity per byte (exp of loss in nats/byte)")
    ax.set_title("Perplexity by position bin (lower is better)", fontsize=11)
    ax.set_ylim(0, max(r["ppl"] for r in rows if math.isfinite(r["ppl"])) * 1.35)  # room for the legend
    for label, color, _, srows in series:  # where attention stops reaching back to position 0
        model_type = srows[0]["model_type"]
        key = "attn_window" if model_type == "hope" else "max_len"
        span = srows[0].get(key)
        x_pos = _bin_position(bins, span) if span else None
        if x_pos is not None:
            ax.axvline(x_pos, color=color, linestyle="--", linewidth=1.2, label=f"{label}: {key} = {int(span)}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", frameon=True, fontsize=8, ncols=2)
    _caption(fig, _rows_caption(rows))
    return _save(fig, out_png)


def _bin_position(bins: Sequence[tuple[float, float]], value: float) -> float | None:
    """x coordinate of byte position `value` on the categorical bin axis (bar i spans i - 0.5 .. i + 0.5)."""
    for i, (a, b) in enumerate(bins):
        if a <= value <= b:
            return i - 0.5 + (value - a) / (b - a)
    return None


def _metric(model: Mapping[str, Any], split: str, key: str) -> float:
    value = (model.get(split) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _grouped_bars(ax: Axes, groups: Sequence[str], per_model: Mapping[str, Sequence[float]],
                  colors: Mapping[str, str], fmt: str, fontsize: float) -> None:
    x = np.arange(len(groups))
    width = min(0.8 / len(per_model), 0.36)
    for m_i, (name, values) in enumerate(per_model.items()):
        offset = (m_i - (len(per_model) - 1) / 2) * width
        bars = ax.bar(x + offset, values, width * 0.95, color=colors[name])
        _label_bars(ax, bars, values, fmt, fontsize)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot_compare_metrics(json_path: PathLike, out_png: PathLike) -> Path:
    """HOPE vs baseline from ``metrics.json``: loss, bits per byte and top-1/5/10 accuracy, train and val."""
    data = _read_json(json_path, "metrics JSON")
    models: Mapping[str, Mapping[str, Any]] = data["models"]
    order = _model_order(list(models))
    others: list[str] = []
    colors = {n: _base_color(n, others) for n in order}

    fig = _new_figure(COMPARE_FIGSIZE)
    ax_loss, ax_bpb, ax_acc = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 2.2]})
    splits = ("train", "val")

    _grouped_bars(ax_loss, splits, {n: [_metric(models[n], s, "loss") for s in splits] for n in order},
                  colors, "{:.3f}", 9)
    ax_loss.set_ylabel("loss (nats/byte)")
    ax_loss.set_title("Cross-entropy loss\n(lower is better)", fontsize=11)

    _grouped_bars(ax_bpb, splits, {n: [_metric(models[n], s, "bpb") for s in splits] for n in order},
                  colors, "{:.3f}", 9)
    ax_bpb.set_ylabel("bits per byte")
    ax_bpb.set_title("Bits per byte\n(lower is better)", fontsize=11)
    hf = data.get("hf")
    if isinstance(hf, Mapping) and isinstance(hf.get("bpb"), (int, float)) and math.isfinite(hf["bpb"]):
        # The pretrained model was scored on the validation text only, hence a reference line, not a bar pair.
        hf_line = ax_bpb.axhline(hf["bpb"], color="0.25", linestyle="--", linewidth=1.3)
        hf_label = f"{hf.get('model', 'HF model')} on val text: {hf['bpb']:.3f} bits/byte"
    else:
        hf_line, hf_label = None, None

    acc_keys = (("top-1", "accuracy"), ("top-5", "top5_acc"), ("top-10", "top10_acc"))
    groups = [f"{k_label}\n{s}" for k_label, _ in acc_keys for s in splits]
    _grouped_bars(ax_acc, groups,
                  {n: [100 * _metric(models[n], s, k) for _, k in acc_keys for s in splits] for n in order},
                  colors, "{:.1f}", 8 if len(order) <= 2 else 6.5)
    ax_acc.set_ylabel("next-byte accuracy (%)")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax_acc.set_ylim(0, 105)
    ax_acc.set_title("Top-k accuracy on train and validation\n(higher is better)", fontsize=11)

    for ax in (ax_loss, ax_bpb):
        top = np.nanmax([_metric(models[n], s, k) for n in order for s in splits for k in ("loss", "bpb")])
        if math.isfinite(top):
            ax.set_ylim(0, top * 1.15)

    def legend_label(name: str) -> str:
        params = models[name].get("params")
        return f"{_display_name(name)} ({params / 1e6:.2f}M params)" if isinstance(params, (int, float)) else _display_name(name)

    handles: list[Any] = [Rectangle((0, 0), 1, 1, color=colors[n]) for n in order]
    labels = [legend_label(n) for n in order]
    if hf_line is not None:
        handles.append(hf_line)
        labels.append(hf_label)
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False)
    named = []
    for n in order:
        steps = models[n].get("steps")
        named.append(f"{models[n].get('checkpoint') or n}" + (f" (step {steps})" if steps is not None else ""))
    data_name = data.get("data")
    _caption(fig, ["checkpoints: " + ", ".join(named), f"data: {data_name}" if data_name else ""])
    return _save(fig, out_png)


def _short_domain(name: str) -> str:
    """"A: lines 0-1000" -> "A"; names without a "X:" prefix are wrapped to fit under a heatmap column."""
    head = name.split(":", 1)[0].strip()
    return head if ":" in name and head else textwrap.fill(name, 14)


def plot_forgetting_heatmap(json_path: PathLike, out_png: PathLike) -> Path:
    """One annotated heatmap of the stage x domain validation-loss matrix per model, on a shared colour scale.

    The diagonal (loss on a domain right after training on it) is outlined: forgetting is how much the cells
    below it in the same column rise.
    """
    data = _read_json(json_path, "continual metrics JSON")
    models: Mapping[str, Mapping[str, Any]] = data["models"]
    order = _model_order(list(models))
    matrices = {n: np.asarray(models[n].get("loss_matrix") or [], dtype=float) for n in order}
    for n, m in matrices.items():
        if m.ndim != 2 or m.size == 0:
            raise ValueError(f"continual metrics JSON {json_path}: model {n!r} has no 2-D 'loss_matrix'")
    n_domains = max(m.shape[1] for m in matrices.values())
    domains = list(data.get("domains") or [f"domain {j}" for j in range(n_domains)])
    short = [_short_domain(d) for d in domains]
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = mcolors.Normalize(vmin=lo, vmax=hi)
    cmap = "YlOrRd"  # higher loss = darker red

    fig = _new_figure(heatmap_figsize(len(order)))
    axes = np.atleast_1d(fig.subplots(1, len(order)))
    image = None
    for ax, name in zip(axes, order):
        m = matrices[name]
        image = ax.imshow(m, cmap=cmap, norm=norm, aspect="equal")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                rgba = image.cmap(norm(m[i, j]))
                luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=10,
                        color="white" if luminance < 0.5 else "black")
            if i < m.shape[1]:
                ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
        ax.set_xticks(range(m.shape[1]))
        ax.set_xticklabels(short[: m.shape[1]])
        ax.set_yticks(range(m.shape[0]))
        ax.set_yticklabels([f"after {short[i]}" if i < len(short) else f"stage {i}" for i in range(m.shape[0])])
        ax.set_xlabel("evaluated on domain")
        if ax is axes[0]:  # the panels share rows; one label is enough
            ax.set_ylabel("after training stage")
        forgetting, bwt = models[name].get("avg_forgetting"), models[name].get("backward_transfer")
        if (forgetting is None or bwt is None) and m.shape[0] >= 2:
            forgetting, bwt = compute_forgetting(m.tolist())
        subtitle = (f"forgetting {forgetting:+.3f}, BWT {bwt:+.3f}" if forgetting is not None and bwt is not None
                    else "")
        ax.set_title(f"{_display_name(name)}\n{subtitle}", fontsize=11)
    assert image is not None
    fig.colorbar(image, ax=list(axes), label="validation loss (nats/byte)", shrink=0.85)
    fig.suptitle("Validation loss after each continual-learning stage (outlined: just trained)", fontsize=12)
    parts = []
    if any(s != d for s, d in zip(short, domains)):
        parts.append("Domains: " + "; ".join(domains))
    if data.get("domain_sources"):
        parts.append("data: " + ", ".join(map(str, data["domain_sources"])))
    if data.get("steps_per_stage"):
        parts.append(f"{data['steps_per_stage']} steps per stage")
    _caption(fig, parts)  # supxlabel: the layout engine reserves room for it below the panels
    return _save(fig, out_png)


def plot_loss_curves(runs: Sequence[PathLike], out_png: PathLike) -> Path:
    """Training and validation loss against step for one or more runs (each a metrics log, its checkpoint or its
    run folder): the training loss as a line, validation as markers, one colour per run; a top axis gives the
    training tokens when every run saw the same tokens per step."""
    logs = [find_metrics_log(r) for r in runs]
    fig = _new_figure(CURVES_FIGSIZE)
    ax = fig.add_subplot()
    names = [p.name.removesuffix(".metrics.jsonl") if p.name != "metrics.jsonl" else str(p.parent) for p in logs]
    if len(set(names)) < len(names):
        names = [str(p) for p in logs]
    per_step: set[float] = set()
    parts, drawn = [], 0
    for i, (log, name) in enumerate(zip(logs, names)):
        records = read_metrics(log)
        color = _OTHER_COLORS[i % len(_OTHER_COLORS)] if len(logs) > 1 else _MODEL_COLORS["hope"]
        train = sorted((r["step"], r["loss"]) for r in records
                       if r.get("split") == "train" and not r.get("final") and _finite(r.get("loss")))
        val = sorted((r["step"], r["loss"]) for r in records if r.get("split") == "val" and _finite(r.get("loss")))
        if train:
            ax.plot(*zip(*train), color=color, linewidth=1.4, alpha=0.85, label=f"{name} train")
        if val:
            ax.plot(*zip(*val), color=color, linestyle="--", marker="o", markersize=5, linewidth=1,
                    label=f"{name} validation")
        drawn += bool(train or val)
        per_step |= {r["tokens"] / r["step"] for r in records if r.get("tokens") and r.get("step")}
        last = max((r["step"] for r in records if "step" in r), default=None)
        config = log.with_name(log.name.removesuffix(".metrics.jsonl") + ".config.yaml")
        data_name = _config_data(config)
        parts.append(f"{log}" + (f" (to step {last})" if last is not None else "")
                     + (f", data {data_name}" if data_name else ""))
    if not drawn:
        raise ValueError(f"no loss records in {', '.join(map(str, logs))}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (nats/byte)")
    ax.set_title("Training and validation loss (lower is better)", fontsize=11)
    if len(per_step) == 1:
        tokens = per_step.pop()
        top = ax.secondary_xaxis("top", functions=(lambda s: s * tokens, lambda t: t / tokens))
        top.set_xlabel("training tokens", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", frameon=True, fontsize=8)
    _caption(fig, ["runs: " + "; ".join(parts)])
    return _save(fig, out_png)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _config_data(path: Path) -> str | None:
    """The `data:` of a run's config.yaml (None when absent); read as text to keep yaml out of the plots."""
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("data:"):
            value = line.split(":", 1)[1].strip().strip("'\"")
            return value if value and value != "null" else "synthetic"
    return None


def plot_reports(
    recall_csv: PathLike | None = None,
    binned_csv: PathLike | None = None,
    metrics_json: PathLike | None = None,
    continual_json: PathLike | None = None,
    out_dir: PathLike = "reports",
    metrics_jsonl: Sequence[PathLike] | None = None,
) -> list[Path]:
    """Draw the figure of every input given into ``out_dir``; returns the PNG paths written.

    Outputs: ``recall_curve.png`` (``copy_gain.png`` when ``recall_csv`` is a ``--task copy`` CSV),
    ``binned_ppl.png``, ``compare_metrics.png``, ``forgetting_heatmap.png``, ``loss_curves.png`` (from the runs'
    metrics logs in ``metrics_jsonl``).
    All given inputs are checked before anything is drawn, so a mistyped path fails fast without
    half-refreshed figures.
    """
    jobs = [
        (recall_csv, "long-context CSV", plot_recall_curve, "recall_curve.png"),
        (binned_csv, "binned-perplexity CSV", plot_binned_ppl, "binned_ppl.png"),
        (metrics_json, "metrics JSON", plot_compare_metrics, "compare_metrics.png"),
        (continual_json, "continual metrics JSON", plot_forgetting_heatmap, "forgetting_heatmap.png"),
    ]
    jobs = [j for j in jobs if j[0] is not None]
    if not jobs and not metrics_jsonl:
        raise ValueError("plot_reports: no input given (pass recall_csv, binned_csv, metrics_json, continual_json "
                         "or metrics_jsonl)")
    for path, what, _, _ in jobs:
        _require_file(path, what)
    if recall_csv is not None and _is_copy_csv(recall_csv):
        jobs[0] = (recall_csv, "copy-gain CSV", plot_copy_gain, "copy_gain.png")
    for run in metrics_jsonl or []:
        find_metrics_log(run)
    out = Path(out_dir)
    written = [draw(path, out / name) for path, _, draw, name in jobs]
    if metrics_jsonl:
        written.append(plot_loss_curves(list(metrics_jsonl), out / "loss_curves.png"))
    return written
