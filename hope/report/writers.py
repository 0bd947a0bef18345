"""Atomic report writers and the markdown reports of the experiments.

Every command writes its outputs through these functions, so a crash (or Ctrl-C) halfway through a write
never leaves a truncated ``metrics.json`` or CSV behind: they write through ``hope.atomic`` (temporary file in
the same directory, fsync, ``os.replace``), re-exported here as ``atomic_open`` and ``write_text``.

The markdown builders take the dicts that the experiments write as JSON (formats in the module docstrings of
``experiment_report_md`` and ``continual_report_md``), so a report can be regenerated from the JSON alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hope.atomic import atomic_open, write_text

__all__ = [
    "atomic_open",
    "write_json",
    "write_csv",
    "write_text",
    "compute_forgetting",
    "experiment_report_md",
    "continual_report_md",
    "meta_report_md",
    "mean_spread",
    "seeds_table_md",
]


# --------------------------------------------------------------------------------------------------
# atomic writing (hope.atomic: one implementation and one permission policy for every file hope writes)
# --------------------------------------------------------------------------------------------------


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; returns the path.

    The object is serialised to a string *before* the file is opened, so an unserialisable object raises
    ``TypeError`` without touching the existing file.
    """
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return write_text(path, text)


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` (dicts keyed by ``fieldnames``) as CSV with a header, atomically; returns the path.

    A row with a key outside ``fieldnames`` raises ``ValueError`` (a silently dropped column is worse than a crash).
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------------
# continual-learning summary numbers
# --------------------------------------------------------------------------------------------------


def compute_forgetting(loss_matrix: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Average forgetting and backward transfer from a matrix of validation LOSSES (lower is better).

    ``loss_matrix[i][j]`` is the validation loss on domain ``j`` after training stage ``i`` (stage ``i`` trains
    on domain ``i``). With ``T`` stages, ``last = T - 1``, and the average taken over the domains ``j < last``
    (those trained before the final stage; the final domain cannot have been forgotten yet):

    - forgetting of domain ``j`` = ``loss[last][j] - min(loss[i][j] for j <= i < last)``: how much worse the
      final model is than the best it ever was on ``j`` after learning it (Chaudhry et al., 2018, rewritten for
      losses: max accuracy becomes min loss and the difference changes sign). Positive = forgot; it is
      negative when later stages kept improving ``j``.
    - backward transfer ``BWT = mean_j (loss[last][j] - loss[j][j])`` (Lopez-Paz & Ranzato, 2017, for losses).
      SIGN CONVENTION: because these are losses, POSITIVE BWT means the later stages made the earlier domains
      WORSE (forgetting); negative BWT means they helped. (With accuracies the usual BWT has the opposite sign.)

    Returns ``(avg_forgetting, backward_transfer)`` in the loss's units (nats per byte).
    """
    rows = [list(map(float, r)) for r in loss_matrix]
    if len(rows) < 2:
        raise ValueError(f"forgetting needs at least 2 training stages, got a loss matrix with {len(rows)} row(s)")
    last = len(rows) - 1
    n_domains = len(rows[0])
    if any(len(r) != n_domains for r in rows):
        raise ValueError(f"loss matrix rows have different lengths: {[len(r) for r in rows]}")
    if n_domains < last:
        raise ValueError(f"loss matrix has {last + 1} stages but only {n_domains} domains; need one domain per stage")
    forgetting = []
    transfer = []
    for j in range(last):
        best = min(rows[i][j] for i in range(j, last))
        forgetting.append(rows[last][j] - best)
        transfer.append(rows[last][j] - rows[j][j])
    return sum(forgetting) / len(forgetting), sum(transfer) / len(transfer)


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0.0 for a single value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_spread needs at least one value")
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


# --------------------------------------------------------------------------------------------------
# markdown reports
# --------------------------------------------------------------------------------------------------

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
            cells.append(f"{_fmt(mean, fmt)} ± {_fmt(std, fmt)}")
        mean, std = mean_spread([run["tokens_per_s"] for run in runs])
        cells.append(f"{mean:.0f} ± {std:.0f}")
        rows.append(cells)
    return "\n".join(_md_table(header, rows)) + "\n"


# Config keys worth showing first in the experiment report, in this order; the rest of the config follows.
_KEY_CONFIG = (
    "model_type", "dim", "depth", "num_heads", "ff_mult", "max_len", "seq_len", "steps", "batch_size",
    "grad_accum_steps", "lr", "optimizer_type", "memory_capacity", "top_k", "amp", "amp_dtype", "device",
)
# (row label, metrics key, number format); accuracies are shown as percentages.
_METRIC_ROWS = (
    ("loss (nats/byte)", "loss", "{:.4f}"),
    ("perplexity", "ppl", "{:.3f}"),
    ("bits per byte", "bpb", "{:.4f}"),
    ("accuracy (top-1)", "accuracy", "pct"),
    ("top-5 accuracy", "top5_acc", "pct"),
    ("top-10 accuracy", "top10_acc", "pct"),
)


def _model_label(name: str) -> str:
    return {"hope": "HOPE", "baseline": "Baseline"}.get(name, name)


def _fmt(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if fmt == "pct":
        return f"{100.0 * value:.2f}%"
    return fmt.format(value)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"dim": 64}}`` -> ``{"model.dim": 64}``, so nested and flat configs report the same way."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _better_sentence(models: Mapping[str, Mapping[str, Any]]) -> str:
    """Which model has the lower validation loss, by how much in nats and in percent of the other's loss."""
    losses = {name: m.get("val", {}).get("loss") for name, m in models.items()}
    usable = {n: float(v) for n, v in losses.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if len(usable) < 2:
        return "Not enough finite validation losses to compare the models."
    ranked = sorted(usable.items(), key=lambda kv: kv[1])
    (best, best_loss), (other, other_loss) = ranked[0], ranked[1]
    diff = other_loss - best_loss
    if diff == 0.0:
        return f"{_model_label(best)} and {_model_label(other)} have the same validation loss ({best_loss:.4f} nats/byte)."
    pct = 100.0 * diff / other_loss if other_loss != 0 else float("inf")
    return (
        f"**{_model_label(best)} is better on validation loss**: {best_loss:.4f} vs {other_loss:.4f} nats/byte "
        f"({_model_label(other)}), lower by {diff:.4f} nats/byte ({pct:.2f}% lower)."
    )


def _hf_line(hf: Any, models: Mapping[str, Mapping[str, Any]]) -> str:
    if hf is None:
        return "Hugging Face comparison: not run."
    if "skipped" in hf:
        return f"Hugging Face comparison: skipped ({hf['skipped']})."
    if "bpb" not in hf:
        return f"Hugging Face comparison: no result ({hf})."
    ours = ", ".join(
        f"{_model_label(n)} {_fmt(m.get('val', {}).get('bpb'), '{:.4f}')}" for n, m in models.items()
    )
    scored = f"{hf.get('tokens', '?')} tokens, {hf.get('bytes', '?')} bytes"
    return (
        f"Hugging Face reference: `{hf.get('model', '?')}` scores {_fmt(hf['bpb'], '{:.4f}')} bits/byte on the "
        f"validation text ({scored}); ours (val bits/byte): {ours}. Bits per byte is tokenizer-independent, so "
        f"these are comparable, but the pretrained model was not trained on this corpus split."
    )


def experiment_report_md(metrics: Mapping[str, Any]) -> str:
    """Markdown report of the HOPE-vs-baseline experiment from its ``metrics.json`` dict.

    Expected keys: ``command`` (str), ``config`` (dict, flat or nested), ``models`` (``{name: {params,
    tokens_per_s, train_time_s, train: {...}, val: {...}}}`` with metric keys loss/ppl/bpb/accuracy/top5_acc/
    top10_acc), ``hf`` (``{model, bpb, tokens, bytes}``, ``{skipped: reason}`` or ``None``). Missing values
    print as ``n/a`` rather than failing, so a partial run still gets a report.
    """
    models: Mapping[str, Mapping[str, Any]] = metrics.get("models", {}) or {}
    # HOPE first, then the baseline, then anything else, so the columns read the same in every report.
    order = sorted(models, key=lambda n: ({"hope": 0, "baseline": 1}.get(n, 2), n))
    lines = ["# HOPE vs Baseline: experiment report", ""]
    if metrics.get("command"):
        lines += ["Command:", "", "```", str(metrics["command"]), "```", ""]

    config = _flatten(metrics.get("config", {}) or {})
    if config:
        by_leaf: dict[str, tuple[str, Any]] = {}
        for full, value in config.items():
            by_leaf.setdefault(full.rsplit(".", 1)[-1], (full, value))
        shown = [by_leaf[k] for k in _KEY_CONFIG if k in by_leaf]
        amp_on = by_leaf.get("amp", (None, None))[1]
        cells = []
        for k, v in shown:
            leaf = k.rsplit(".", 1)[-1]
            if leaf == "amp" and isinstance(v, bool):
                v = "on" if v else "off"
            elif leaf == "amp_dtype" and amp_on is False:
                v = f"{v} (unused: amp off)"
            cells.append((f"`{k}`", f"`{v}`"))
        base = metrics.get("baseline_config") or {}
        if base:  # the baseline's own shape, so the user's depth above does not read as ignored
            cells.append(("baseline shape", "`" + ", ".join(f"{k} {v}" for k, v in base.items())
                          + "` (chosen to match HOPE's parameter count)"))
        lines += ["## Key configuration (HOPE, as given)", ""]
        lines += _md_table(["key", "value"], cells)
        lines += [""]

    if order:
        lines += ["## Results", "", _better_sentence(models), ""]
        header = ["metric"] + [f"{_model_label(n)} {split}" for split in ("train", "val") for n in order]
        rows = []
        for label, key, fmt in _METRIC_ROWS:
            row = [label]
            for split in ("train", "val"):
                for n in order:
                    row.append(_fmt((models[n].get(split) or {}).get(key), fmt))
            rows.append(row)
        lines += _md_table(header, rows)
        lines += [""]
        lines += ["## Cost", ""]
        cost_rows = [
            [_model_label(n), _fmt(models[n].get("params"), "{:,}"), _fmt(models[n].get("tokens_per_s"), "{:,.1f}"),
             _fmt(models[n].get("train_time_s"), "{:.1f}")]
            for n in order
        ]
        lines += _md_table(["model", "parameters", "training tokens/s", "training time (s)"], cost_rows)
        lines += [""]
    else:
        lines += ["No model results were recorded.", ""]

    lines += ["## Open-source reference", "", _hf_line(metrics.get("hf"), {n: models[n] for n in order}), ""]
    return "\n".join(lines)


