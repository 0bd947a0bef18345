"""Smoke test of the benchmark suite at tiny sizes (`python -m bench --tiny`), so that it cannot rot.

Not a benchmark: nothing here asserts a speed. It runs every section in-process on tiny models (the
fresh-process cases through their worker functions, and one real subprocess), renders the table and writes the
JSON. Takes a few seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/` lives at the repository root, not in the package
from bench import cases, suite  # noqa: E402
from bench.measure import run_worker, state_bytes  # noqa: E402
from hope.config import config_to_dict, load_config  # noqa: E402


@pytest.fixture(scope="module")
def tiny_results() -> dict:
    # torch.compile takes a minute or more even at tiny sizes: its section has its own slow test
    sections = tuple(s for s in suite.SECTIONS if s != "compile")
    return suite.run("tiny", sections=sections, subprocesses=False, log=lambda _msg: None)


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(suite.ROOT / "configs" / "example.yaml", [dict(suite.MODES["tiny"].overrides)])


def test_tiny_suite_runs_every_section(tiny_results: dict, tmp_path) -> None:
    r = tiny_results
    assert [row["seq_len"] for row in r["ops"]] == list(suite.MODES["tiny"].ops_seqs)
    for row in r["ops"]:
        assert row["hope"]["ops"] > row["hope"]["compute_ops"] > 0 and row["baseline"]["ops"] > 0
        assert row["ratio"] == row["hope"]["ops"] / row["baseline"]["ops"]
    assert r["targets"] == []  # tiny mode measures none of the targets' configurations (seq_len 256, chunk 16, ...)
    assert r["ops"][0]["hope"]["generation_ops_per_byte"] > r["ops"][0]["baseline"]["generation_ops_per_byte"] > 0
    assert "generation_ops_per_byte" not in r["ops"][1]["hope"]
    assert [row["seq_len"] for row in r["train"]] == list(suite.MODES["tiny"].train_seqs)
    for row in r["train"]:
        assert row["hope"]["tokens_per_s"] > 0 and row["baseline"]["tokens_per_s"] > 0
        assert row["ratio"] > 0 and row["hope"]["model_type"] == "hope" and row["baseline"]["model_type"] == "baseline"
        assert abs(row["baseline"]["params"] - row["hope"]["params"]) <= 0.10 * row["hope"]["params"]
    assert [row["chunk"] for row in r["op"]] == list(suite.MODES["tiny"].op_chunks)
    assert all(row["fwd"]["speedup"] > 0 for row in r["op"])
    assert [row["chunk"] for row in r["op"] if "fwd_bwd" in row] == list(suite.MODES["tiny"].op_bwd_chunks)
    assert "skipped" in r["peer"] or r["peer"]["ratio"] > 0
    assert r["train_memory"] == {"skipped": "needs subprocesses"} and "skipped" in r["generate"]
    text = suite.table(r)
    assert "Dispatched aten ops per training step" in text
    assert "Training throughput" in text and "Memory update op" in text and "Peer" in text and "Store/retrieve" in text
    assert {row["kind"] for row in r["store"]} == {"linear", "mlp"} and all(0 <= row["top1"] <= 1 for row in r["store"])
    out = tmp_path / "tiny.json"
    out.write_text(json.dumps(r))  # JSON-ready: no tensors or other objects left in the results
    assert json.loads(out.read_text())["meta"]["mode"] == "tiny"


def test_op_counter_counts_forward_and_backward_independent_of_batch(tiny_cfg) -> None:
    """The ops-per-step figure: forward + backward both counted (more than the forward alone), the same at
    batch 2 and 3, and the ratio target read at seq_len 256."""
    cfg = cases.pair(cases.at_seq(tiny_cfg, 16))
    for c in cfg.values():
        counts = [cases.count_step_ops(c, batch_size=b)["ops"] for b in (2, 3)]
        assert counts[0] == counts[1]
        model = cases.build_model(c).train()
        x = torch.randint(0, 256, (2, 17))
        model(x[:, :-1], x[:, 1:])
        with cases.OpCounter() as forward_only:
            model(x[:, :-1], x[:, 1:])
        assert 0 < forward_only.count < counts[0]
    fake = {"ops": [{"seq_len": s, "ratio": r, "hope": {"ops": n, "optimizer_ops": 9}, "baseline": {"ops": 100}}
                    for s, r, n in ((256, 5.0, 500), (1024, 4.0, 400))]}
    targets = {t["target"]: t for t in suite.check_targets(fake)}
    assert targets["ops_ratio_256"]["met"] and not targets["ops_ratio_256_moonshot"]["met"]  # 5x: <= 6, > 4
    assert targets["optimizer_ops"]["met"] and targets["optimizer_ops"]["value"] == 9


def test_optimizer_step_is_a_few_fused_launches(tiny_cfg) -> None:
    """The guarded optimiser step of training (fused AdamW, the skip decided by its found_inf input) dispatches a
    handful of ops for the whole model, not a clone/where/copy per tensor; a skipped step leaves every parameter
    and moment as it was."""
    cfg = cases.at_seq(tiny_cfg, 16)
    result = cases.count_step_ops(cfg)
    assert result["tensors"] > 20 and result["optimizer_ops"] <= 20


def test_workers_in_process(tiny_cfg) -> None:
    """The fresh-process cases, called in this process: training peak memory and a short generation."""
    cfg = cases.pair(cases.at_seq(tiny_cfg, 32))
    for name, c in cfg.items():
        mem = cases.worker_train_memory({"config": config_to_dict(c), "device": "cpu"})
        assert mem["model_type"] == name and mem["peak_rss_mib"] > 0 and mem["step_peak_rss_mib"] >= 0
        gen = cases.worker_generate({"config": config_to_dict(c), "device": "cpu", "marks": [4, 12]})
        assert [row["bytes"] for row in gen["rows"]] == [4, 12]
        assert all(row["ms_per_token"] > 0 and row["state_mib"] > 0 for row in gen["rows"])


def test_generation_state_is_flat_for_hope_and_slides_for_the_baseline(tiny_cfg) -> None:
    """What the generation rows report: HOPE's carried state has a fixed size; the baseline's KV cache grows to
    max_len - 1 tokens and then slides (tiny max_len 32, so marks 8 -> 40 cross it)."""
    sizes = {}
    for name, c in cases.pair(tiny_cfg).items():
        gen = cases.worker_generate({"config": config_to_dict(c), "device": "cpu", "marks": [8, 40, 48],
                                     "prompt_len": 1})
        sizes[name] = [row["state_mib"] for row in gen["rows"]]
    assert sizes["hope"][0] == sizes["hope"][1] == sizes["hope"][2]
    assert sizes["baseline"][0] < sizes["baseline"][1] == sizes["baseline"][2]


def test_one_real_subprocess(tiny_cfg) -> None:
    """`bench.worker` as the suite runs it: a fresh interpreter printing one JSON line."""
    c = cases.pair(tiny_cfg)["baseline"]
    out = run_worker({"kind": "generate", "config": config_to_dict(c), "device": "cpu", "marks": [2]}, timeout=120)
    assert "error" not in out, out
    assert out["rows"][0]["bytes"] == 2 and out["rows"][0]["peak_rss_mib"] > 0


def test_peer_skips_cleanly_without_titans_pytorch(monkeypatch, tiny_cfg) -> None:
    monkeypatch.setattr(cases, "peer_available", lambda: False)
    out = cases.peer_case(tiny_cfg, 16, 1, torch.device("cpu"), 1, memory=False)
    assert out == {"skipped": cases.PEER_MISSING}
    assert "skipped" in suite.table({"meta": {"mode": "tiny", "machine": suite.machine(torch.device("cpu"), 1)},
                                     "peer": out})


def test_state_bytes_counts_nested_tensors() -> None:
    state = {"a": torch.zeros(3, dtype=torch.float32), "b": [torch.zeros(2, dtype=torch.float64), None, 5],
             "c": (torch.zeros(1, dtype=torch.int8),)}
    assert state_bytes(state) == 3 * 4 + 2 * 8 + 1


@pytest.mark.slow
def test_compile_section_times_both_models() -> None:
    r = suite.run("tiny", sections=("compile",), log=lambda _msg: None)
    for name in ("hope", "baseline"):
        row = r["compile"][name]
        assert row["compile_s"] > 0 and row["eager_step_s"] > 0 and row["compiled_step_s"] > 0 and row["speedup"] > 0
    assert [t["target"] for t in r["targets"]] == ["compile_time", "compile_speedup"]
    assert "torch.compile" in suite.table(r)
