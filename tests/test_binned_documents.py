"""`hope-eval-binned` on a collection: one window per validation document, positions counted from the document's
start; documents shorter than max(lengths) + 1 are counted and left out, never padded with the next one."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hope.checkpoint import save_checkpoint
from hope.cli import eval_binned
from hope.config import config_to_dict, load_config
from hope.data.corpus import DataError, Documents, load_corpus
from hope.data.prepare import FileSource, build_collection
from hope.eval.binned import binned_loss, document_windows, position_nll
from hope.models import build_model

TINY = dict(model_type="hope", dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2,
            steps=2, memory_capacity=8, top_k=2, device="cpu", update_frequencies={"mem_write": 8, "error_update": 16})


def _documents(lengths: list[int]) -> Documents:
    return Documents(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), tuple(f"d{i}" for i in range(len(lengths))))


def test_document_windows_start_each_long_enough_document():
    docs = _documents([100, 20, 65, 64, 300, 10])  # 64 + 1 bytes needed
    assert document_windows(docs, 64, None) == ([0, 120, 249], 3)
    assert document_windows(docs, 64, 2) == ([0, 120], 3)  # evenly spread over the long documents
    assert document_windows(docs, 64, 10) == ([0, 120, 249], 3)
    assert document_windows(docs, 5, 3) == ([0, 120, 249], 0)  # documents 0, 2, 4 of 6


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(None, [TINY])).eval()


def test_positions_count_from_each_documents_start(model):
    rng = random.Random(0)
    lengths = [90, 30, 70, 200, 50, 81]
    data = torch.tensor(list(rng.randbytes(sum(lengths))), dtype=torch.uint8)
    docs = _documents(lengths)
    sums, n = position_nll(model, data, 80, None, batch_size=2, device="cpu", documents=docs)
    starts = [0, 190, 440]  # the documents of 90, 200 and 81 bytes; 30, 70 and 50 are shorter than 80 + 1
    assert n == 3 and [int(docs.offsets[i]) for i in (0, 3, 5)] == starts
    expected = torch.zeros(80, dtype=torch.float64)
    for s in starts:  # one document at a time, from its first byte
        row = data[s:s + 81].long()[None]
        with torch.no_grad():
            logits, _, _ = model(row[:, :-1])
        expected += F.cross_entropy(logits.float().transpose(1, 2), row[:, 1:], reduction="none")[0].double()
    assert torch.allclose(sums, expected, rtol=1e-5, atol=1e-5)


def test_no_long_enough_document_is_a_clear_error(model):
    data = torch.zeros(100, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"no validation document has max\(lengths\) \+ 1 = 65 bytes \(the longest has 50"):
        binned_loss(model, data, [32, 64], documents=_documents([50, 50]))


def test_the_cli_reads_documents_of_a_collection(tmp_path, capsys):
    books = tmp_path / "books"
    books.mkdir()
    for i in range(40):
        (books / f"b{i:02d}.txt").write_bytes(random.Random(i).randbytes(40 + 7 * i))
    data = tmp_path / "books.bin"
    build_collection(data, [FileSource(books)], progress=False)
    cfg = load_config(None, [dict(TINY, data=str(data))])
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "hope.pt", {"model_type": "hope", "config": config_to_dict(cfg),
                                                  "model": build_model(cfg).state_dict(), "step": 0})
    val = load_corpus(data).val_docs
    used, short = document_windows(val, 128, None)
    assert used and short  # some validation documents are too short for 128 + 1 bytes
    out = tmp_path / "binned.csv"
    assert eval_binned.main(["--ckpt", str(ckpt), "--lengths", "64,128", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(used)} validation documents read from their start; {short} of {len(val)} shorter" in printed
    rows = list(csv.DictReader(out.open()))
    assert [int(r["tokens"]) for r in rows] == [len(used) * 64, len(used) * 64]
    assert Path(rows[0]["data"]).name == "books.bin"
