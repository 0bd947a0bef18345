"""MQAR as a task: the generator's structure, the training rows and their ignored targets, the evaluation scored at
exactly the answers (oracle, repeat-the-last-value and eliminate-answered stubs), the CLIs and their errors, and
the recall figure.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from hope.checkpoint import save_checkpoint
from hope.cli import eval_long, track_long
from hope.config import ConfigError, config_to_dict, load_config
from hope.data import mqar
from hope.data.corpus import synthetic_corpus
from hope.data.loader import sample_batch
from hope.eval import long as long_eval
from hope.eval.gates import record_gates
from hope.eval.lm import token_sums
from hope.eval.long import mqar_accuracy
from hope.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2, steps=2,
            memory_capacity=8, top_k=2, device="cpu", update_frequencies={"mem_write": 8, "error_update": 16})


# ----------------------------------------------------------------------------- the generator


@pytest.mark.parametrize("pairs,gap", [(1, 0), (8, 0), (8, 37), (64, 5)])
def test_row_structure(pairs: int, gap: int) -> None:
    row = mqar.make_row(random.Random(3), pairs, gap)
    t = row.tokens.tolist()
    assert len(t) == mqar.row_length(pairs, gap) == 4 * pairs + gap
    keys, values = t[0:2 * pairs:2], t[1:2 * pairs:2]
    assert all(k in mqar.KEYS for k in keys) and all(v in mqar.VALUES for v in values)
    assert len(set(keys)) == pairs and len(set(values)) == pairs  # distinct: one answer per query, repeat = 1/P
    assert all(b in mqar.FILLER for b in t[2 * pairs:2 * pairs + gap])
    query = t[2 * pairs + gap:]
    q_keys, q_values = query[0::2], query[1::2]
    assert sorted(q_keys) == sorted(keys)  # every key asked once
    table = dict(zip(keys, values))
    assert q_values == [table[k] for k in q_keys]  # every answer is its key's value
    assert row.answers.tolist() == [2 * pairs + gap + 2 * i + 1 for i in range(pairs)]
    assert [t[a] for a in row.answers.tolist()] == q_values


def test_ranges_are_disjoint_and_levels_exact() -> None:
    assert not set(mqar.KEYS) & set(mqar.VALUES) and not set(mqar.KEYS) & set(mqar.FILLER)
    assert not set(mqar.VALUES) & set(mqar.FILLER)
    assert len(mqar.KEYS) == len(mqar.VALUES) == 64 == mqar.MAX_PAIRS
    assert mqar.chance_level() == 1 / 64 and mqar.repeat_level(8) == 1 / 8


def test_rows_are_deterministic_and_shuffled() -> None:
    a, b = mqar.make_row(random.Random(5), 8, 10), mqar.make_row(random.Random(5), 8, 10)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, mqar.make_row(random.Random(6), 8, 10).tokens)
    rows = [mqar.make_row(random.Random(s), 8, 0).tokens for s in range(20)]
    reordered = sum(r[16::2].tolist() != r[0:16:2].tolist() for r in rows)
    assert reordered >= 19  # the queries come in a shuffled order (the same order has probability 1/8!)


def test_bad_rows_raise() -> None:
    with pytest.raises(ValueError, match="between 1 and 64"):
        mqar.make_row(random.Random(0), 65, 0)
    with pytest.raises(ValueError, match="gap must be >= 0"):
        mqar.make_row(random.Random(0), 4, -1)
    with pytest.raises(ValueError, match="needs 48 bytes"):
        mqar.training_row(random.Random(0), 40, 8, 0, 16)


# ----------------------------------------------------------------------------- training rows and targets


def test_training_batch_answers_only_and_text_rows_keep_their_loss() -> None:
    data = synthetic_corpus(4000, seed=1)
    spec = mqar.MQARSpec(pairs=8, gap_min=0, gap_max=64, answers_only=True)
    x, y = sample_batch(data, 64, 128, seed=2, index=3, recall_fraction=0.5, mqar_spec=spec)
    assert x.shape == y.shape == (64, 128)
    mqar_rows = [b for b in range(64) if int(x[b, 0]) in mqar.KEYS]  # text rows are ASCII, keys are >= 0x80
    assert 10 < len(mqar_rows) < 54
    for b in range(64):
        scored = (y[b] != mqar.IGNORE).nonzero()[:, 0]
        if b in mqar_rows:
            assert len(scored) == 8
            assert all(int(y[b, t]) in mqar.VALUES and int(x[b, t]) in mqar.KEYS for t in scored.tolist())
            assert torch.equal(y[b, scored], x[b, scored + 1])  # y is still x shifted where it is scored
        else:
            assert len(scored) == 128 and torch.equal(y[b, :-1], x[b, 1:])
    x2, y2 = sample_batch(data, 64, 128, seed=2, index=3, recall_fraction=0.5, mqar_spec=spec)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _, y_all = sample_batch(data, 64, 128, seed=2, index=3, recall_fraction=0.5,
                            mqar_spec=mqar.MQARSpec(8, 0, 64, answers_only=False))
    assert (y_all != mqar.IGNORE).all()


def test_hidden_answers_put_filler_in_the_input_and_keep_the_value_as_target() -> None:
    """recall_answers: hidden (Zoology's format): the same row but for filler at the answers' input slots, whose
    targets stay the queried values; rows with answers shown are unchanged by the option's existence."""
    shown = mqar.make_row(random.Random(7), 8, 12, length=96)
    hidden = mqar.make_row(random.Random(7), 8, 12, length=96, hide_answers=True)
    a = shown.answers
    assert torch.equal(shown.values, shown.tokens[a]) and torch.equal(hidden.values, shown.values)
    assert all(int(b) in mqar.FILLER for b in hidden.tokens[a])
    rest = torch.ones(96, dtype=torch.bool)
    rest[a] = False
    assert torch.equal(hidden.tokens[rest], shown.tokens[rest])
    y = mqar.training_targets(hidden, answers_only=True)
    assert torch.equal(y[a - 1], shown.values) and int((y != mqar.IGNORE).sum()) == 8
    y_all = mqar.training_targets(hidden, answers_only=False)
    assert torch.equal(y_all[a - 1], shown.values) and torch.equal(y_all[a], hidden.tokens[a + 1])
    assert torch.equal(mqar.training_targets(shown, answers_only=False), shown.tokens[1:])
    data = synthetic_corpus(4000, seed=1)
    spec = mqar.MQARSpec(pairs=8, gap_min=0, gap_max=64, answers_only=True, hide_answers=True)
    x, y = sample_batch(data, 16, 128, seed=2, index=3, recall_fraction=1.0, mqar_spec=spec)
    scored = y != mqar.IGNORE  # (16, 128)
    assert int(scored.sum()) == 16 * 8 and all(int(v) in mqar.VALUES for v in y[scored])
    assert not any(int(v) in mqar.VALUES for v in x[:, 2 * 8 + 64:].flatten())  # no answer past the write half


def test_hidden_answers_leave_nothing_to_eliminate(monkeypatch) -> None:
    """The eliminator falls to the repeat level on hidden rows (it never sees an answer); the oracle still scores 1,
    and the reported elimination level is 1/P."""
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", 16)
    elim = mqar_accuracy(_Stub(repeat=False, eliminate=True), 8, 5, trials=40, seed=3, device="cpu",
                         hide_answers=True)
    assert elim["value_prob"] == pytest.approx(1 / 8) and elim["elimination"] == 1 / 8
    assert elim["answers"] == "hidden"
    oracle = mqar_accuracy(_Stub(repeat=False), 8, 5, trials=8, seed=3, device="cpu", hide_answers=True)
    assert oracle["accuracy"] == 1.0 and oracle["first_accuracy"] == 1.0


def test_ignored_targets_count_nowhere() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 256)
    targets = torch.randint(0, 256, (2, 6))
    masked = targets.clone()
    masked[:, ::2] = mqar.IGNORE
    keep = masked != mqar.IGNORE
    sums = token_sums(logits, masked)
    direct = token_sums(logits[keep][None], targets[keep][None])
    assert torch.allclose(sums, direct) and sums[4] == 6
    cfg = load_config(None, [dict(TINY)])
    model = build_model(cfg)
    x = torch.randint(0, 256, (2, 8))
    y = torch.randint(0, 256, (2, 8))
    y_masked = y.clone()
    y_masked[:, :5] = mqar.IGNORE
    logits, loss, _ = model(x, y_masked)
    expected = nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 256), y[:, 5:].reshape(-1))
    assert torch.allclose(loss, expected)


