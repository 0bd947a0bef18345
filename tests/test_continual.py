"""hope-continual on a tiny run: domains, the 3x3 loss matrices, forgetting, reports, and the heatmap from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hope.cli import continual, plot_reports
from hope.data.corpus import DataError, load_bytes, synthetic_corpus
from hope.experiments.continual import split_domains
from hope.report.writers import compute_forgetting

TINY_FLAGS = ["--seq_len", "32", "--batch_size", "2", "--device", "cpu",
              "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
              "--set", "attn_window=16", "--set", "memory_capacity=8", "--set", "top_k=2",
              "--set", "eval_batches=1", "--set", "warmup_steps=1"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_bytes(synthetic_corpus(3000, seed=4).numpy().tobytes())
    return path


def test_thirds_partition_the_data(data_file: Path) -> None:
    raw = load_bytes(data_file)
    domains = split_domains(str(data_file))
    assert [name.split(":")[0] for name, _ in domains] == ["A", "B", "C"]
    joined = torch.cat([torch.cat([c.train, c.val]) for _, c in domains])
    assert torch.equal(joined, raw)  # contiguous, in order, nothing dropped
    for _, corpus in domains:  # each domain split 90/10
        assert len(corpus.train) == int(0.9 * (len(corpus.train) + len(corpus.val)))


def test_separate_files_are_separate_domains(tmp_path: Path) -> None:
    paths = []
    for i, text in enumerate(["aaaa " * 100, "bbbb " * 100, "cccc " * 100]):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(text)
    domains = split_domains(",".join(map(str, paths)))
    assert [name for name, _ in domains] == ["A: 0.txt", "B: 1.txt", "C: 2.txt"]
    assert [c.name for _, c in domains] == [str(p) for p in paths]
    assert set(domains[1][1].train.tolist()) == {ord("b"), ord(" ")}
    with pytest.raises(DataError):
        split_domains(f"{paths[0]},{tmp_path / 'missing.txt'}")


def test_continual_writes_matrices_and_reports(tmp_path: Path, data_file: Path, capsys) -> None:
    out_dir = tmp_path / "reports"
    argv = ["--data", str(data_file), *TINY_FLAGS, "--steps_per_stage", "2", "--out_dir", str(out_dir)]
    rc = continual.main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    metrics = json.loads((out_dir / "continual_metrics.json").read_text())
    assert len(metrics["domains"]) == 3 and metrics["steps_per_stage"] == 2
    assert set(metrics["models"]) == {"hope", "baseline"}
    for name, m in metrics["models"].items():
        matrix = m["loss_matrix"]
        assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
        assert all(0 < v < 10 for row in matrix for v in row)
        forgetting, bwt = compute_forgetting(matrix)
        assert m["avg_forgetting"] == pytest.approx(forgetting) and m["backward_transfer"] == pytest.approx(bwt)
        assert len(m["initial_loss"]) == 3
    hope_p, base_p = metrics["models"]["hope"]["params"], metrics["models"]["baseline"]["params"]
    assert abs(base_p - hope_p) <= 0.10 * hope_p
    report = (out_dir / "continual_report.md").read_text()
    assert "HOPE" in report and "Baseline" in report and "fresh optimiser" in report
    assert "hope-continual " + " ".join(argv) in report

    # The heatmap is drawn from the file this command wrote.
    rc = plot_reports.main(["--continual_json", str(out_dir / "continual_metrics.json"), "--out_dir", str(out_dir)])
    printed = capsys.readouterr().out.split()
    assert rc == 0 and printed == [str(out_dir / "forgetting_heatmap.png")]
    assert (out_dir / "forgetting_heatmap.png").read_bytes().startswith(b"\x89PNG")


def test_bad_inputs_exit_2(tmp_path: Path, data_file: Path, capsys) -> None:
    for argv, words in [
        (["--data", f"{data_file},{tmp_path / 'missing.txt'}", "--steps_per_stage", "1"], "not found"),
        (["--data", str(data_file), "--steps_per_stage", "0"], "steps_per_stage"),
    ]:
        rc = continual.main([*argv, *TINY_FLAGS, "--out_dir", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error:") and words in err and "\n" not in err
    short = tmp_path / "short.txt"
    short.write_text("x" * 200)  # each third: 66 bytes, validation 7 < seq_len + 1
    rc = continual.main(["--data", str(short), "--steps_per_stage", "1", *TINY_FLAGS, "--out_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "fewer than" in err
