"""Long-stream training (`stream.use`) on a collection of documents: a stream starts at a document's start (or a
whole number of streams into it) and never runs into the next document with its state carried; the next stream
starts a fresh state at a newly drawn document; resume in the middle of a document stream is exact.

Documents made of one repeated letter each ('A' + i) make a crossing visible in any byte of a row.
"""

from __future__ import annotations

import inspect
import os
import signal

import numpy as np
import pytest
import torch

import hope.train.loop as loop
from hope.checkpoint import load_checkpoint, save_checkpoint
from hope.data.corpus import Corpus, DataError, Documents, synthetic_corpus
from hope.data.recall import CLOSE, OPEN, SEP
from hope.data.stream import RECALL, StreamSchedule, stream_starts
from hope.train.loop import TrainingInterrupted, train
from test_stream import BPTT, PIECE, SEQ, stream_cfg
from test_train import records

STREAM_STEPS = 4  # reset_bytes = 4 pieces: a stream lasts 4 optimiser steps
STREAM = STREAM_STEPS * PIECE


def _documents(lengths: list[int]) -> Documents:
    return Documents(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                     tuple(f"d{i:02d}" for i in range(len(lengths))))


def _letters(lengths: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), ord("A") + i, dtype=torch.uint8) for i, n in enumerate(lengths)])


TRAIN_LENGTHS = [900, 120, 257, 256, 1500, 40, 700, 300, 2000, 90]  # 257 = STREAM + 1 holds exactly one stream


@pytest.fixture(scope="module")
def letters() -> Corpus:
    val = [400, 300]
    return Corpus(train=_letters(TRAIN_LENGTHS), val=_letters(val), name="letters",
                  train_docs=_documents(TRAIN_LENGTHS), val_docs=_documents(val))


@pytest.fixture(scope="module")
def prose() -> Corpus:
    """Text documents of 40 to 1900 bytes: some hold no stream of 4 pieces, some several."""
    lengths = [(i * 389) % 1900 + 40 for i in range(14)]
    text = synthetic_corpus(sum(lengths) + 2000, seed=4)
    train_docs = _documents(lengths)
    return Corpus(train=text[:sum(lengths)], val=text[sum(lengths):], name="prose", train_docs=train_docs,
                  val_docs=_documents([1000, len(text) - sum(lengths) - 1000]))


@pytest.fixture
def wired(monkeypatch):
    """The loop builds its StreamSchedule from `run.corpus.train`; until hope/train/loop.py's `_batches` passes
    `documents=run.corpus.train_docs` itself, pass the documents of the corpus given to `train` here."""
    if "train_docs" in inspect.getsource(loop._batches):
        return lambda corpus: None

    def wire(corpus: Corpus) -> None:
        def schedule(data, *args, **kwargs):
            if data is corpus.train:
                kwargs.setdefault("documents", corpus.train_docs)
            return StreamSchedule(data, *args, **kwargs)
        monkeypatch.setattr(loop, "StreamSchedule", schedule)
    return wire


def _upper(row: torch.Tensor) -> set[int]:
    """The document letters in a row (recall rows add lowercase keys, digits and control bytes)."""
    return {int(b) for b in row.unique() if ord("A") <= b <= ord("Z")}


# ----------------------------------------------------------------------------- the streams as data


def test_streams_start_at_document_starts_or_whole_streams_into_them():
    docs = _documents([100, 20, 65, 64, 300])
    starts = stream_starts(docs, 32)  # a stream needs 33 bytes: (L - 1) // 32 streams per document
    assert starts.tolist() == [0, 32, 64, 120, 152, 185, 249, 281, 313, 345, 377, 409, 441, 473, 505]
    ends = docs.offsets[np.searchsorted(docs.offsets, starts, side="right")]
    assert (starts + 33 <= ends).all()
    assert stream_starts(docs, 400).tolist() == []


def test_the_schedule_never_crosses_a_document_and_draws_every_stream(letters):
    schedule = StreamSchedule(letters.train, 3, SEQ, BPTT, reset_bytes=STREAM + 10, seed=2, recall_fraction=0.3,
                              recall_episodes=2, documents=letters.train_docs)
    assert schedule.steps_per_stream == STREAM_STEPS and schedule.stream_len == STREAM
    starts = set(stream_starts(letters.train_docs, STREAM).tolist())
    drawn, recall = set(), 0
    for cycle in range(60):
        for slot in range(2):
            rows, offsets = schedule.streams(cycle * STREAM_STEPS, slot)
            for row, offset in zip(rows, offsets):
                assert len(_upper(row)) == 1  # one document's bytes (a recall row: its filler too)
                if offset == RECALL:
                    recall += 1
                    assert (row == OPEN).sum() == 4 and (row == SEP).sum() == 4 and (row == CLOSE).sum() == 2
                    continue
                assert offset in starts and torch.equal(row, letters.train[offset:offset + STREAM + 1].long())
                drawn.add(offset)
    assert drawn == starts and recall > 0  # every stream of every document long enough is drawn in time
    # The documents of 120, 256, 40 and 90 bytes hold no stream of 256 + 1 bytes; 300 holds one and a tail.
    assert {int(letters.train[s]) - ord("A") for s in drawn} == {0, 2, 4, 6, 7, 8}
    assert "6 of 10 training documents hold one" in schedule.note
    assert StreamSchedule(letters.train, 3, SEQ, BPTT, 4 * PIECE, 2).note is None  # a single stream of bytes