def continual_report_md(metrics: Mapping[str, Any]) -> str:
    """Markdown report of the continual-learning experiment from its ``continual_metrics.json`` dict.

    Expected: ``domains`` (list of names, one per stage) and ``models`` (``{name: {loss_matrix, avg_forgetting,
    backward_transfer}}``; ``loss_matrix[i][j]`` = val loss on domain j after stage i). Forgetting and BWT
    missing from the dict are recomputed from the matrix with ``compute_forgetting``.
    """
    domains = list(metrics.get("domains", []) or [])
    models: Mapping[str, Mapping[str, Any]] = metrics.get("models", {}) or {}
    order = sorted(models, key=lambda n: ({"hope": 0, "baseline": 1}.get(n, 2), n))
    lines = [
        "# Continual learning: sequential training " + " → ".join(d.split(":")[0].strip() for d in domains),
        "",
        "Each row is the model after one training stage; each column is the validation loss (nats/byte, lower is "
        "better) on one domain. Entries above the diagonal are domains not trained yet; entries below it show "
        "what later stages did to earlier domains.",
        "",
        "Forgetting of a domain = final loss minus the best loss reached on it after it was trained; backward "
        "transfer (BWT) = final loss minus the loss right after training it, averaged over all but the last "
        "domain. With losses, **positive = got worse** for both.",
        "",
    ]
    summary: dict[str, tuple[float, float]] = {}
    for name in order:
        m = models[name]
        matrix = m.get("loss_matrix") or []
        names = domains or [f"domain {j}" for j in range(len(matrix[0]) if matrix else 0)]
        lines += [f"## {_model_label(name)}", ""]
        rows = []
        for i, row in enumerate(matrix):
            stage = names[i] if i < len(names) else f"stage {i}"
            rows.append([f"after training on {stage}"] + [_fmt(v, "{:.4f}") for v in row])
        lines += _md_table(["stage \\ eval on"] + names, rows)
        forgetting, bwt = m.get("avg_forgetting"), m.get("backward_transfer")
        if (forgetting is None or bwt is None) and len(matrix) >= 2:
            forgetting, bwt = compute_forgetting(matrix)
        if forgetting is not None and bwt is not None:
            summary[name] = (float(forgetting), float(bwt))
        lines += ["", f"Average forgetting: {_fmt(forgetting, '{:+.4f}')} nats/byte; "
                  f"backward transfer: {_fmt(bwt, '{:+.4f}')} nats/byte.", ""]

    if len(summary) >= 2:
        ranked = sorted(summary.items(), key=lambda kv: kv[1][0])
        (best, (f_best, _)), (other, (f_other, _)) = ranked[0], ranked[1]
        lines += ["## Verdict", ""]
        if f_best <= 0 and f_other <= 0:  # "forgets less" would claim a forgetting that did not happen
            lines += [f"**Neither model forgot**: average forgetting {f_best:+.4f} ({_model_label(best)}) and "
                      f"{f_other:+.4f} nats/byte ({_model_label(other)}), both <= 0: later stages did not make the "
                      "earlier domains worse.", ""]
        elif f_best <= 0:
            lines += [f"**Only {_model_label(other)} forgot**: average forgetting {f_other:+.4f} nats/byte vs "
                      f"{f_best:+.4f} ({_model_label(best)}, no forgetting).", ""]
        elif f_best == f_other:
            lines += [f"{_model_label(best)} and {_model_label(other)} forget equally ({f_best:+.4f} nats/byte).", ""]
        else:
            lines += [
                f"**{_model_label(best)} forgets less**: average forgetting {f_best:+.4f} vs {f_other:+.4f} nats/byte "
                f"({_model_label(other)}), a difference of {f_other - f_best:.4f} nats/byte.",
                "",
            ]
    return "\n".join(lines)


