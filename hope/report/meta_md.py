"""The markdown report of ``hope-meta-train``, from its ``meta_metrics.json`` dict."""

from __future__ import annotations

import math
from typing import Any

from hope.report.markdown import fmt_number


def _num(value: Any, fmt: str = "{:+.4f}") -> str:
    """`fmt_number` for the meta report's gains (signed by default), where anything but a finite number reads n/a."""
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return fmt_number(value, fmt) if finite else "n/a"


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
