"""Long-context recall and binned perplexity: exact against direct computations, streaming past max_len, CLI errors.

Models are tiny and untrained (dim 32, one block, seq_len = max_len = 32): the numbers are meaningless, but every
quantity is checked against an independent computation, which is what the commands must get right.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest
import torch

from hope.checkpoint import CheckpointError, load_model, save_checkpoint
from hope.cli import eval_binned, eval_long, track_long
from hope.config import config_to_dict, load_config
from hope.data.corpus import load_corpus, synthetic_corpus
from hope.data.recall import chance_level, make_episode
from hope.errors import HopeError
from hope.eval import long as long_eval
from hope.eval.binned import binned_loss, bins_of, parse_lengths
from hope.eval.long import parse_gaps, recall_prob, write_distance
from hope.models import build_model

TINY = dict(dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2, steps=2,
            memory_capacity=8, top_k=2, device="cpu", update_frequencies={"mem_write": 8, "error_update": 16})
MAX_LEN = 32


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_bytes(synthetic_corpus(8000, seed=3).numpy().tobytes())
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory, data_file: Path) -> dict[str, Path]:
    """Untrained tiny HOPE and baseline checkpoints (random init differs per model type)."""
    out = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for model_type in ("hope", "baseline"):
        cfg = load_config(None, [dict(TINY, model_type=model_type, data=str(data_file))])
        torch.manual_seed(0)
        model = build_model(cfg)
        paths[model_type] = save_checkpoint(out / f"{model_type}.pt", {
            "model_type": model_type, "config": config_to_dict(cfg), "model": model.state_dict(), "step": 0})
    return paths


def _direct_recall(model: torch.nn.Module, tokens: torch.Tensor, value_start: int) -> float:
    """p(value | prefix) from one plain forward over the whole episode (the model streams it internally)."""
    with torch.no_grad():
        logits, _, _ = model(tokens[None, :-1])  # (1, L-1, 256)
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    total = sum(float(logp[t, tokens[t + 1]]) for t in range(value_start - 1, len(tokens) - 1))
    return math.exp(total)


def _one_error_line(capsys: pytest.CaptureFixture, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("model_type", ["hope", "baseline"])
def test_recall_prob_equals_direct_computation_past_max_len(ckpts, model_type, monkeypatch) -> None:
    model, cfg, _ = load_model(ckpts[model_type], "cpu")
    filler = load_corpus(cfg.data).val
    gap = 4 * MAX_LEN  # the episode is ~5 segments long: streamed with state carried
    ep = make_episode(random.Random(7), gap, filler)
    assert len(ep.tokens) > 4 * cfg.max_len
    expected = _direct_recall(model, ep.tokens, ep.value_start)
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", cfg.seq_len)  # feed it one segment per call, state passed by us
    result = recall_prob(model, gap, trials=1, seed=7, filler=filler, device="cpu")
    assert result["recall_prob"] == pytest.approx(expected, rel=1e-4)
    assert result["chance"] == chance_level() == pytest.approx(0.01)
    assert result["trials"] == 1 and result["gap"] == gap


def test_a_larger_bank_changes_nothing_until_the_small_one_evicts(tmp_path, data_file, capsys) -> None:
    cfg = load_config(None, [dict(TINY, data=str(data_file), bank_writes=1)])  # one write per chunk
    torch.manual_seed(0)
    model = build_model(cfg)
    for block in model.blocks:  # the bank's output starts at zero; give it a voice so reads show in the logits
        torch.nn.init.normal_(block.bank.out.weight, std=0.5)
    path = save_checkpoint(tmp_path / "hope.pt", {"model_type": "hope", "config": config_to_dict(cfg),
                                                  "model": model.state_dict(), "step": 0})
    small, _, _ = load_model(path)
    big, big_cfg, _ = load_model(path, state_sizes={"memory_capacity": 64})
    assert big_cfg.memory_capacity == 64
    tokens = load_corpus(str(data_file)).val[None, :320].long()
    with torch.no_grad():
        # 32 bytes = 4 chunks of 8 = 4 writes: the 8-slot bank is not full yet, so both read the same slots
        # (equal up to float rounding: the score matmuls have different widths).
        torch.testing.assert_close(small(tokens[:, :32])[0], big(tokens[:, :32])[0], rtol=1e-5, atol=1e-6)
        # 320 bytes = 40 writes: the small bank has evicted, the large one has not.
        out_small, _, state_small = small(tokens)
        out_big, _, state_big = big(tokens)
    assert state_big.layers[0].bank.keys.shape[1] == 64
    assert (out_small[:, 64:] - out_big[:, 64:]).abs().max() > 1e-3
    with pytest.raises(CheckpointError, match="only memory_capacity"):
        load_model(path, state_sizes={"dim": 64})
    rc = eval_long.main(["--ckpt", str(path), "--gap", "100", "--trials", "2", "--device", "cpu",
                         "--memory_capacity", "64"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["gap"] == 100


def test_batched_episodes_equal_one_at_a_time(ckpts) -> None:
    model, cfg, _ = load_model(ckpts["hope"], "cpu")
    filler = load_corpus(cfg.data).val
    batched = recall_prob(model, 8, trials=3, seed=11, filler=filler, batch_size=2)["recall_prob"]
    singles = [recall_prob(model, 8, trials=1, seed=11 + i, filler=filler)["recall_prob"] for i in range(3)]
    assert batched == pytest.approx(sum(singles) / 3, rel=1e-4)


def test_eval_long_cli_prints_json_for_both_types(ckpts, data_file, capsys) -> None:
    for model_type in ("hope", "baseline"):
        rc = eval_long.main(["--ckpt", str(ckpts[model_type]), "--gap", str(4 * MAX_LEN), "--trials", "2",
                             "--device", "cpu"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        out = json.loads(captured.out)
        assert set(out) == {"recall_prob", "chance", "trials", "gap", "model_type"}
        assert out["model_type"] == model_type and out["gap"] == 4 * MAX_LEN and out["trials"] == 2
        assert 0.0 < out["recall_prob"] < 1.0 and out["chance"] == pytest.approx(0.01)
        if model_type == "baseline":  # the write is out of the baseline's reach, and the user is told so
            assert "cannot recall" in captured.err
        else:
            assert captured.err == ""


def test_track_long_csv_compares_checkpoints(ckpts, data_file, tmp_path, capsys) -> None:
    out = tmp_path / "long_context.csv"
    rc = track_long.main(["--ckpt", f"{ckpts['hope']},{ckpts['baseline']}", "--gaps", "0,64",
                          "--trials", "2", "--device", "cpu", "--data", str(data_file), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["gap", "recall_prob", "chance", "trials", "model_type", "checkpoint", "step",
                                     "data"]
        rows = list(reader)
    assert [(r["model_type"], int(r["gap"])) for r in rows] == [("hope", 0), ("hope", 64), ("baseline", 0),
                                                                  ("baseline", 64)]
    assert all(r["checkpoint"] in (str(ckpts["hope"]), str(ckpts["baseline"])) for r in rows)
    # Same seed and filler: the CSV number is the library's number.
    model, _, _ = load_model(ckpts["baseline"], "cpu")
    direct = recall_prob(model, 64, trials=2, seed=0, filler=load_corpus(data_file).val)["recall_prob"]
    assert float(rows[3]["recall_prob"]) == pytest.approx(direct, rel=1e-6)


def test_window_note_distance() -> None:
    ep = make_episode(random.Random(0), 10, torch.arange(60, 120), prefix=5)
    assert ep.value_start - 1 - 5 == write_distance(10)  # from the write's first byte to the first scored position
    one_layer = load_config(None, [dict(TINY, model_type="baseline")])
    two_layers = load_config(None, [dict(TINY, model_type="baseline", depth=2)])
    assert long_eval.window_note(one_layer, 0) is None  # 14 bytes back: inside the 32-byte window
    assert "relaying" in long_eval.window_note(two_layers, 20)  # 34 bytes back: reachable only through 2 layers
    assert "cannot recall" in long_eval.window_note(two_layers, 100)
    assert long_eval.window_note(load_config(None, [TINY]), 10_000) is None  # HOPE: memories, no window


def _direct_binned(model: torch.nn.Module, val: torch.Tensor, length: int, windows: int) -> torch.Tensor:
    """Per-position mean NLL over the same windows, computed one window at a time."""
    from hope.eval.lm import eval_windows

    per_pos = []
    for s in eval_windows(len(val), length, windows):
        row = val[s:s + length + 1].long()
        with torch.no_grad():
            logits, _, _ = model(row[None, :-1])
        per_pos.append(torch.nn.functional.cross_entropy(logits[0].double(), row[1:], reduction="none"))
    return torch.stack(per_pos)  # (windows, length)


def test_binned_csv_partitions_positions_and_matches_direct(ckpts, data_file, tmp_path, capsys) -> None:
    out = tmp_path / "binned.csv"
    lengths, windows = [16, 32, 64], 3  # 64 > seq_len: windows stream across two segments
    rc = eval_binned.main(["--ckpt", f"{ckpts['hope']},{ckpts['baseline']}", "--data", str(data_file),
                           "--lengths", ",".join(map(str, lengths)), "--windows", str(windows), "--batch_size", "2",
                           "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["bin_start", "bin_end", "loss", "ppl", "tokens", "model_type", "checkpoint",
                                     "step", "data", "max_len", "attn_window", "mem_write"]
        rows = list(reader)
    assert len(rows) == 2 * len(lengths)
    val = load_corpus(data_file).val
    for model_type in ("hope", "baseline"):
        mine = [r for r in rows if r["model_type"] == model_type]
        assert [(int(r["bin_start"]), int(r["bin_end"])) for r in mine] == bins_of(lengths) == [(0, 16), (16, 32),
                                                                                               (32, 64)]
        assert sum(int(r["tokens"]) for r in mine) == windows * lengths[-1]
        model, _, _ = load_model(ckpts[model_type], "cpu")
        nll = _direct_binned(model, val, lengths[-1], windows)
        for r in mine:
            expected = float(nll[:, int(r["bin_start"]):int(r["bin_end"])].mean())
            assert float(r["loss"]) == pytest.approx(expected, rel=1e-5)
            assert float(r["ppl"]) == pytest.approx(math.exp(expected), rel=1e-5)


def test_parsers_reject_bad_values() -> None:
    assert parse_gaps("256, 512") == [256, 512]
    assert parse_lengths("64,128") == [64, 128]
    for bad in ("a,b", "", "-1"):
        with pytest.raises(HopeError):
            parse_gaps(bad)
    for bad in ("64,32", "64,64", "0,8", "x", ""):
        with pytest.raises(HopeError):
            parse_lengths(bad)


def test_bad_inputs_exit_2_with_one_line(ckpts, data_file, tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    assert "checkpoint not found" in _one_error_line(capsys, eval_long.main(["--ckpt", missing, "--gap", "8"]))
    _one_error_line(capsys, track_long.main(["--ckpt", str(ckpts["hope"]), "--gaps", "a,b",
                                             "--out", str(tmp_path / "x.csv")]))
    assert not (tmp_path / "x.csv").exists()
    assert "not found" in _one_error_line(capsys, eval_binned.main(
        ["--ckpt", str(ckpts["hope"]), "--data", str(tmp_path / "nope.txt"), "--device", "cpu"]))
    assert "strictly increasing" in _one_error_line(capsys, eval_binned.main(
        ["--ckpt", str(ckpts["hope"]), "--data", str(data_file), "--lengths", "64,32"]))
    short = tmp_path / "short.txt"
    short.write_text("x" * 400)  # validation split: 40 bytes < 513
    assert "fewer than" in _one_error_line(capsys, eval_binned.main(
        ["--ckpt", str(ckpts["hope"]), "--data", str(short), "--lengths", "64,512", "--device", "cpu"]))
    assert "trials" in _one_error_line(capsys, eval_long.main(
        ["--ckpt", str(ckpts["hope"]), "--gap", "8", "--trials", "0", "--device", "cpu"]))


def _recall_keys_script():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "scripts" / "recall_keys.py"
    spec = importlib.util.spec_from_file_location("recall_keys", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recall_keys_script_finds_every_query_and_its_distractors(ckpts, data_file, monkeypatch, capsys) -> None:
    """scripts/recall_keys.py (the key-lookup diagnostic behind results.md, "History"): every query of a scattered row is found
    with its gap and the values of the other pairs written before it; the script runs on a checkpoint."""
    script = _recall_keys_script()
    from hope.data.recall import KEY_LEN, OPEN, training_row
    filler = synthetic_corpus(4000, seed=1)
    for seed in range(10):
        row = training_row(random.Random(seed), 129, filler, episodes=4).tolist()
        found = script.queries(row)
        assert len(found) == 4
        for start, gap, others in found:
            q = start - KEY_LEN - 2
            assert row[q] == OPEN and gap > 0 and row[q - gap] == OPEN
            assert row[q + 1:q + 1 + KEY_LEN] == row[q - gap + 1:q - gap + 1 + KEY_LEN]  # the same key
            assert len(others) <= 3
        assert max(len(o) for _, _, o in found) >= 1
    monkeypatch.setattr("sys.argv", ["recall_keys.py", str(ckpts["hope"]), "--rows", "2", "--length", "64",
                                     "--data", str(data_file)])
    script.main()
    out = capsys.readouterr().out
    assert "2 rows of 65 bytes, 3 pairs each" in out and "p(own value)" in out


def test_binned_mem_write_gate_freezes_the_memories(ckpts, data_file, tmp_path, capsys) -> None:
    """`--mem_write 0`: HOPE evaluated with every write gated off equals the model with its gate set to 0 by hand,
    differs from the default evaluation, and says so in its rows; a gate outside [0, 1] is exit status 2."""
    args = ["--ckpt", str(ckpts["hope"]), "--data", str(data_file), "--lengths", "16,64", "--windows", "2",
            "--batch_size", "2", "--device", "cpu"]
    rows = {}
    for gate in (None, "0"):
        out = tmp_path / f"binned_{gate}.csv"
        assert eval_binned.main(args + ["--out", str(out)] + (["--mem_write", gate] if gate else [])) == 0
        with out.open() as f:
            rows[gate] = list(csv.DictReader(f))
    assert [float(r["mem_write"]) for r in rows["0"]] == [0.0, 0.0] and float(rows[None][0]["mem_write"]) == 1.0
    assert rows["0"][1]["loss"] != rows[None][1]["loss"]
    model, _, _ = load_model(ckpts["hope"], "cpu")
    model.set_schedules(0.0, model.surprise_scale)
    val = load_corpus(data_file).val
    frozen = binned_loss(model, val, [16, 64], windows=2, batch_size=2)
    assert [round(r["loss"], 6) for r in frozen] == [round(float(r["loss"]), 6) for r in rows["0"]]
    assert eval_binned.main(args + ["--out", str(tmp_path / "bad.csv"), "--mem_write", "1.5"]) == 2
    assert "--mem_write is a gate in [0, 1]" in capsys.readouterr().err