def test_stream_length_fits_the_longest_document_and_none_too_short_is_an_error():
    data, docs = _letters([200, 100]), _documents([200, 100])
    schedule = StreamSchedule(data, 2, SEQ, BPTT, reset_bytes=16 * PIECE, seed=0, documents=docs)
    assert schedule.steps_per_stream == 3  # (200 - 1) // 64: as long as the longest document allows
    with pytest.raises(DataError, match=r"no training document holds one optimiser step of a stream.*= 65 bytes "
                                        r"\(the longest has 64\)"):
        StreamSchedule(_letters([64, 60]), 2, SEQ, BPTT, 4 * PIECE, 0, documents=_documents([64, 60]))


# ----------------------------------------------------------------------------- the loop


def test_no_training_stream_crosses_a_document_with_a_carried_state(tmp_path, letters, wired):
    wired(letters)
    cfg = stream_cfg(tmp_path, "hope", reset_bytes=STREAM, steps=9, grad_accum_steps=2, recall_fraction=0.3)
    model = loop.build_model(cfg)
    calls, forward = [], model.forward

    def recording(idx, targets=None, state=None):
        calls.append((state is None, idx.clone(), targets.clone()))
        return forward(idx, targets, state=state)

    model.forward = recording
    train(cfg, corpus=letters, model=model, verbose=False, save=False, final_eval=False)
    assert [fresh for fresh, _, _ in calls] == [True] * 2 + [False] * 6 + [True] * 2 + [False] * 6 + [True] * 2
    streams: dict[int, list[set[int]]] = {}  # slot -> each row's letters since its stream started
    for i, (fresh, x, y) in enumerate(calls):
        slot = i % 2
        if fresh:
            streams[slot] = [set() for _ in range(x.shape[0])]
        for b in range(x.shape[0]):
            streams[slot][b] |= _upper(x[b]) | _upper(y[b])
            assert len(streams[slot][b]) == 1, f"call {i}, row {b} reads documents {streams[slot][b]}"
            if fresh:  # a stream starts at a document's start or a whole stream into it
                assert x[b, 0] in (OPEN, *range(ord("A"), ord("Z") + 1))


@pytest.mark.parametrize("model_type, overrides", [
    ("hope", dict(ema_decay=0.9)),
    ("baseline", dict(grad_accum_steps=2, recall_fraction=0.5)),
], ids=["hope", "baseline-accum-recall"])
def test_resume_in_the_middle_of_a_document_stream_is_exact(tmp_path, prose, wired, model_type, overrides):
    """7 steps == 3 steps, SIGINT, resume to 7, streams of 4 steps inside documents: step 3 continues the carried
    document streams, step 4 starts new ones."""
    wired(prose)
    whole_cfg = stream_cfg(tmp_path / "whole", model_type, reset_bytes=STREAM, steps=7, **overrides)
    whole = train(whole_cfg, corpus=prose, verbose=False)
    cfg = stream_cfg(tmp_path / "split", model_type, reset_bytes=STREAM, steps=7, **overrides)

    def interrupt(step: int, record: dict) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="at step 3/7"):
        train(cfg, corpus=prose, verbose=False, on_step=interrupt)
    ckpt = load_checkpoint(cfg.out)
    slots = ckpt["stream"]["ranks"][0]
    assert ckpt["stream"]["steps_per_stream"] == STREAM_STEPS
    starts = set(stream_starts(prose.train_docs, STREAM).tolist())
    assert all(s["state"] and s["cycle"] == 0 for s in slots)
    assert all(o in starts or o == RECALL for s in slots for o in s["offsets"])  # mid-way through document streams
    rest = train(cfg, corpus=prose, verbose=False, resume=cfg.out)
    assert rest.losses == whole.losses[3:]
    assert rest.val == whole.val
    strip = [{k: v for k, v in r.items() if k not in ("tok/s", "tokens_per_s")} for r in records(whole_cfg)]
    assert strip == [{k: v for k, v in r.items() if k not in ("tok/s", "tokens_per_s")} for r in records(cfg)]
    for name, p in whole.model.named_parameters():
        assert torch.equal(p, dict(rest.model.named_parameters())[name]), name
    save_checkpoint(tmp_path / "no_state.pt", {**ckpt, "stream": None})  # fresh states instead: not the same run
    cold = train(stream_cfg(tmp_path / "cold", model_type, reset_bytes=STREAM, steps=7, **overrides),
                 corpus=prose, verbose=False, save=False, resume=tmp_path / "no_state.pt")
    assert cold.losses[0] != whole.losses[3]
