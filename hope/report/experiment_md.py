"""The markdown report of the HOPE-vs-baseline experiment (``hope-run-experiment``), from its ``metrics.json``
dict (format in ``experiment_report_md``'s docstring), so a report can be regenerated from the JSON alone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hope.report.markdown import fmt_number, md_table, model_label


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
        return f"{model_label(best)} and {model_label(other)} have the same validation loss ({best_loss:.4f} nats/byte)."
    pct = 100.0 * diff / other_loss if other_loss != 0 else float("inf")
    return (
        f"**{model_label(best)} is better on validation loss**: {best_loss:.4f} vs {other_loss:.4f} nats/byte "
        f"({model_label(other)}), lower by {diff:.4f} nats/byte ({pct:.2f}% lower)."
    )


def _hf_line(hf: Any, models: Mapping[str, Mapping[str, Any]]) -> str:
    if hf is None:
        return "Hugging Face comparison: not run."
    if "skipped" in hf:
        return f"Hugging Face comparison: skipped ({hf['skipped']})."
    if "bpb" not in hf:
        return f"Hugging Face comparison: no result ({hf})."
    ours = ", ".join(
        f"{model_label(n)} {fmt_number(m.get('val', {}).get('bpb'), '{:.4f}')}" for n, m in models.items()
    )
    scored = f"{hf.get('tokens', '?')} tokens, {hf.get('bytes', '?')} bytes"
    return (
        f"Hugging Face reference: `{hf.get('model', '?')}` scores {fmt_number(hf['bpb'], '{:.4f}')} bits/byte on the "
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
        lines += md_table(["key", "value"], cells)
        lines += [""]

    if order:
        lines += ["## Results", "", _better_sentence(models), ""]
        header = ["metric"] + [f"{model_label(n)} {split}" for split in ("train", "val") for n in order]
        rows = []
        for label, key, fmt in _METRIC_ROWS:
            row = [label]
            for split in ("train", "val"):
                for n in order:
                    row.append(fmt_number((models[n].get(split) or {}).get(key), fmt))
            rows.append(row)
        lines += md_table(header, rows)
        lines += [""]
        lines += ["## Cost", ""]
        cost_rows = [
            [model_label(n), fmt_number(models[n].get("params"), "{:,}"), fmt_number(models[n].get("tokens_per_s"), "{:,.1f}"),
             fmt_number(models[n].get("train_time_s"), "{:.1f}")]
            for n in order
        ]
        lines += md_table(["model", "parameters", "training tokens/s", "training time (s)"], cost_rows)
        lines += [""]
    else:
        lines += ["No model results were recorded.", ""]

    lines += ["## Open-source reference", "", _hf_line(metrics.get("hf"), {n: models[n] for n in order}), ""]
    return "\n".join(lines)