def _num(value: Any, fmt: str = "{:+.4f}") -> str:
    """`_fmt` for the meta report's gains (signed by default), where anything but a finite number reads n/a."""
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return _fmt(value, fmt) if finite else "n/a"


def meta_report_md(metrics: dict[str, Any]) -> str:
    """Markdown report of `hope-meta-train` from its `meta_metrics.json` dict."""
    ev, models, comp = metrics["eval"], metrics["models"], metrics["comparison"]
    lines = [
        "# Meta-learning: adaptation gain on held-out validation text", "",
        f"Adaptation gain = query loss read cold (fresh state) minus query loss after {ev['inner_steps']} in-context "
        f"pass(es) over the {ev['support_len']}-byte support segment that precedes the {ev['query_len']}-byte query "
        f"(nats/byte; **positive = adaptation helps**). Evaluated on {ev['pairs']} non-overlapping support/query pairs "
        "spread over the validation split, no updates. \"Writes off\" repeats it with the memory write gate at 0, "
        "so only attention sees the support; the difference is what the memory writes add.", "",
        "| model | query loss cold | query loss adapted | gain ± se | gain, writes off | gain from writes ± se | val loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("init", "plain", "meta"):
        if name not in models:
            continue
        m = models[name]
        lines.append(f"| {m['label']} | {_num(m['query_loss_init'], '{:.4f}')} | {_num(m['query_loss_adapted'], '{:.4f}')} "
                     f"| {_num(m['gain'])} ± {_num(m['gain_se'], '{:.4f}')} | {_num(m['context_gain_no_writes'])} "
                     f"| {_num(m['memory_write_gain'])} ± {_num(m['memory_write_gain_se'], '{:.4f}')} "
                     f"| {_num(m['val'].get('loss'), '{:.4f}')} |")
    g, w = comp["gain_difference"], comp["memory_write_gain_difference"]
    before = models[comp["before"]]["label"]
    lines += ["", f"**Meta-trained minus {before}** (paired over the same pairs): gain {_num(g['mean'])} ± "
              f"{_num(g['se'], '{:.4f}')} nats/byte; gain from memory writes {_num(w['mean'])} ± {_num(w['se'], '{:.4f}')}.", ""]
    rounds = metrics.get("rounds") or []
    if rounds:
        shown = rounds if len(rounds) <= 12 else rounds[:6] + rounds[-6:]
        lines += ["## Meta rounds during training (meta split)", "",
                  "| step | query loss cold | query loss adapted | gain |", "|---|---|---|---|"]
        lines += [f"| {r['step']} | {_num(r['meta_query_loss_init'], '{:.4f}')} | "
                  f"{_num(r['meta_query_loss_adapted'], '{:.4f}')} | {_num(r['meta_gain'])} |" for r in shown]
        if len(rounds) > len(shown):
            lines.append(f"\n({len(rounds)} rounds; first and last 6 shown, all in meta_metrics.json)")
        lines.append("")
    data = metrics["data"]
    lines += ["## Data", "",
              f"Corpus {data['corpus']}: {data['train_bytes']} training bytes, {data['meta_bytes']} meta bytes "
              f"({data['meta_split']}), {data['val_bytes']} validation bytes. The meta-updates use the meta split, "
              "not the validation split the manual mentions: updating on validation text would leak it into every "
              "reported validation figure.", ""]
    if metrics.get("command"):
        lines += ["## Command", "", "```", metrics["command"], "```", ""]
    return "\n".join(lines)
