"""The report pipeline of the manual, tiny: run-experiment -> track-long / eval-binned -> plot-reports.

Also: every command of this part has a "Run as:" docstring and `--help`, and bad inputs end with one line, exit 2.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hope.cli import continual, eval_binned, eval_long, plot_reports, run_experiment, track_long
from hope.data.corpus import synthetic_corpus

TINY_FLAGS = ["--seq_len", "32", "--batch_size", "2", "--steps", "2", "--device", "cpu",
              "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
              "--set", "attn_window=16", "--set", "memory_capacity=8", "--set", "top_k=2",
              "--set", "eval_batches=1", "--set", "warmup_steps=1"]
COMMANDS = [run_experiment, eval_long, track_long, eval_binned, continual, plot_reports]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """reports/ as the one-key pipeline leaves it (steps 3-4 of the manual), on a tiny config."""
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "text.txt"
    data.write_bytes(synthetic_corpus(6000, seed=2).numpy().tobytes())
    out = root / "reports"
    assert run_experiment.main(["--data", str(data), *TINY_FLAGS, "--out_dir", str(out), "--hf_model", "none"]) == 0
    ckpts = f"{out / 'hope_checkpoint.pt'},{out / 'baseline_checkpoint.pt'}"
    assert track_long.main(["--ckpt", ckpts, "--gaps", "8,64", "--trials", "2", "--device", "cpu",
                            "--out", str(out / "long_context.csv")]) == 0  # filler: the checkpoints' own data
    assert eval_binned.main(["--ckpt", ckpts, "--data", str(data), "--lengths", "16,32,64", "--windows", "2",
                             "--device", "cpu", "--out", str(out / "binned_ppl.csv")]) == 0
    return out


def test_plot_reports_draws_the_three_figures(reports: Path, capsys) -> None:
    capsys.readouterr()
    figures = reports / "figures"
    rc = plot_reports.main(["--recall_csv", str(reports / "long_context.csv"), "--binned_csv",
                            str(reports / "binned_ppl.csv"), "--metrics_json", str(reports / "metrics.json"),
                            "--out_dir", str(figures)])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.split()
    expected = [figures / name for name in ("recall_curve.png", "binned_ppl.png", "compare_metrics.png")]
    assert printed == [str(p) for p in expected]
    for path in expected:
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000


def test_pipeline_files_have_the_documented_format(reports: Path) -> None:
    with (reports / "long_context.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["model_type"], r["gap"]) for r in rows} == {(m, g) for m in ("hope", "baseline") for g in ("8", "64")}
    with (reports / "binned_ppl.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sum(int(r["tokens"]) for r in rows) == 2 * 2 * 64
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["hf"] is None  # --hf_model none: not run, and the report says so
    assert "not run" in (reports / "experiment_report.md").read_text()


def test_missing_inputs_exit_2_with_one_line(reports: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    cases = [
        (["--recall_csv", str(tmp_path / "nope.csv"), "--metrics_json", str(reports / "metrics.json")], "not found"),
        (["--out_dir", str(tmp_path)], "nothing to plot"),
    ]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    cases.append((["--metrics_json", str(bad_json), "--out_dir", str(tmp_path)], "not valid JSON"))
    for argv, words in cases:
        rc = plot_reports.main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error:") and words in err and "\n" not in err
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_commands_document_themselves(command, capsys) -> None:
    assert "Run as:" in command.__doc__
    with pytest.raises(SystemExit) as info:
        command.main(["--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out