def test_config_keys_and_errors() -> None:
    cfg = load_config(None, [dict(recall_task="mqar", recall_pairs=8, recall_gap_min=0, recall_gap_max=64,
                                  recall_fraction=1.0, loss_on="answers")])
    assert cfg.recall_task == "mqar" and cfg.loss_on == "answers"
    assert load_config(None).recall_task == "episodes" and load_config(None).loss_on == "all"
    assert load_config(None).recall_answers == "shown"
    bad = [
        (dict(recall_task="lookup"), "recall_task must be one of"),
        (dict(loss_on="values"), "loss_on must be one of"),
        (dict(recall_answers="masked"), "recall_answers must be one of"),
        (dict(recall_pairs=65), "recall_pairs must be between 1 and 64"),
        (dict(recall_gap_min=10, recall_gap_max=5), "0 <= min <= max"),
        (dict(loss_on="answers", recall_fraction=0.5), "needs recall_task: mqar"),
        (dict(recall_task="mqar", recall_fraction=1.0, recall_gap_max=200), "more than seq_len \\+ 1"),
        (dict(recall_task="mqar", recall_fraction=1.0, stream={"use": True}), "not supported with stream.use"),
    ]
    for override, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])


# ----------------------------------------------------------------------------- evaluation at the answers


class _Stub(nn.Module):
    """A 'model' that reads bytes one by one, carrying a key -> value table (a real lookup, the oracle) or only the
    last value written before the first repeated key (`repeat`), and puts all its mass on its guess; or (`eliminate`)
    spreads its mass evenly over the written values not yet shown in the query half, looking no key up."""

    def __init__(self, repeat: bool, seg: int = 16, eliminate: bool = False):
        super().__init__()
        self.repeat, self.eliminate = repeat, eliminate
        self.cfg = type("C", (), {"seq_len": seg})()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor, targets=None, state=None):
        B, T = idx.shape
        if state is None:
            state = {"table": [dict() for _ in range(B)], "prev": [None] * B, "last": [0] * B, "asking": [False] * B}
        logits = torch.full((B, T, 256), -1e4)
        for b in range(B):
            table = state["table"][b]
            for t in range(T):
                byte = int(idx[b, t])
                prev = state["prev"][b]
                if prev in mqar.KEYS and byte in mqar.VALUES and not state["asking"][b]:
                    table[prev] = byte
                    state["last"][b] = byte
                if byte in mqar.KEYS and byte in table:
                    state["asking"][b] = True
                guess = state["last"][b] if self.repeat else table.get(byte, 0)
                if state["asking"][b] and prev in mqar.KEYS and byte in mqar.VALUES:
                    state.setdefault("shown", [set() for _ in range(B)])[b].add(byte)
                if self.eliminate and state["asking"][b]:
                    shown = state.get("shown", [set() for _ in range(B)])[b]
                    for value in set(table.values()) - shown:
                        logits[b, t, value] = 0.0
                else:
                    logits[b, t, guess] = 0.0
                state["prev"][b] = byte
        return logits, None, state


