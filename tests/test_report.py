"""Report writers and figures: atomic files, forgetting arithmetic, markdown content, non-blank PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hope.report import plots
from hope.report.writers import (
    atomic_open,
    compute_forgetting,
    continual_report_md,
    experiment_report_md,
    mean_spread,
    seeds_table_md,
    write_csv,
    write_json,
    write_text,
)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECALL_FIELDS = ["gap", "recall_prob", "chance", "trials", "model_type", "checkpoint"]
BINNED_FIELDS = ["bin_start", "bin_end", "loss", "ppl", "tokens", "model_type", "checkpoint"]


def _split_metrics(loss: float, acc: float) -> dict[str, float]:
    return {"loss": loss, "ppl": math.exp(loss), "bpb": loss / math.log(2), "accuracy": acc,
            "top5_acc": min(1.0, acc + 0.3), "top10_acc": min(1.0, acc + 0.4)}


def _metrics(hope_val: float = 1.6, baseline_val: float = 1.7, hf: object = None) -> dict:
    return {
        "command": "hope-run-experiment --config configs/example.yaml --steps 100",
        "config": {"model": {"dim": 64, "depth": 2, "num_heads": 4}, "seq_len": 128, "steps": 100,
                   "batch_size": 8, "lr": 0.001, "optimizer_type": "adamw"},
        "models": {
            "hope": {"params": 812345, "tokens_per_s": 1234.5, "train_time_s": 60.1,
                     "train": _split_metrics(1.5, 0.45), "val": _split_metrics(hope_val, 0.42)},
            "baseline": {"params": 790000, "tokens_per_s": 2000.0, "train_time_s": 40.0,
                         "train": _split_metrics(1.55, 0.44), "val": _split_metrics(baseline_val, 0.40)},
        },
        "hf": hf,
    }


# A loss matrix where forgetting and BWT differ: domain A improves after stage B (1.0 -> 0.8), then worsens.
LOSSES = [[1.0, 3.0, 3.5],
          [0.8, 1.1, 3.2],
          [1.3, 1.5, 0.9]]
# forgetting: A: 1.3 - min(1.0, 0.8) = 0.5; B: 1.5 - 1.1 = 0.4  -> 0.45
# BWT:        A: 1.3 - 1.0 = 0.3;          B: 1.5 - 1.1 = 0.4  -> 0.35


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    recall = []
    for model_type, ckpt, top in [("hope", "runs/hope.pt", 0.95), ("baseline", "runs/base.pt", 0.9),
                                  ("hope", "runs/hope_step500.pt", 0.7)]:
        for k, gap in enumerate([256, 512, 1024, 2048]):
            recall.append({"gap": gap, "recall_prob": top - 0.15 * k, "chance": 1 / 16, "trials": 100,
                           "model_type": model_type, "checkpoint": ckpt})
    binned = []
    for model_type, ppl in [("hope", 3.0), ("baseline", 3.3)]:
        for k, (a, b) in enumerate([(0, 64), (64, 128), (128, 256), (256, 512)]):
            p = ppl - 0.1 * k
            binned.append({"bin_start": a, "bin_end": b, "loss": math.log(p), "ppl": p, "tokens": 500,
                           "model_type": model_type, "checkpoint": f"{model_type}.pt"})
    continual = {"domains": ["A: first third", "B: second third", "C: last third"],
                 "models": {"hope": {"loss_matrix": LOSSES, "avg_forgetting": 0.45, "backward_transfer": 0.35},
                            "baseline": {"loss_matrix": [[v + 0.1 for v in r] for r in LOSSES]}}}
    return {
        "recall_csv": write_csv(tmp_path / "in" / "long_context.csv", recall, RECALL_FIELDS),
        "binned_csv": write_csv(tmp_path / "in" / "binned_ppl.csv", binned, BINNED_FIELDS),
        "metrics_json": write_json(tmp_path / "in" / "metrics.json",
                                   _metrics(hf={"model": "gpt2", "bpb": 2.1, "tokens": 100, "bytes": 400})),
        "continual_json": write_json(tmp_path / "in" / "continual_metrics.json", continual),
    }


def _check_png(path: Path, figsize: tuple[float, float]) -> None:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    img = mpimg.imread(path)  # (H, W, 4) floats in [0, 1]
    assert img.shape[:2] == (round(figsize[1] * plots.DPI), round(figsize[0] * plots.DPI))
    assert img[..., :3].std() > 0.05, f"{path} looks blank"


# ---------------------------------------------------------------- plots


def test_plot_reports_draws_every_figure(inputs: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "reports"
    paths = plots.plot_reports(**inputs, out_dir=out_dir)
    names = [p.name for p in paths]
    assert names == ["recall_curve.png", "binned_ppl.png", "compare_metrics.png", "forgetting_heatmap.png"]
    sizes = [plots.RECALL_FIGSIZE, plots.BINNED_FIGSIZE, plots.COMPARE_FIGSIZE, plots.heatmap_figsize(2)]
    for path, size in zip(paths, sizes):
        _check_png(path, size)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names), "temporary files left behind"


def test_plots_handle_a_single_model_and_point(tmp_path: Path) -> None:
    recall = write_csv(tmp_path / "r.csv", [{"gap": 64, "recall_prob": 0.5, "chance": 0.1, "trials": 10,
                                             "model_type": "hope", "checkpoint": "h.pt"}], RECALL_FIELDS)
    binned = write_csv(tmp_path / "b.csv", [{"bin_start": 0, "bin_end": 64, "loss": 1.0, "ppl": math.e,
                                             "tokens": 10, "model_type": "baseline", "checkpoint": "b.pt"}],
                       BINNED_FIELDS)
    only_hope = _metrics(hf={"skipped": "offline"})
    del only_hope["models"]["baseline"]
    metrics = write_json(tmp_path / "m.json", only_hope)
    paths = plots.plot_reports(recall_csv=recall, binned_csv=binned, metrics_json=metrics, out_dir=tmp_path / "o")
    for path, size in zip(paths, [plots.RECALL_FIGSIZE, plots.BINNED_FIGSIZE, plots.COMPARE_FIGSIZE]):
        _check_png(path, size)


def test_missing_or_empty_inputs_fail_clearly(inputs: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "reports"
    missing = tmp_path / "does_not_exist.csv"
    with pytest.raises(FileNotFoundError, match="does_not_exist.csv"):
        plots.plot_reports(recall_csv=missing, metrics_json=inputs["metrics_json"], out_dir=out_dir)
    assert not out_dir.exists(), "inputs are checked before anything is drawn"

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        plots.plot_reports(recall_csv=empty, out_dir=out_dir)

    header_only = write_csv(tmp_path / "header_only.csv", [], BINNED_FIELDS)
    with pytest.raises(ValueError, match="header_only.csv.*no data rows"):
        plots.plot_binned_ppl(header_only, out_dir / "x.png")

    wrong = write_csv(tmp_path / "wrong.csv", [{"gap": 1}], ["gap"])
    with pytest.raises(ValueError, match="lacks column"):
        plots.plot_recall_curve(wrong, out_dir / "x.png")

    with pytest.raises(ValueError, match="no input"):
        plots.plot_reports(out_dir=out_dir)


# ---------------------------------------------------------------- atomic writers


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    with pytest.raises(ValueError):
        write_csv(path, [{"unknown_column": 1}], ["gap"])
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write('{"partial": ')
            raise RuntimeError("crash halfway through a write")
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"], "temporary files left behind"


def test_writers_round_trip(tmp_path: Path) -> None:
    assert write_text(tmp_path / "a" / "b.md", "# hi\n").read_text() == "# hi\n"
    rows = [{"gap": 1, "recall_prob": 0.5}, {"gap": 2, "recall_prob": 0.25}]
    text = write_csv(tmp_path / "c.csv", rows, ["gap", "recall_prob"]).read_text()
    assert text == "gap,recall_prob\n1,0.5\n2,0.25\n"
    assert json.loads(write_json(tmp_path / "d.json", {"x": [1, 2]}).read_text()) == {"x": [1, 2]}


# ---------------------------------------------------------------- forgetting and markdown


def test_compute_forgetting_on_a_hand_computed_matrix() -> None:
    forgetting, bwt = compute_forgetting(LOSSES)
    assert forgetting == pytest.approx(0.45)
    assert bwt == pytest.approx(0.35)
    # Later stages that only help give negative forgetting and BWT (losses: negative = improved).
    forgetting, bwt = compute_forgetting([[2.0, 3.0], [1.5, 1.0]])
    assert (forgetting, bwt) == (pytest.approx(-0.5), pytest.approx(-0.5))
    with pytest.raises(ValueError, match="at least 2"):
        compute_forgetting([[1.0, 2.0]])


def test_mean_spread_and_seeds_table_on_known_values() -> None:
    assert mean_spread([2.0, 4.0, 9.0]) == (pytest.approx(5.0), pytest.approx(math.sqrt(13.0)))  # (9+1+16)/2
    assert mean_spread([1.5]) == (1.5, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_spread([])

    def run(loss: float, tok_s: float) -> dict:
        return {"final": True, "tokens_per_s": tok_s,
                "val": {"loss": loss, "bpb": loss / math.log(2), "accuracy": 0.5, "top5_acc": 0.8, "top10_acc": 0.9}}

    table = seeds_table_md({"HOPE": [run(1.7, 500.0), run(1.8, 700.0)], "baseline": [run(1.6, 2000.0)]})
    lines = table.splitlines()
    assert lines[0].startswith("| model | seeds | val loss |") and len(lines) == 4
    assert lines[2].startswith("| HOPE | 2 | 1.7500 ± 0.0707 | 2.5247 ± 0.1020 | 50.00% ± 0.00% |")
    assert lines[2].endswith("| 600 ± 141 |")
    assert lines[3].startswith("| baseline | 1 | 1.6000 ± 0.0000 |")
    with pytest.raises(ValueError, match="no runs"):
        seeds_table_md({"HOPE": []})


def test_experiment_report_names_the_better_model() -> None:
    md = experiment_report_md(_metrics(hope_val=1.6, baseline_val=1.7, hf={"skipped": "HF_HUB_OFFLINE=1"}))
    assert "| metric | HOPE train | Baseline train | HOPE val | Baseline val |" in md
    assert "| loss (nats/byte) | 1.5000 | 1.5500 | 1.6000 | 1.7000 |" in md
    assert "| accuracy (top-1) | 45.00% | 44.00% | 42.00% | 40.00% |" in md
    # 0.1 lower, as a share of the baseline's 1.7: 5.88 %.
    assert "HOPE is better on validation loss" in md
    assert "lower by 0.1000 nats/byte (5.88% lower)" in md
    assert "hope-run-experiment --config configs/example.yaml --steps 100" in md
    assert "| `model.dim` | `64` |" in md and "| `optimizer_type` | `adamw` |" in md
    assert "812,345" in md
    assert "skipped (HF_HUB_OFFLINE=1)" in md

    md = experiment_report_md(_metrics(hope_val=2.0, baseline_val=1.5,
                                       hf={"model": "gpt2", "bpb": 1.25, "tokens": 10, "bytes": 40}))
    assert "Baseline is better on validation loss" in md
    assert "lower by 0.5000 nats/byte (25.00% lower)" in md
    assert "`gpt2` scores 1.2500 bits/byte" in md


def test_continual_report_tables_and_verdict() -> None:
    md = continual_report_md({
        "domains": ["A: one", "B: two", "C: three"],
        "models": {"hope": {"loss_matrix": LOSSES},  # forgetting recomputed from the matrix
                   "baseline": {"loss_matrix": [[v + 0.1 for v in r] for r in LOSSES[:2]] + [[1.6, 1.7, 1.0]],
                                "avg_forgetting": 0.65, "backward_transfer": 0.6}},
    })
    assert "| after training on B: two | 0.8000 | 1.1000 | 3.2000 |" in md
    assert "Average forgetting: +0.4500 nats/byte; backward transfer: +0.3500 nats/byte." in md
    assert "**HOPE forgets less**: average forgetting +0.4500 vs +0.6500" in md


# ----------------------------------------------------------------------------- report wording (issue 15, item 8)


def test_experiment_header_names_the_baseline_shape_and_amp_off():
    md = experiment_report_md({"config": {"depth": 2, "amp": False, "amp_dtype": "bf16"},
                               "baseline_config": {"depth": 4, "ff_mult": 4.0}, "models": {}})
    assert "| `depth` | `2` |" in md  # the user's depth, as given
    assert "`depth 4, ff_mult 4.0` (chosen to match HOPE's parameter count)" in md
    assert "| `amp` | `off` |" in md and "`bf16 (unused: amp off)`" in md
    assert "`False`" not in md


@pytest.mark.parametrize("hope_f, base_f, verdict", [
    (-0.02, -0.01, "**Neither model forgot**"),
    (-0.02, 0.30, "**Only Baseline forgot**"),
    (0.10, 0.30, "**HOPE forgets less**"),
])
def test_continual_verdict_says_when_nobody_forgot(hope_f, base_f, verdict):
    models = {name: {"loss_matrix": [[1.0, 2.0], [1.0, 1.0]], "avg_forgetting": f, "backward_transfer": f}
              for name, f in (("hope", hope_f), ("baseline", base_f))}
    md = continual_report_md({"domains": ["A", "B"], "models": models})
    assert verdict in md
    assert ("forgets less" in md) == (verdict == "**HOPE forgets less**")
