"""The markdown report of the continual-learning experiment (``hope-continual``), from its
``continual_metrics.json`` dict (format in ``continual_report_md``'s docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hope.report.markdown import fmt_number, md_table, model_label
from hope.report.stats import compute_forgetting


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
        lines += [f"## {model_label(name)}", ""]
        rows = []
        for i, row in enumerate(matrix):
            stage = names[i] if i < len(names) else f"stage {i}"
            rows.append([f"after training on {stage}"] + [fmt_number(v, "{:.4f}") for v in row])
        lines += md_table(["stage \\ eval on"] + names, rows)
        forgetting, bwt = m.get("avg_forgetting"), m.get("backward_transfer")
        if (forgetting is None or bwt is None) and len(matrix) >= 2:
            forgetting, bwt = compute_forgetting(matrix)
        if forgetting is not None and bwt is not None:
            summary[name] = (float(forgetting), float(bwt))
        lines += ["", f"Average forgetting: {fmt_number(forgetting, '{:+.4f}')} nats/byte; "
                  f"backward transfer: {fmt_number(bwt, '{:+.4f}')} nats/byte.", ""]

    if len(summary) >= 2:
        ranked = sorted(summary.items(), key=lambda kv: kv[1][0])
        (best, (f_best, _)), (other, (f_other, _)) = ranked[0], ranked[1]
        lines += ["## Verdict", ""]
        if f_best <= 0 and f_other <= 0:  # "forgets less" would claim a forgetting that did not happen
            lines += [f"**Neither model forgot**: average forgetting {f_best:+.4f} ({model_label(best)}) and "
                      f"{f_other:+.4f} nats/byte ({model_label(other)}), both <= 0: later stages did not make the "
                      "earlier domains worse.", ""]
        elif f_best <= 0:
            lines += [f"**Only {model_label(other)} forgot**: average forgetting {f_other:+.4f} nats/byte vs "
                      f"{f_best:+.4f} ({model_label(best)}, no forgetting).", ""]
        elif f_best == f_other:
            lines += [f"{model_label(best)} and {model_label(other)} forget equally ({f_best:+.4f} nats/byte).", ""]
        else:
            lines += [
                f"**{model_label(best)} forgets less**: average forgetting {f_best:+.4f} vs {f_other:+.4f} nats/byte "
                f"({model_label(other)}), a difference of {f_other - f_best:.4f} nats/byte.",
                "",
            ]
    return "\n".join(lines)