@pytest.mark.parametrize("gap", [0, 40])
def test_oracle_scores_one_and_repeat_scores_one_over_p(gap: int, monkeypatch) -> None:
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", 16)  # rows of 72-112 bytes stream in 16-byte pieces
    oracle = mqar_accuracy(_Stub(repeat=False), 8, gap, trials=6, seed=1, device="cpu", batch_size=4)
    assert oracle["accuracy"] == 1.0 and oracle["value_prob"] == pytest.approx(1.0)
    repeat = mqar_accuracy(_Stub(repeat=True), 8, gap, trials=6, seed=1, device="cpu", batch_size=4)
    assert repeat["accuracy"] == pytest.approx(1 / 8) and repeat["value_prob"] == pytest.approx(1 / 8)
    assert repeat["chance"] == 1 / 64 and repeat["repeat"] == 1 / 8 and repeat["pairs"] == 8
    assert oracle["first_accuracy"] == 1.0 and repeat["elimination"] == pytest.approx(761 / 2240)  # H_8 / 8


def test_elimination_scores_its_level_and_nothing_on_the_first_query(monkeypatch) -> None:
    """A model that only eliminates answered values gets p(value) = 1 / (P - i) at the i-th query: exactly the
    elimination level on average, and 1/P at the first query; its top-1 (ties go to the lowest byte) is right
    about as often. Its first-query accuracy stays near 1/P, far below a lookup's."""
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", 16)
    out = mqar_accuracy(_Stub(repeat=False, eliminate=True), 8, 5, trials=160, seed=3, device="cpu", batch_size=32)
    assert out["value_prob"] == pytest.approx(mqar.elimination_level(8), abs=1e-6)
    assert out["accuracy"] == pytest.approx(mqar.elimination_level(8), abs=0.05)
    assert out["first_accuracy"] == pytest.approx(1 / 8, abs=0.07)
    assert out["elimination"] == mqar.elimination_level(8) and mqar.elimination_level(1) == 1.0


