"""`hope-eval-long` / `hope-track-long` on a collection of documents: each recall episode's filler is a span of one
validation document, never running into the next; documents not longer than the gap are left out and counted in
a note, never padded; the single-file episodes are unchanged (tests/test_long_binned.py pins them)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hope.checkpoint import load_model, save_checkpoint
from hope.cli import eval_long, track_long
from hope.config import config_to_dict, load_config
from hope.data.corpus import DataError, Documents, load_corpus
from hope.data.recall import CLOSE, KEY_LEN, OPEN, VALUE_LEN, make_episode
from hope.eval import long as long_eval
from hope.eval.long import document_filler, filler_documents, recall_prob
from hope.models import build_model

TINY = dict(model_type="hope", dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2,
            steps=2, memory_capacity=8, top_k=2, device="cpu", update_frequencies={"mem_write": 8, "error_update": 16})


def _constant_documents(lengths: list[int]) -> tuple[torch.Tensor, Documents]:
    """Document i is `lengths[i]` copies of the letter 'A' + i, so any byte names its document."""
    text = torch.cat([torch.full((n,), ord("A") + i, dtype=torch.uint8) for i, n in enumerate(lengths)])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return text, Documents(offsets, tuple(f"d{i}" for i in range(len(lengths))))


def _gap_bytes(tokens: torch.Tensor, gap: int) -> torch.Tensor:
    """The filler between an episode's write and its query (make_episode's layout, no prefix)."""
    start = 1 + KEY_LEN + 1 + VALUE_LEN + 1
    assert tokens[0] == OPEN and tokens[start - 1] == CLOSE
    return tokens[start:start + gap]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(None, [TINY])).eval()


def test_every_filler_is_a_span_of_one_document_long_enough(model, monkeypatch):
    lengths = [30, 200, 64, 100, 500, 10, 120]
    text, docs = _constant_documents(lengths)
    gap = 64
    assert filler_documents(docs, gap).tolist() == [1, 3, 4, 6]  # longer than the gap; 30, 64 (= the gap), 10 not
    seen = []

    def recording(model, tokens, value_start, amp=False, amp_dtype="bf16"):
        seen.extend(tokens.cpu())
        return torch.zeros(tokens.shape[0], dtype=torch.float64)

    monkeypatch.setattr(long_eval, "value_logprobs", recording)
    recall_prob(model, gap, trials=1000, seed=3, filler=text, device="cpu", batch_size=64, documents=docs)
    letters = []
    for tokens in seen:
        filler = _gap_bytes(tokens, gap)
        assert len(filler) == gap and (filler == filler[0]).all()  # one document's bytes, never a splice
        letters.append(int(filler[0]) - ord("A"))
    counts = np.bincount(letters, minlength=len(lengths))
    assert set(np.flatnonzero(counts)) == {1, 3, 4, 6}
    # Documents drawn in proportion to the spans they hold (136, 36, 436, 56 of 664): the 500-byte one most often.
    assert counts[4] > counts[1] > counts[6] > counts[3]


def test_episodes_are_reproducible_and_equal_a_direct_build(model):
    text, docs = _constant_documents([100, 300, 50])
    first = recall_prob(model, 40, trials=3, seed=5, filler=text, device="cpu", documents=docs)
    again = recall_prob(model, 40, trials=3, seed=5, filler=text, device="cpu", batch_size=1, documents=docs)
    assert first["recall_prob"] == pytest.approx(again["recall_prob"], rel=1e-5)
    rng = random.Random(5)  # episode 0 as recall_prob builds it: document first, then the episode from it
    doc = document_filler(rng, text, docs, filler_documents(docs, 40), 40)
    ep = make_episode(rng, 40, doc)
    single = recall_prob(model, 40, trials=1, seed=5, filler=text, device="cpu", documents=docs)
    with torch.no_grad():
        logits, _, _ = model(ep.tokens[None, :-1])
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    direct = sum(float(logp[t, ep.tokens[t + 1]]) for t in range(ep.value_start - 1, len(ep.tokens) - 1))
    assert single["recall_prob"] == pytest.approx(float(np.exp(direct)), rel=1e-4)


def test_no_document_longer_than_the_gap_is_a_clear_error(model):
    text, docs = _constant_documents([50, 64, 20])
    with pytest.raises(DataError, match="no validation document is longer than the gap of 64 bytes "
                                        r"\(the longest has 64\)"):
        recall_prob(model, 64, trials=2, filler=text, device="cpu", documents=docs)


@pytest.fixture(scope="module")
def collection_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A directory of 30 documents of 40 to 900 bytes and an untrained checkpoint trained 'on' it."""
    root = tmp_path_factory.mktemp("long_docs")
    books = root / "books"
    books.mkdir()
    for i in range(30):
        (books / f"b{i:02d}.txt").write_bytes(random.Random(i).randbytes(40 + 30 * i))
    cfg = load_config(None, [dict(TINY, data=str(books))])
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "hope.pt", {"model_type": "hope", "config": config_to_dict(cfg),
                                              "model": build_model(cfg).state_dict(), "step": 0})
    return books, ckpt


def test_the_commands_draw_filler_by_document_and_count_the_short_ones(collection_ckpt, tmp_path, capsys):
    books, ckpt = collection_ckpt
    val = load_corpus(books).val_docs
    gap = 300
    short = int((val.lengths() <= gap).sum())
    assert 0 < short < len(val)
    note = f"gap {gap}: each episode's filler is a span of one validation document; {short} of {len(val)} documents"
    assert eval_long.main(["--ckpt", str(ckpt), "--gap", str(gap), "--trials", "4", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # stdout stays one JSON object, the note goes to stderr
    assert set(out) == {"recall_prob", "chance", "trials", "gap", "model_type"} and out["gap"] == gap
    assert note in captured.err
    model, cfg, _ = load_model(ckpt, "cpu")
    corpus = load_corpus(books)
    direct = recall_prob(model, gap, trials=4, seed=0, filler=corpus.val, device="cpu", documents=corpus.val_docs)
    assert out["recall_prob"] == pytest.approx(direct["recall_prob"], rel=1e-6)
    csv_out = tmp_path / "long.csv"
    assert track_long.main(["--ckpt", str(ckpt), "--gaps", f"0,{gap}", "--trials", "2", "--device", "cpu",
                            "--out", str(csv_out)]) == 0
    printed = capsys.readouterr().out
    assert note in printed and "gap 0: each episode's filler is a span of one validation document; 0 of" in printed
    rows = list(csv.DictReader(csv_out.open()))
    assert [int(r["gap"]) for r in rows] == [0, gap] and Path(rows[0]["data"]).name == "books"


def test_a_gap_longer_than_every_document_exits_2_with_one_line(collection_ckpt, capsys):
    _, ckpt = collection_ckpt
    rc = eval_long.main(["--ckpt", str(ckpt), "--gap", "5000", "--trials", "2", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: no validation document is longer than the gap of 5000 bytes")
    assert all(line.startswith(("note", "error")) for line in err) and not any("Traceback" in line for line in err)
