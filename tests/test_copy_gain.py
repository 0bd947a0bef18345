"""Repeated-text recall (`hope-eval-long --task copy`, `hope-track-long --task copy`, `hope.eval.long.copy_gain`):
the row layout, the losses against a direct computation, a copying model's gain inside its window and exactly zero
past it, the control, documents, the CSV, the figure and bad input.

The copying model is a stub (`_Inducer`): a deterministic function of the last `window` bytes that predicts, when the
last 3 bytes occurred earlier in its window, the byte that followed them there (an induction head in a few lines).
So its gain is positive when both occurrences fit in its window, and exactly 0 once the gap and the lead are at
least its window: then it reads both occurrences after the very same bytes.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hope.checkpoint import load_model, save_checkpoint
from hope.cli import eval_long, plot_reports, track_long
from hope.config import config_to_dict, load_config
from hope.data.corpus import DataError, Documents, load_corpus, synthetic_corpus
from hope.eval import long as long_eval
from hope.eval.long import copy_gain, copy_rows, copy_span, copy_spans, make_copy_row
from hope.models import build_model
from hope.report import plots

TINY = dict(dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2, steps=2,
            memory_capacity=8, top_k=2, device="cpu", update_frequencies={"mem_write": 8, "error_update": 16})
TEXT = synthetic_corpus(6000, seed=5)  # natural-looking text: words repeat, so the stub also copies inside a passage


class _Inducer(nn.Module):
    """Predicts from the last `window` bytes only: if the last 3 bytes occurred earlier in the window, the byte that
    followed their latest earlier occurrence gets logit 6 (p ~ 0.62), every other byte 0."""

    def __init__(self, window: int):
        super().__init__()
        self.window, self.w = window, nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None, state=None):
        B, T = idx.shape
        history = state if state is not None else [b"" for _ in range(B)]
        logits = torch.zeros(B, T, 256)
        for b in range(B):
            seen = history[b]
            for t in range(T):
                seen = (seen + bytes([int(idx[b, t])]))[-self.window:]
                i = seen.rfind(seen[-3:], 0, len(seen) - 1) if len(seen) > 3 else -1
                if i >= 0:
                    logits[b, t, seen[i + 3]] = 6.0
            history[b] = seen
        return logits, None, history


def test_the_row_layout():
    text = torch.arange(200, dtype=torch.uint8)  # every byte names its position
    for lead, gap in ((40, 10), (10, 40), (0, 0), (25, 25)):
        row = make_copy_row(random.Random(1), text, 16, gap, lead)
        assert len(row) == lead + 2 * 16 + gap and row.dtype == torch.int64
        p1, p2 = row[lead:lead + 16], row[lead + 16 + gap:]
        assert torch.equal(p1, p2) and (p1.diff() == 1).all()  # one contiguous passage, twice
        lead_t, gap_t = row[:lead], row[lead + 16:lead + 16 + gap]
        k = min(lead, gap)  # the same bytes right before both occurrences
        assert torch.equal(lead_t[len(lead_t) - k:], gap_t[len(gap_t) - k:])
        assert not set(p1.tolist()) & set(lead_t.tolist() + gap_t.tolist())  # no passage byte outside the passage
        start = int(p1[0])  # the lead and the gap are cut from the max(lead, gap) bytes that follow the passage
        assert set(lead_t.tolist() + gap_t.tolist()) <= set(range(start + 16, start + copy_span(16, gap, lead)))
        (a, b), (c, d) = copy_spans(16, gap, lead)
        assert (a, b, c, d) == (lead + 1, lead + 16, lead + 16 + gap + 1, len(row))  # bytes 1..N-1 of each


def test_losses_equal_a_direct_computation(monkeypatch):
    """One row of a tiny HOPE model streamed in pieces of one segment: the two losses are the mean of
    -log p over bytes 1..N-1 of each occurrence in one plain forward pass."""
    torch.manual_seed(0)
    model = build_model(load_config(None, [dict(TINY, model_type="hope")])).eval()
    monkeypatch.setattr(long_eval, "PIECE_TOKENS", 32)
    passage, gap, lead = 20, 70, 40
    out = copy_gain(model, gap, passage, samples=1, seed=4, text=TEXT, device="cpu", lead=lead)
    row = make_copy_row(random.Random(4), TEXT, passage, gap, lead)
    with torch.no_grad():
        logits, _, _ = model(row[None, :-1])
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    nll = [-float(logp[t - 1, row[t]]) for t in range(len(row))[1:]]
    first = np.mean(nll[lead:lead + passage - 1])  # targets lead+1 .. lead+N-1
    second = np.mean(nll[lead + passage + gap:])
    assert out["loss_first"] == pytest.approx(first, rel=1e-5)
    assert out["loss_second"] == pytest.approx(second, rel=1e-5)
    assert out["copy_gain"] == pytest.approx(first - second, abs=1e-5) and out["copy_gain_se"] is None
    batched = copy_gain(model, gap, passage, samples=3, seed=4, text=TEXT, device="cpu", batch_size=2, lead=lead)
    singles = [copy_gain(model, gap, passage, samples=1, seed=4 + i, text=TEXT, device="cpu", lead=lead)
               for i in range(3)]
    assert batched["loss_second"] == pytest.approx(np.mean([s["loss_second"] for s in singles]), rel=1e-5)
    diffs = [s["copy_gain"] for s in singles]
    assert batched["copy_gain_se"] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(3), rel=1e-4)


def test_a_copier_gains_inside_its_window_and_exactly_nothing_past_it():
    stub = _Inducer(window=96)
    kw = dict(passage=32, samples=8, seed=0, text=TEXT, device="cpu", batch_size=4, lead=96, control=True)
    inside = [copy_gain(stub, gap, **kw) for gap in (0, 32)]  # the first occurrence 32 / 64 bytes back: in view
    for res in inside:
        assert res["copy_gain"] > 0.5 and res["copy_gain"] > 4 * res["copy_gain_se"]
        assert res["loss_second"] < res["loss_first"]
        assert res["control_gain"] > 0.5  # another passage first: no copy
    for gap in (96, 200):  # the gap and the lead at least the window: both occurrences follow the same 95 bytes
        res = copy_gain(stub, gap, **kw)
        assert res["copy_gain"] == 0.0 and res["copy_gain_se"] == 0.0 and res["loss_first"] > 0.5
        assert res["control_gain"] == 0.0
    # A lead shorter than the window: the first occurrence is read with less context than the second, and the
    # gain is no longer a copy (positive without any copy): why the lead exists.
    short = copy_gain(stub, 200, **{**kw, "lead": 0})
    assert short["copy_gain"] > 0 and short["control_gain"] == 0.0


def test_the_control_replaces_only_the_first_occurrence_with_a_disjoint_passage():
    text = torch.arange(256, dtype=torch.uint8)
    rows, controls = copy_rows(text, 16, 40, 30, samples=20, seed=2, control=True)
    for row, ctrl in zip(rows, controls):
        assert torch.equal(row[:30], ctrl[:30]) and torch.equal(row[46:], ctrl[46:])
        q, p = ctrl[30:46], row[30:46]
        assert (q.diff() == 1).all() and not set(q.tolist()) & set(p.tolist())
    again, none = copy_rows(text, 16, 40, 30, samples=20, seed=2)
    assert none is None and all(torch.equal(a, b) for a, b in zip(rows, again))  # the rows do not change
    with pytest.raises(DataError, match="too short for --control"):
        copy_rows(torch.arange(20, dtype=torch.uint8), 10, 5, 5, samples=1, control=True)


def _constant_documents(lengths: list[int]) -> tuple[torch.Tensor, Documents]:
    """Document i is `lengths[i]` copies of the letter 'A' + i, so any byte names its document."""
    text = torch.cat([torch.full((n,), ord("A") + i, dtype=torch.uint8) for i, n in enumerate(lengths)])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return text, Documents(offsets, tuple(f"d{i}" for i in range(len(lengths))))


def test_on_documents_each_row_is_cut_from_one_document_long_enough():
    text, docs = _constant_documents([60, 300, 99, 130, 500])
    passage, gap, lead = 20, 80, 30  # a span of 100 bytes: documents 1, 3 and 4
    rows, controls = copy_rows(text, passage, gap, lead, samples=200, seed=1, documents=docs, control=True)
    letters = [int(r[0]) - ord("A") for r in rows]
    assert all((r == r[0]).all() for r in rows) and set(letters) == {1, 3, 4}
    counts = np.bincount(letters)  # in proportion to the spans they hold: 201, 31, 401
    assert counts[4] > counts[1] > counts[3]
    # A control passage lies in one document too: any document of at least `passage` bytes, the short ones included.
    assert all((c[lead:lead + passage] == c[lead]).all() for c in controls)
    assert {int(c[lead]) - ord("A") for c in controls} == {0, 1, 2, 3, 4}
    with pytest.raises(DataError, match=r"no validation document holds the 600 bytes .* \(the longest has 500\)"):
        copy_rows(text, passage, 580, lead, samples=1, documents=docs)


# ----------------------------------------------------------------------------- the commands on tiny checkpoints


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("copy")
    data = out / "text.txt"
    data.write_bytes(synthetic_corpus(8000, seed=3).numpy().tobytes())
    paths = {"data": data}
    for model_type in ("hope", "baseline"):
        cfg = load_config(None, [dict(TINY, model_type=model_type, data=str(data))])
        torch.manual_seed(0)
        paths[model_type] = save_checkpoint(out / f"{model_type}.pt", {
            "model_type": model_type, "config": config_to_dict(cfg), "model": build_model(cfg).state_dict(),
            "step": 7})
    return paths


def test_eval_long_copy_prints_json_and_the_baseline_gains_nothing_past_its_reach(setup, capsys):
    """The baseline (1 layer, max_len 32: reach 31 bytes) after a lead and a gap of 64 bytes: both occurrences
    follow the same bytes, so it gains 0 up to float rounding (rotary angles at other absolute positions)."""
    argv = ["--ckpt", str(setup["baseline"]), "--task", "copy", "--passage", "24", "--lead", "64", "--gap", "64",
            "--samples", "4", "--device", "cpu"]
    assert eval_long.main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out) == ["copy_gain", "copy_gain_se", "loss_first", "loss_second", "samples", "passage", "lead",
                         "gap", "model_type"]
    assert abs(out["copy_gain"]) < 1e-5 and out["loss_first"] > 1.0 and out["samples"] == 4
    assert "beyond its attention's reach of 31 bytes" in captured.err and "copy gain is 0" in captured.err
    assert eval_long.main(argv + ["--control"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["control_gain"]) < 1e-5 and out["loss_control"] == pytest.approx(out["loss_second"], abs=1e-5)


def test_track_long_copy_csv_round_trip_and_figure(setup, tmp_path, capsys):
    out = tmp_path / "copy.csv"
    ckpts = f"{setup['hope']},{setup['baseline']}"
    assert track_long.main(["--ckpt", ckpts, "--task", "copy", "--passage", "16", "--lead", "40", "--gaps", "0,48",
                            "--samples", "3", "--device", "cpu", "--out", str(out), "--control"]) == 0
    printed = capsys.readouterr().out
    assert "hope" in printed and "copy gain" in printed and "control gain" in printed
    with out.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == track_long.COPY_COLUMNS
        rows = list(reader)
    assert [(r["model_type"], int(r["gap"])) for r in rows] == [("hope", 0), ("hope", 48), ("baseline", 0),
                                                                  ("baseline", 48)]
    assert {(r["step"], r["max_len"], r["attn_window"], r["passage"], r["lead"], r["samples"]) for r in rows} == {
        ("7", "32", "16", "16", "40", "3")}
    assert [int(r["reach"]) for r in rows] == [15, 15, 31, 31] and Path(rows[0]["data"]).name == "text.txt"
    for r in rows:  # the CSV holds the library's numbers, and the gain is the difference of its losses
        assert float(r["copy_gain"]) == pytest.approx(float(r["loss_first"]) - float(r["loss_second"]), abs=1e-12)
    model, cfg, _ = load_model(setup["hope"], "cpu")
    direct = copy_gain(model, 48, 16, samples=3, text=load_corpus(cfg.data).val, device="cpu", lead=40)
    assert float(rows[1]["loss_second"]) == pytest.approx(direct["loss_second"], rel=1e-9)
    assert float(rows[1]["copy_gain_se"]) == pytest.approx(direct["copy_gain_se"], rel=1e-9)

    assert plot_reports.main(["--recall_csv", str(out), "--out_dir", str(tmp_path / "figs")]) == 0
    png = tmp_path / "figs" / "copy_gain.png"
    assert capsys.readouterr().out.split() == [str(png)]
    blob = png.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    assert (width, height) == (int(plots.COPY_FIGSIZE[0] * plots.DPI), int(plots.COPY_FIGSIZE[1] * plots.DPI))


def test_the_copy_figure_draws_every_series_with_error_bars_and_a_zero_line(tmp_path, monkeypatch):
    drawn = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and save(fig, path))
    base = dict(loss_first=1.0, samples=32, passage=256, lead=1024, step=10, data="d", max_len=128, attn_window=32)
    rows = [dict(base, gap=g, copy_gain=gain, loss_second=1.0 - gain, copy_gain_se=0.01, model_type=m,
                 checkpoint=f"{m}.pt", reach=reach, control_gain=None, control_gain_se=None)
            for m, reach, gains in (("hope", 62, (0.3, 0.1, 0.05)), ("baseline", 508, (0.4, 0.0, 0.0)))
            for g, gain in zip((0, 1024, 16384), gains)]
    from hope.report.writers import write_csv
    write_csv(tmp_path / "c.csv", rows, track_long.COPY_COLUMNS)
    plots.plot_copy_gain(tmp_path / "c.csv", tmp_path / "c.png")
    ax = drawn["fig"].axes[0]
    labels = ax.get_legend().get_texts()
    assert [t.get_text() for t in labels] == ["HOPE", "Baseline", "no gain", "HOPE: attention reach 62 bytes",
                                              "Baseline: attention reach 508 bytes"]
    assert any(line.get_ydata()[0] == 0.0 and line.get_linestyle() == "--" for line in ax.get_lines())
    assert len(ax.containers) == 2  # one errorbar container per checkpoint
    heights = ax.containers[0].lines[2][0].get_segments()  # the error bars: +-2 se
    assert all(seg[1][1] - seg[0][1] == pytest.approx(0.04) for seg in heights)
    assert "±2 standard errors over 32 passages of 256 bytes" in ax.get_title()


@pytest.mark.parametrize("argv, message", [
    (["--passage", "0"], "--passage must be >= 2 bytes"),
    (["--passage", "-3"], "--passage must be >= 2 bytes"),
    (["--lead", "-1"], "--lead must be >= 0"),
    (["--gap", "-1"], "must be >= 0, got [-1]"),
    (["--gap", "5000"], "the validation text has 800 bytes, fewer than the 5016 bytes"),
    (["--samples", "0"], "samples and batch_size must be > 0"),
])
def test_bad_copy_input_is_one_line_and_exit_2(setup, capsys, argv, message):
    base = {"--gap": "8", "--passage": "16", "--lead": "16"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    flags = [x for kv in base.items() for x in kv]
    rc = eval_long.main(["--ckpt", str(setup["hope"]), "--task", "copy", "--device", "cpu", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err and message in err, err


def test_track_long_bad_copy_input(setup, tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert track_long.main(["--ckpt", str(setup["hope"]), "--task", "copy", "--passage", "1", "--gaps", "0",
                            "--out", str(out)]) == 2
    assert "--passage must be >= 2" in capsys.readouterr().err and not out.exists()
    assert track_long.main(["--ckpt", str(setup["hope"]), "--control", "--gaps", "0", "--out", str(out)]) == 2
    assert "--control reads copy rows" in capsys.readouterr().err and not out.exists()


def test_the_command_defaults_are_the_library_defaults(monkeypatch):
    for module in (eval_long, track_long):
        args = module.build_parser().parse_args(["--gap", "1"] if module is eval_long else [])
        assert (args.passage, args.lead) == (long_eval.COPY_PASSAGE, long_eval.COPY_LEAD)


def test_the_notes_say_where_attention_stops_and_whether_the_lead_covers_it():
    baseline = load_config(None, [dict(TINY, model_type="baseline", depth=2)])  # reach 2 x 31 = 62
    hope = load_config(None, [dict(TINY, model_type="hope")])  # reach 1 x 15 = 15
    assert (long_eval.attention_reach(baseline), long_eval.attention_reach(hope)) == (62, 15)
    assert long_eval.copy_note(baseline, 61, 100) is None and long_eval.copy_note(hope, 14, 0) is None
    assert "its copy gain is 0 up to rounding" in long_eval.copy_note(baseline, 62, 62)
    assert "need not be 0 (a --lead of at least 62 makes it 0)" in long_eval.copy_note(baseline, 100, 61)
    assert "only its memories can carry it" in long_eval.copy_note(hope, 15, 0)