def test_accuracy_is_read_at_exactly_the_answers(monkeypatch) -> None:
    """A stub right everywhere except at the answers scores 0; right only at the answers scores 1."""
    rows = {}

    class Marked(nn.Module):
        def __init__(self, at_answers: bool):
            super().__init__()
            self.at_answers, self.w = at_answers, nn.Parameter(torch.zeros(1))

        def forward(self, idx, targets=None, state=None):
            pos = 0 if state is None else state
            B, T = idx.shape
            logits = torch.full((B, T, 256), -1e4)
            for b in range(B):
                tokens = rows["tokens"][b]
                for t in range(T):
                    p = pos + t  # predicts tokens[p + 1]
                    answer = p + 1 in rows["answers"]
                    right = int(tokens[p + 1])
                    logits[b, t, right if answer == self.at_answers else (right + 1) % 256] = 0.0
            return logits, None, pos + T

    original = mqar.make_row

    def spy(rng, pairs, gap, length=None, hide_answers=False):
        row = original(rng, pairs, gap, length, hide_answers)
        rows.setdefault("list", []).append(row.tokens)
        rows["tokens"], rows["answers"] = rows["list"], set(row.answers.tolist())
        return row

    monkeypatch.setattr(mqar, "make_row", spy)
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", 7)
    assert mqar_accuracy(Marked(True), 4, 9, trials=3, device="cpu", batch_size=3)["accuracy"] == 1.0
    rows.clear()
    assert mqar_accuracy(Marked(False), 4, 9, trials=3, device="cpu", batch_size=3)["accuracy"] == 0.0


# ----------------------------------------------------------------------------- CLIs on a tiny untrained model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mqar_ckpt")
    cfg = load_config(None, [dict(TINY, recall_task="mqar", recall_pairs=4, recall_gap_max=8, recall_fraction=1.0,
                                  loss_on="answers")])
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_checkpoint(out / "hope.pt", {"model_type": "hope", "config": config_to_dict(cfg),
                                             "model": model.state_dict(), "step": 0})


