"""The measurement scripts behind docs/results.md and docs/architecture.md run, and keep their promises."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hope.data.corpus import load_corpus

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_stdlib_corpus_is_a_collection_split_by_document(tmp_path, capsys):
    """A prepared collection: each file one document followed by a form feed line, validation documents by the
    collection rule (a tenth of the bytes, by hash of the relative path), never seen in training."""
    from hope.data.corpus import index_path, validation_documents

    build = _script("build_stdlib_corpus")
    src = tmp_path / "lib"
    (src / "site-packages").mkdir(parents=True)
    for i in range(40):
        (src / f"m{i:02d}.py").write_bytes(f"# module {i}\n".encode() * (200 + 37 * i))
    (src / "small.py").write_text("x = 1\n")  # under --min_bytes: left out
    (src / "site-packages" / "big.py").write_bytes(b"# vendored\n" * 1000)  # left out
    out = tmp_path / "corpus.txt"
    assert build.main(["--out", str(out), "--stdlib", str(src), "--min_bytes", "1024"]) == 0
    corpus = load_corpus(out)
    docs = build.documents(src, 1024)
    assert len(docs) == 40 and len(corpus.train_docs) + len(corpus.val_docs) == 40
    held = validation_documents([d.name for d in docs], [d.size for d in docs])
    assert set(corpus.val_docs.names) == {docs[i].name for i in held}
    raw = corpus.val.numpy().tobytes()
    for name, lo, hi in zip(corpus.val_docs.names, corpus.val_docs.offsets[:-1], corpus.val_docs.offsets[1:]):
        assert raw[lo:hi] == (src / name).read_bytes() + build.SEPARATOR  # whole documents
    assert 0 < len(corpus.val) <= 0.1 * (len(corpus.train) + len(corpus.val))
    assert "40 files" in capsys.readouterr().out
    assert build.main(["--out", str(out), "--stdlib", str(src)]) == 2  # never overwrites
    out.unlink()
    assert build.main(["--out", str(out), "--stdlib", str(src)]) == 2  # nor its index
    assert index_path(out).exists()


def test_memory_health_reports_every_block(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question. " * 40)
    assert _script("memory_health").main(["--data", str(text), "--bytes", "512"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["block"] for r in rows] == [0, 1]
    for r in rows:
        assert r["moved_memory"] > 0 and 0 <= r["abs_cos_k_v"] < 0.5 and r["surprise_std"] > 0
        # at init: eta = sigmoid(0 +- small) ~ 0.5, retention sigmoid(8.5) = 1 - 2.0e-4: half-life ~3400 bytes
        assert 0.45 < r["mean_eta"] < 0.55 and 3000 < r["retention_half_life"] < 3900
        # per head (4): overwriting at rate ~0.4 in 32 dims halves a write within ~60 bytes, long before retention
        assert len(r["rate_by_head"]) == len(r["memory_half_life_by_head"]) == 4
        for rate, kept, both in zip(r["rate_by_head"], r["retention_half_life_by_head"],
                                    r["memory_half_life_by_head"]):
            assert 0 < rate < 1 and both < kept
            assert both == pytest.approx(math.log(0.5) / math.log(0.5 ** (1 / kept) * (1 - rate / 32)), rel=1e-2)


def test_gpu_check_stops_without_a_gpu_and_prints_its_table(tmp_path):
    """scripts/gpu_check.sh: without CUDA it stops at once with a clear message (exit 2) and leaves nothing behind;
    with its budget spent (a CPU run that runs no step) it still prints the table, every step FAILED, and exits 1.
    The CPU dry run of every step (a few minutes) is described in the script's header."""
    script = ROOT / "scripts" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    if not torch.cuda.is_available():
        r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "no CUDA GPU is visible" in r.stderr, r.stderr
        assert "torch.cuda.is_available() = False" in r.stdout and not list(tmp_path.iterdir())
    r = subprocess.run(["bash", str(script)], env={**env, "HOPE_GPU_CHECK_DEVICE": "cpu", "HOPE_GPU_CHECK_BUDGET_S": "0"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| step | status | wall s | key figure | command |"
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == [
        "train_bf16", "train_fp16", "resume", "generate", "tests_cuda", "bench_train", "bench_ops", "bench_generate"]
    assert all(" | FAILED | 0.0 | not run: the 0 s budget is spent | `" in row for row in rows[1:])
    assert "--amp fp16" in rows[2] and "-m pytest -q -s -m cuda" in rows[5] and "8 step(s) FAILED" in r.stdout


def test_paired_seeds_pairs_by_seed_and_calls_ties(tmp_path, capsys):
    """scripts/paired_seeds.py: per bin the mean and sd over seeds; the paired difference's standard error is the
    sd of the differences / sqrt(n), so a constant offset under a large seed spread is still a lead, and a
    difference under twice its se is a tie."""
    def write(name, losses):
        path = tmp_path / f"{name}.csv"
        rows = ["bin_start,bin_end,loss,model_type,checkpoint"]
        rows += [f"{a},{b},{v},hope,{name}.pt" for (a, b), v in zip([(0, 64), (64, 256)], losses)]
        path.write_text("\n".join(rows) + "\n")
        return str(path)

    base = [write(f"b{i}", [2.0 + s, 1.5 + s]) for i, s in enumerate([0.0, 0.1, 0.2])]
    # bin 1: exactly 0.05 below each seed's baseline (a lead); bin 2: +-0.03 around it (a tie)
    hope = [write(f"h{i}", [1.95 + s, 1.5 + s + e]) for i, (s, e) in enumerate([(0.0, 0.03), (0.1, -0.03), (0.2, 0.0)])]
    script = _script("paired_seeds")
    assert script.main(["--ref", "baseline", "HOPE=" + ",".join(hope), "baseline=" + ",".join(base)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| | [0, 64) | [64, 256) |"
    assert out[3] == "| baseline (n = 3) | 2.1000 ± 0.1000 | 1.6000 ± 0.1000 |"
    assert out[4] == "| HOPE - baseline, paired (± se) | -0.0500 ± 0.0000 (better) | +0.0000 ± 0.0173 (tie) |"
    assert script.main(["--ref", "baseline", "HOPE=" + hope[0], "baseline=" + ",".join(base)]) == 0
    assert "(one seed)" in capsys.readouterr().out
    assert script.main(["HOPE=" + ",".join(hope), "baseline=" + base[0]]) == 2
    assert script.main(["HOPE=" + str(tmp_path / "missing.csv")]) == 2


def test_memory_health_sees_timescale_heads(tmp_path):
    """With memory_timescales, each head's retention half-life is at least its timescale and its rate at most
    its ceiling (the layer's own rules, read through the script)."""
    from hope.config import Config, validate
    from hope.models import build_model

    cfg = Config(dim=32, depth=1, num_heads=4, seq_len=64, max_len=64, memory_timescales=[0, 64, 512, 4096])
    validate(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    text = torch.tensor(list(b"To be, or not to be, that is the question. " * 12))
    (row,) = _script("memory_health").health(model, text)
    kept, rates = row["retention_half_life_by_head"], row["rate_by_head"]
    assert all(k >= t for k, t in zip(kept[1:], [64, 512, 4096]))
    assert all(r <= 8 * math.log(2) / t + 1e-6 for r, t in zip(rates[1:], [64, 512, 4096]))
