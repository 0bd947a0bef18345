"""Figures a reader trusts: training curves of several runs, recall on a log axis with chance and the repeat level,
max_len / attn_window on the binned plot, and a caption naming checkpoint(s), data and step on every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hope.cli import plot_reports as plot_cli
from hope.data import mqar
from hope.report import plots
from hope.report.writers import write_csv


@pytest.fixture
def figures(monkeypatch):
    """Every Figure the plots draw, by output name (they are still saved)."""
    drawn = {}
    save = plots._save

    def keep(fig, out_png):
        drawn[Path(out_png).name] = fig
        return save(fig, out_png)

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def caption(fig) -> str:
    return fig._supxlabel.get_text().replace("\n", " ") if fig._supxlabel is not None else ""


def _log(path: Path, losses: list[float], val_every: int = 2, tokens_per_step: int = 64) -> None:
    records = []
    for step, loss in enumerate(losses, start=1):
        records.append({"step": step, "split": "train", "tokens": step * tokens_per_step, "lr": 1e-3, "loss": loss})
        if step % val_every == 0:
            records.append({"step": step, "split": "val", "tokens": step * tokens_per_step, "lr": 1e-3,
                            "loss": loss + 0.1})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    path.with_name(path.name.replace(".metrics.jsonl", ".config.yaml")).write_text("data: /d/corpus.txt\nsteps: 4\n")


def test_loss_curves_of_two_runs(tmp_path, figures, capsys):
    _log(tmp_path / "a.metrics.jsonl", [3.0, 2.5, 2.2, 2.0])
    _log(tmp_path / "b.metrics.jsonl", [3.1, 2.9, 2.8, 2.7])
    (tmp_path / "b.pt").write_bytes(b"")  # a run named by its checkpoint
    assert plot_cli.main(["--metrics_jsonl", str(tmp_path / "a.metrics.jsonl"), str(tmp_path / "b.pt"),
                          "--out_dir", str(tmp_path / "figs")]) == 0
    out = tmp_path / "figs" / "loss_curves.png"
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = figures["loss_curves.png"]
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"a train", "a validation", "b train", "b validation"}
    assert list(lines["a train"].get_xdata()) == [1, 2, 3, 4] and list(lines["a validation"].get_xdata()) == [2, 4]
    assert list(lines["b validation"].get_ydata()) == pytest.approx([3.0, 2.8])
    assert ax.get_xlabel() == "optimiser step"
    assert "a.metrics.jsonl (to step 4), data /d/corpus.txt" in caption(fig)


def test_loss_curves_missing_run_is_one_line(tmp_path, capsys):
    assert plot_cli.main(["--metrics_jsonl", str(tmp_path / "nope.metrics.jsonl"), "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: metrics log not found")


def _recall_csv(path: Path, probs: dict[str, list[float]]) -> None:
    rows = [{"gap": gap, "recall_prob": p, "chance": 0.01, "trials": 16, "model_type": model,
             "checkpoint": f"{model}.pt", "step": 300, "data": "data/ts.txt"}
            for model, values in probs.items() for gap, p in zip((64, 256), values)]
    write_csv(path, rows, list(rows[0]))


def test_recall_curve_log_axis_with_chance_and_repeat_level(tmp_path, figures):
    csv_path = tmp_path / "lc.csv"
    _recall_csv(csv_path, {"hope": [0.004, 0.0], "baseline": [0.002, 0.001]})  # sub-chance, and a zero
    plots.plot_recall_curve(csv_path, tmp_path / "recall_curve.png")
    fig = figures["recall_curve.png"]
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert "chance (0.01)" in labels and any(label.startswith("repeat-last-value level") for label in labels)
    lo, hi = ax.get_ylim()
    assert 0 < lo < 0.001 and hi >= 1.0  # the sub-chance points and the repeat level (1) are both in view
    assert caption(fig) == "checkpoints: hope.pt (step 300), baseline.pt (step 300); data: data/ts.txt"


def test_binned_plot_marks_attention_spans(tmp_path, figures):
    rows = [{"bin_start": a, "bin_end": b, "loss": 2.0, "ppl": 7.4, "tokens": 10, "model_type": model,
             "checkpoint": f"{model}.pt", "step": 50, "data": "d.txt", "max_len": 128, "attn_window": 32}
            for model in ("hope", "baseline") for a, b in ((0, 64), (64, 128), (128, 256))]
    write_csv(tmp_path / "bp.csv", rows, list(rows[0]))
    plots.plot_binned_ppl(tmp_path / "bp.csv", tmp_path / "binned_ppl.png")
    fig = figures["binned_ppl.png"]
    marks = {line.get_label(): line.get_xdata()[0] for line in fig.axes[0].get_lines()}
    assert marks["HOPE: attn_window = 32"] == pytest.approx(-0.5 + 32 / 64)  # half-way through bar 0
    assert marks["Baseline: max_len = 128"] == pytest.approx(1.5)  # the boundary between bars 1 and 2
    assert "hope.pt (step 50)" in caption(fig) and "data: d.txt" in caption(fig)


def test_older_csvs_without_step_or_spans_still_plot(tmp_path, figures):
    rows = [{"bin_start": 0, "bin_end": 64, "loss": 2.0, "ppl": 7.4, "tokens": 10, "model_type": "hope",
             "checkpoint": "x.pt"}]
    write_csv(tmp_path / "bp.csv", rows, list(rows[0]))
    plots.plot_binned_ppl(tmp_path / "bp.csv", tmp_path / "binned_ppl.png")
    assert caption(figures["binned_ppl.png"]) == "checkpoints: x.pt"


def test_compare_and_heatmap_captions(tmp_path, figures):
    metrics = {"data": "data/ts.txt", "models": {
        name: {"params": 1000, "steps": 200, "checkpoint": f"reports/{name}_checkpoint.pt",
               "train": {"loss": 2.0, "bpb": 2.9, "accuracy": 0.3, "top5_acc": 0.6, "top10_acc": 0.7},
               "val": {"loss": 2.1, "bpb": 3.0, "accuracy": 0.3, "top5_acc": 0.6, "top10_acc": 0.7}}
        for name in ("hope", "baseline")}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    plots.plot_compare_metrics(tmp_path / "metrics.json", tmp_path / "compare_metrics.png")
    assert caption(figures["compare_metrics.png"]) == (
        "checkpoints: reports/hope_checkpoint.pt (step 200), reports/baseline_checkpoint.pt (step 200); "
        "data: data/ts.txt")
    continual = {"domains": ["A: a.txt", "B: b.txt"], "domain_sources": ["a.txt", "b.txt"], "steps_per_stage": 50,
                 "models": {"hope": {"loss_matrix": [[1.0, 2.0], [1.5, 1.0]]}}}
    (tmp_path / "c.json").write_text(json.dumps(continual))
    plots.plot_forgetting_heatmap(tmp_path / "c.json", tmp_path / "forgetting_heatmap.png")
    text = caption(figures["forgetting_heatmap.png"])
    assert "data: a.txt, b.txt" in text and "50 steps per stage" in text


def test_recall_curve_draws_mqar_accuracy_with_chance_and_repeat_levels(tmp_path, figures):
    from hope.cli.track_long import MQAR_COLUMNS

    rows = [{"gap": gap, "accuracy": acc, "first_accuracy": acc, "value_prob": acc / 2, "chance": 1 / 64,
             "repeat": 1 / pairs, "elimination": mqar.elimination_level(pairs), "pairs": pairs, "trials": 64,
             "model_type": model, "checkpoint": f"{model}.pt", "step": 300, "data": "mqar random bytes"}
            for model in ("hope", "baseline") for pairs in (8, 16)
            for gap, acc in zip((0, 32, 256), (0.5, 0.3, 0.0))]
    write_csv(tmp_path / "mqar.csv", rows, MQAR_COLUMNS)
    plots.plot_recall_curve(tmp_path / "mqar.csv", tmp_path / "recall_curve.png")
    ax = figures["recall_curve.png"].axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "symlog"  # gap 0 on the axis
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert "chance (0.0156)" in lines
    assert list(lines["repeat-last-value level (1/P, P = 8 pairs per row)"].get_ydata()) == [0.125, 0.125]
    assert lines["repeat-last-value level (1/P, P = 16 pairs per row)"].get_ydata()[0] == 0.0625
    assert lines["eliminate-answered level (H_P/P, P = 8)"].get_ydata()[0] == pytest.approx(761 / 2240)  # H_8 / 8
    assert list(lines["HOPE, P = 8"].get_xdata()) == [0, 32, 256]
    assert list(lines["Baseline, P = 16"].get_ydata())[:2] == [0.5, 0.3]
    assert "MQAR accuracy" in ax.get_ylabel()
    assert ax.get_ylim()[0] < 1 / 64 and ax.get_ylim()[1] >= 1.0
    # a CSV from before the elimination column (plots.MQAR_COLUMNS: the required ones) still plots, without it
    write_csv(tmp_path / "old.csv", [{k: r[k] for k in plots.MQAR_COLUMNS} for r in rows], plots.MQAR_COLUMNS)
    plots.plot_recall_curve(tmp_path / "old.csv", tmp_path / "old.png")
    labels = [line.get_label() for line in figures["old.png"].axes[0].get_lines()]
    assert "chance (0.0156)" in labels and not [label for label in labels if label.startswith("eliminate")]
