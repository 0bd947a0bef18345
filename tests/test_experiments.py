"""hope-run-experiment end to end on a tiny config: both models trained the same way, reports, HF reference.

The Hugging Face reference is a 2-layer GPT-2 with a tokenizer trained here and saved to a temp folder (as in
tests/test_hf.py): nothing is downloaded, the Hub is never contacted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_tiny_gpt2

from hope.checkpoint import load_checkpoint
from hope.cli import run_experiment
from hope.config import load_config
from hope.experiments.compare import matched_configs
from hope.models import count_params
from hope.runs import metrics_log_path

TINY_FLAGS = ["--seq_len", "32", "--batch_size", "2", "--steps", "2", "--device", "cpu",
              "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
              "--set", "attn_window=16", "--set", "memory_capacity=8", "--set", "top_k=2",
              "--set", "eval_batches=1", "--set", "warmup_steps=1"]
SPLIT_KEYS = {"loss", "ppl", "bpb", "accuracy", "top5_acc", "top10_acc"}
LINES = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
         "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text("\n".join(LINES * 60))
    return path


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_gpt2")
    save_tiny_gpt2(out, LINES, n_layer=1)
    return out


def test_run_experiment_end_to_end(tmp_path: Path, data_file: Path, tiny_gpt2: Path, capsys) -> None:
    out_dir = tmp_path / "reports"
    argv = ["--data", str(data_file), *TINY_FLAGS, "--out_dir", str(out_dir), "--hf_model", str(tiny_gpt2),
            "--hf_max_tokens", "100"]
    rc = run_experiment.main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "HF comparison skipped" not in captured.out + captured.err

    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert {"command", "config", "models", "hf"} <= set(metrics)
    assert metrics["command"] == " ".join(["hope-run-experiment", *argv])
    assert metrics["config"]["model_type"] == "hope" and metrics["config"]["dim"] == 32
    assert set(metrics["models"]) == {"hope", "baseline"}
    for name, m in metrics["models"].items():
        assert {"params", "tokens_per_s", "train_time_s", "train", "val"} <= set(m)
        assert SPLIT_KEYS <= set(m["train"]) and SPLIT_KEYS <= set(m["val"])
        assert m["tokens_per_s"] > 0 and m["steps"] == 2
        ckpt = load_checkpoint(out_dir / f"{name}_checkpoint.pt")
        assert ckpt["model_type"] == name and ckpt["step"] == 2 and ckpt["params"] == m["params"]
        log = [json.loads(line) for line in (out_dir / f"{name}_checkpoint.metrics.jsonl").read_text().splitlines()]
        final_val = [r for r in log if r.get("final") and r["split"] == "val"][-1]
        assert final_val["loss"] == pytest.approx(m["val"]["loss"])
        assert m["metrics_log"] == str(out_dir / f"{name}_checkpoint.metrics.jsonl")
        assert (out_dir / f"{name}_checkpoint.config.yaml").is_file()
    hope_p, base_p = metrics["models"]["hope"]["params"], metrics["models"]["baseline"]["params"]
    assert abs(base_p - hope_p) <= 0.10 * hope_p
    assert f"{hope_p:,}" in captured.out and f"{base_p:,}" in captured.out  # both counts printed

    hf = metrics["hf"]
    assert hf["model"] == str(tiny_gpt2) and hf["tokens"] == 100 and hf["bpb"] > 0

    report = (out_dir / "experiment_report.md").read_text()
    assert "HOPE" in report and "Baseline" in report
    assert metrics["command"] in report
    assert str(tiny_gpt2) in report and "bits/byte" in report


def test_offline_hf_is_skipped_and_download_fetches(tmp_path: Path, data_file: Path, monkeypatch, capsys) -> None:
    import hope.data.download as download

    fetched = []

    def fake_fetch(url: str, out, timeout: float = 30.0):  # --download without touching the network
        fetched.append(url)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(data_file.read_bytes())
        return Path(out), data_file.stat().st_size, "0" * 64

    monkeypatch.setattr(download, "fetch", fake_fetch)
    target = tmp_path / "data" / "tiny_shakespeare.txt"
    out_dir = tmp_path / "reports"
    rc = run_experiment.main(["--data", str(target), "--download", *TINY_FLAGS, "--out_dir", str(out_dir),
                              "--hf_model", "no-such-org/no-such-model-xyz"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert fetched == [download.TINY_SHAKESPEARE_URL] and target.is_file()
    skipped = [line for line in (captured.out + captured.err).splitlines() if "HF comparison skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("HF comparison skipped: ")
    assert "Traceback" not in captured.err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics["hf"]) == {"skipped"} and "no-such-model-xyz" in metrics["hf"]["skipped"]
    assert set(metrics["models"]) == {"hope", "baseline"}
    assert "skipped" in (out_dir / "experiment_report.md").read_text()


def test_matched_configs_share_everything_but_shape(tmp_path: Path) -> None:
    cfg = load_config(None, [dict(dim=32, depth=2, num_heads=2, seq_len=32, max_len=64, attn_window=16,
                                  memory_capacity=8, top_k=2, lr=3e-3, steps=7, seed=5)])
    configs = matched_configs(cfg, tmp_path)
    hope, base = configs["hope"], configs["baseline"]
    assert hope.model_type == "hope" and base.model_type == "baseline"
    for key in ("dim", "num_heads", "max_len", "seq_len", "lr", "steps", "seed", "batch_size", "warmup_steps"):
        assert getattr(hope, key) == getattr(base, key), key
    assert metrics_log_path(hope.out) != metrics_log_path(base.out)  # separate metrics logs
    assert Path(hope.out) == tmp_path / "hope_checkpoint.pt" and Path(base.out) == tmp_path / "baseline_checkpoint.pt"
    assert abs(count_params(base) - count_params(hope)) <= 0.10 * count_params(hope)


def test_missing_data_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    rc = run_experiment.main(["--data", str(tmp_path / "nope.txt"), *TINY_FLAGS, "--out_dir", str(tmp_path / "r"),
                              "--hf_model", "none"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "not found" in err and "\n" not in err
    assert not (tmp_path / "r" / "metrics.json").exists()