def test_eval_long_mqar_prints_the_four_numbers(ckpt: Path, capsys) -> None:
    gap = 70  # the row (86 bytes) is longer than seq_len = max_len = 32: streamed with the state carried
    assert eval_long.main(["--ckpt", str(ckpt), "--task", "mqar", "--pairs", "4", "--gap", str(gap),
                           "--samples", "4", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "first_accuracy", "value_prob", "chance", "repeat", "elimination", "pairs",
                        "answers", "trials", "gap", "model_type"}
    assert out["answers"] == "shown"
    assert 0 <= out["accuracy"] <= 1 and 0 < out["value_prob"] < 1
    assert out["chance"] == 1 / 64 and out["repeat"] == 1 / 4 and out["pairs"] == 4 and out["gap"] == gap


def test_track_long_mqar_csv(ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mqar.csv"
    assert track_long.main(["--ckpt", str(ckpt), "--task", "mqar", "--pairs", "4", "--gaps", "0,40",
                            "--samples", "2", "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == list(track_long.MQAR_COLUMNS)
    assert [int(r["gap"]) for r in rows] == [0, 40]
    assert all(float(r["chance"]) == 1 / 64 and float(r["repeat"]) == 0.25 for r in rows)
    assert all(float(r["elimination"]) == mqar.elimination_level(4) for r in rows)
    assert all(0 <= float(r["first_accuracy"]) <= 1 for r in rows)
    printed = capsys.readouterr().out
    assert "repeat-last-value" in printed and "eliminate-answered" in printed and "first query" in printed
    assert {r["answers"] for r in rows} == {"shown"}
    hidden = tmp_path / "hidden.csv"
    assert track_long.main(["--ckpt", str(ckpt), "--task", "mqar", "--pairs", "4", "--gaps", "8", "--answers",
                            "hidden", "--samples", "2", "--device", "cpu", "--out", str(hidden)]) == 0
    (row,) = list(csv.DictReader(hidden.open()))
    assert row["answers"] == "hidden" and float(row["elimination"]) == 0.25
    assert "answers hidden" in capsys.readouterr().out
    rc = track_long.main(["--ckpt", str(ckpt), "--answers", "hidden", "--gaps", "8", "--device", "cpu",
                          "--out", str(tmp_path / "episodes.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--task mqar" in err


@pytest.mark.parametrize("argv,message", [
    (["--pairs", "65", "--gap", "8"], "pairs must be between 1 and 64"),
    (["--pairs", "4", "--gap", "-1"], "gaps must be >= 0"),
    (["--pairs", "0", "--gap", "8"], "pairs must be between 1 and 64"),
])
def test_eval_long_mqar_bad_input_is_one_line(ckpt: Path, capsys, argv, message) -> None:
    rc = eval_long.main(["--ckpt", str(ckpt), "--task", "mqar", "--device", "cpu", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err and message in err


def test_track_long_mqar_bad_input_is_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    rc = track_long.main(["--ckpt", str(ckpt), "--task", "mqar", "--pairs", "100", "--gaps", "0",
                          "--device", "cpu", "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "pairs must be between 1 and 64" in err
    rc = track_long.main(["--ckpt", str(ckpt), "--task", "mqar", "--gaps", "-4", "--device", "cpu",
                          "--out", str(tmp_path / "x.csv")])
    assert rc == 2 and "\n" not in capsys.readouterr().err.strip()


def test_training_on_mqar_rows_answers_only(tmp_path: Path) -> None:
    """configs/mqar.yaml, shrunk: the loss is the answers' loss (at init, about ln 256: every byte equally likely,
    not the mean over 128 bytes of mostly filler), finite, and the run writes a checkpoint the eval reads."""
    from hope.data.corpus import Corpus
    from hope.train.loop import train

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "mqar.yaml", [dict(dim=32, depth=1, num_heads=2, seq_len=64, max_len=64,
                                                            recall_pairs=4, recall_gap_max=32, steps=3, batch_size=4,
                                                            warmup_steps=1, device="cpu", eval_batches=1,
                                                            out=str(tmp_path / "m.pt"))])
    data = synthetic_corpus(6000, seed=1)
    result = train(cfg, corpus=Corpus.from_bytes(data, "synthetic"), verbose=False)
    assert len(result.losses) == 3 and all(abs(loss - 5.545) < 0.3 for loss in result.losses)
    out = mqar_accuracy(result.model, 4, 100, trials=2, device="cpu")
    assert out["repeat"] == 0.25


def test_breakdown_by_query_order_tells_elimination_from_lookup(monkeypatch) -> None:
    """scripts/mqar_breakdown.py: the oracle is 1 at every query order; the eliminator is always right at the last
    query (one value left) and near 1/P at the first; pooled figures equal mqar_accuracy's on the same rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mqar_breakdown", ROOT / "scripts" / "mqar_breakdown.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", 16)
    oracle = script.breakdown(_Stub(repeat=False), 8, [0, 9], trials=8)
    assert oracle["by_order"] == [1.0] * 8 and oracle["by_slot"] == [1.0] * 8
    elim = script.breakdown(_Stub(repeat=False, eliminate=True), 8, [0], trials=120)
    assert elim["by_order"][-1] == 1.0 and elim["first_accuracy"] == pytest.approx(1 / 8, abs=0.07)
    assert elim["elimination_by_order"] == [0.125, 0.1429, 0.1667, 0.2, 0.25, 0.3333, 0.5, 1.0]
    same = mqar_accuracy(_Stub(repeat=False, eliminate=True), 8, 0, trials=120, seed=0, device="cpu")
    assert elim["accuracy"] == pytest.approx(same["accuracy"]) and elim["first_accuracy"] == same["first_accuracy"]


def _fading_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mqar_fading", ROOT / "scripts" / "mqar_fading.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_fading_interventions_remove_what_they_name(ckpt: Path) -> None:
    """scripts/mqar_fading.py: 'filler silent' zeroes the SMT's rate and the bank's write strength at filler bytes
    only; with 'SMT retains' too, the SMT's memory after a run of filler is the memory before it, bit for bit (nothing
    writes, nothing decays); the bank interventions restore the model afterwards."""
    from hope.checkpoint import load_model

    script = _fading_script()
    model, _, _ = load_model(str(ckpt), "cpu")
    model.eval()
    row = mqar.make_row(random.Random(0), 4, 40).tokens[None, :-1]
    filler = (row >= 0x40) & (row < 0x80)
    with torch.no_grad(), record_gates(model) as gates, script.INTERVENTIONS["filler silent"](model):
        model(row)
    eta = gates.rate(0)  # (H, L)
    assert eta[:, filler[0]].max() < 1e-12 and eta[:, ~filler[0]].min() > 1e-3
    keys = mqar.make_row(random.Random(1), 4, 0).tokens[None, :8]
    with torch.no_grad():
        _, _, state = model(keys)
        with script.INTERVENTIONS["filler silent"](model), script.INTERVENTIONS["SMT retains"](model):
            _, _, after = model(torch.full((1, 24), 0x41), state=state)
    assert torch.equal(after.layers[0].smt.change, state.layers[0].smt.change)
    bank = model.blocks[0].bank
    with script.INTERVENTIONS["bank never ages"](model):
        assert model.blocks[0].bank.aging == 1.0
    assert model.blocks[0].bank is bank and bank.aging < 1.0
    with script.INTERVENTIONS["bank off"](model):
        assert model.blocks[0].bank is None
        assert 0 <= mqar_accuracy(model, 4, 8, trials=2, device="cpu")["accuracy"] <= 1


def test_fading_script_prints_gates_and_every_intervention(ckpt: Path, capsys) -> None:
    script = _fading_script()
    assert script.main(["--ckpt", str(ckpt), "--pairs", "4", "--gaps", "0,40", "--samples", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    gates = [line["gates"] for line in lines if "gates" in line]
    assert len(gates) == 1 and set(gates[0]) == {"block", "filler", "pairs"}
    runs = [line for line in lines if "intervention" in line]
    assert [(r["intervention"], r["gap"]) for r in runs] == [(n, g) for n in script.INTERVENTIONS for g in (0, 40)]
    assert script.main(["--ckpt", str(ckpt), "--only", "bank gone"]) == 2
    assert "unknown intervention" in capsys.readouterr().err
