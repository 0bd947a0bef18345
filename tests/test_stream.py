"""Long-stream training (`stream.use`, truncated BPTT): the loop equals a hand-built loop over the same segments,
streams restart with a fresh state after `reset_bytes`, resume mid-stream is exact, and the state helpers
treat the model state as an opaque pytree that a `weights_only` load reads.

Tiny models (dim 32, depth 1, seq_len 32, batch 2) for a handful of steps on the CPU, as in test_train.py.
"""

from __future__ import annotations

import os
import signal
from typing import NamedTuple

import pytest
import torch

from hope.checkpoint import load_checkpoint, save_checkpoint
from hope.data.corpus import Corpus, synthetic_corpus
from hope.data.recall import OPEN
from hope.data.stream import RECALL, StreamSchedule, stream_rows, steps_per_stream
from hope.models import build_model
from hope.models.state import detach_state, state_from_checkpoint, state_to_checkpoint
from hope.train.loop import TrainingInterrupted, train
from test_train import records, tiny

SEQ, BPTT = 32, 2  # TINY's seq_len; segments per optimiser step
PIECE = SEQ * BPTT  # bytes a row reads per optimiser step


def stream_cfg(tmp_path, model_type: str = "hope", reset_bytes: int = 2 * PIECE, **overrides):
    return tiny(tmp_path, model_type, stream={"use": True, "bptt_segments": BPTT, "reset_bytes": reset_bytes},
                **overrides)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_bytes(synthetic_corpus(20_000, seed=3), name="tiny synthetic")


# ----------------------------------------------------------------------------- state helpers


class Inner(NamedTuple):
    w: torch.Tensor
    tail: torch.Tensor | None


def test_state_helpers_treat_the_state_as_an_opaque_pytree(tmp_path):
    w = torch.randn(2, 3, requires_grad=True)
    state = {"pos": 7, "layers": [Inner(w * 2, None), {"k": torch.ones(2, 1, 4), "mask": torch.ones(2, dtype=bool)}]}
    detached = detach_state(state)
    assert not detached["layers"][0].w.requires_grad and isinstance(detached["layers"][0], Inner)
    torch.save(state_to_checkpoint(state), tmp_path / "s.pt")
    leaves = torch.load(tmp_path / "s.pt", weights_only=True)  # tensors, ints and None only
    template = {"pos": 0, "layers": [Inner(torch.zeros(2, 0), None), {"k": torch.zeros(2, 1, 0),
                                                                        "mask": torch.zeros(2, dtype=bool)}]}
    back = state_from_checkpoint(template, leaves)
    assert back["pos"] == 7 and isinstance(back["layers"][0], Inner) and back["layers"][0].tail is None
    assert torch.equal(back["layers"][0].w, w.detach() * 2) and torch.equal(back["layers"][1]["k"], torch.ones(2, 1, 4))
    with pytest.raises(ValueError, match="leaves"):
        state_from_checkpoint({"pos": 0}, leaves)


# ----------------------------------------------------------------------------- streams as data


def test_streams_are_pure_fit_the_data_and_differ_by_rank_slot_and_cycle(corpus):
    data = corpus.train
    rows, offsets = stream_rows(data, 3, 500, seed=1, rank=0, slot=0, cycle=0)
    again, same = stream_rows(data, 3, 500, seed=1, rank=0, slot=0, cycle=0)
    assert torch.equal(rows, again) and offsets == same and rows.shape == (3, 501)
    for row, offset in zip(rows, offsets):
        assert 0 <= offset <= len(data) - 501 and torch.equal(row, data[offset:offset + 501].long())
    for other in (dict(rank=1), dict(slot=1), dict(cycle=1)):
        assert stream_rows(data, 3, 500, seed=1, **{"rank": 0, "slot": 0, "cycle": 0, **other})[1] != offsets
    recall, marks = stream_rows(data, 3, 500, seed=1, recall_fraction=1.0, recall_episodes=2)
    assert marks == [RECALL] * 3 and all((row == OPEN).sum() == 4 for row in recall)  # 2 writes + 2 queries each
    assert steps_per_stream(10_000, 64, 16384) == (10_000 - 1) // 64  # a short split ends the stream early
    assert steps_per_stream(100_000, 64, 200) == 3  # whole steps within reset_bytes


def test_schedule_reads_consecutive_pieces_and_restarts_each_cycle(corpus):
    schedule = StreamSchedule(corpus.train, 2, SEQ, BPTT, reset_bytes=3 * PIECE + 10, seed=5)
    assert schedule.steps_per_stream == 3
    pieces = [schedule.piece(step, 0) for step in range(7)]
    assert [fresh for _, _, fresh in pieces] == [True, False, False, True, False, False, True]
    for (x, y, _), (x_next, _, fresh) in zip(pieces, pieces[1:]):
        assert x.shape == (2, PIECE) and torch.equal(y[:, :-1], x[:, 1:])
        assert fresh or torch.equal(x_next[:, 0], y[:, -1])  # within a stream, each step starts where the last ended
    _, offsets = schedule.streams(0, 0)
    stream = torch.cat([x for x, _, _ in pieces[:3]], dim=1)
    assert all(torch.equal(stream[b], corpus.train[o:o + 3 * PIECE].long()) for b, o in enumerate(offsets))
    assert schedule.streams(3, 0)[1] != offsets and schedule.streams(0, 1)[1] != offsets


# ----------------------------------------------------------------------------- the loop equals a hand-built loop


def hand_built_loop(cfg, corpus, steps: int, detach_between_segments: bool = False):
    """Truncated BPTT written out with the model alone: per step and micro-batch slot, the step's `BPTT`
    segments in turn, each from the state the previous left (not detached), the mean loss backpropagated,
    the state detached and kept for the slot's next step; fresh state where a stream starts."""
    torch.manual_seed(0)
    model = build_model(cfg).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.base_momentum)
    accum, span = cfg.grad_accum_steps, steps_per_stream(len(corpus.train), PIECE, cfg.stream.reset_bytes)
    states, losses = [None] * accum, []
    for step in range(steps):
        cycle, k = divmod(step, span)
        total = 0.0
        for slot in range(accum):
            rows, _ = stream_rows(corpus.train, cfg.batch_size, span * PIECE, cfg.seed, 0, slot, cycle)
            state = None if k == 0 else states[slot]
            loss = 0.0
            for seg in range(BPTT):
                at = k * PIECE + seg * SEQ
                _, seg_loss, state = model(rows[:, at:at + SEQ], rows[:, at + 1:at + SEQ + 1], state=state)
                loss = loss + seg_loss / BPTT  # segments of equal size: the piece's mean loss
                if detach_between_segments:
                    state = detach_state(state)
            (loss / accum).backward()
            states[slot] = detach_state(state)
            total += loss.item() / accum
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    return model, losses


@pytest.mark.parametrize("model_type, accum", [("hope", 1), ("hope", 2), ("baseline", 2)])
def test_carried_state_equals_a_hand_built_loop_over_the_segments(tmp_path, corpus, model_type, accum):
    """5 steps, streams of 2 steps (restarts at steps 0, 2, 4): losses and final weights equal the hand loop."""
    cfg = stream_cfg(tmp_path, model_type, steps=5, grad_accum_steps=accum, optimizer_type="sgd", lr=0.05,
                     min_lr=0.05, warmup_steps=0, weight_decay=0.0, grad_clip_norm=0.0,
                     update_frequencies={"mem_write": 8, "error_update": 8, "optimizer_step": 1})
    torch.manual_seed(0)
    result = train(cfg, corpus=corpus, model=build_model(cfg).double(), verbose=False, save=False, final_eval=False)
    model, losses = hand_built_loop(cfg, corpus, steps=5)
    # The model takes its loss in float32 (logits.float()), and the loop's is the mean over the whole piece where
    # the hand loop averages the segments' means: equal up to float32 rounding.
    assert result.losses == pytest.approx(losses, rel=1e-6, abs=0)
    for (name, a), (_, b) in zip(result.model.named_parameters(), model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=name)
    # Not vacuous: gradients cross the segment boundary inside a step, and the carried state changes the loss.
    cut, cut_losses = hand_built_loop(cfg, corpus, steps=5, detach_between_segments=True)
    gap = max((a - b).abs().max().item() for a, b in zip(model.parameters(), cut.parameters()))
    assert gap > 1e-4, gap  # (it is ~5e-3)
    assert cut_losses[0] == pytest.approx(losses[0], rel=1e-12)  # same forward: only the gradients differ
    torch.manual_seed(0)
    fresh = build_model(cfg).double()
    rows, _ = stream_rows(corpus.train, cfg.batch_size, 2 * PIECE, cfg.seed, 0, 0, 0)
    with torch.no_grad():
        _, _, state = fresh(rows[:, :PIECE], rows[:, 1:PIECE + 1])
        carried = fresh(rows[:, PIECE:2 * PIECE], rows[:, PIECE + 1:], state=state)[1]
        cold = fresh(rows[:, PIECE:2 * PIECE], rows[:, PIECE + 1:])[1]
    assert abs(carried.item() - cold.item()) > 1e-4


def test_a_stream_restarts_with_a_fresh_state_after_reset_bytes(tmp_path, corpus):
    cfg = stream_cfg(tmp_path, "hope", reset_bytes=3 * PIECE, steps=7, recall_fraction=0.5)
    model = build_model(cfg)
    seen, forward = [], model.forward

    def recording(idx, targets=None, state=None):
        seen.append((state is None, None if state is None else pytree_positions(state), idx.clone()))
        return forward(idx, targets, state=state)

    model.forward = recording
    train(cfg, corpus=corpus, model=model, verbose=False, save=False, final_eval=False)
    assert [fresh for fresh, _, _ in seen] == [True, False, False, True, False, False, True]
    assert [pos for _, pos, _ in seen] == [None, PIECE, 2 * PIECE, None, PIECE, 2 * PIECE, None]
    for (_, _, x), (fresh, _, x_next) in zip(seen, seen[1:]):
        assert x.shape == (cfg.batch_size, PIECE)
        if fresh:  # a new stream at a new offset, not the continuation
            assert not torch.equal(x_next[:, :SEQ], x[:, SEQ:])


def pytree_positions(state) -> int:
    """The stream position the state is at: the only int leaf of today's state (checked, not assumed)."""
    ints = [leaf for leaf in torch.utils._pytree.tree_leaves(state) if isinstance(leaf, int)]
    assert len(set(ints)) == 1
    return ints[0]


# ----------------------------------------------------------------------------- exact resume mid-stream


def _interrupt_at(stop_step: int):
    def on_step(step: int, record: dict) -> None:
        if step == stop_step:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step


@pytest.mark.parametrize("model_type, overrides", [
    ("hope", dict(ema_decay=0.9)),
    ("baseline", dict(grad_accum_steps=2, recall_fraction=0.5, dropout=0.1)),
], ids=["hope", "baseline-accum-recall-dropout"])
def test_resume_mid_stream_is_exact(tmp_path, corpus, model_type, overrides):
    """6 steps == 3 steps, SIGINT, resume to 6, with streams of 4 steps: the carried states travel in the
    checkpoint (and without them the resumed run differs)."""
    whole_cfg = stream_cfg(tmp_path / "whole", model_type, reset_bytes=4 * PIECE, steps=6, **overrides)
    whole = train(whole_cfg, corpus=corpus, verbose=False)
    cfg = stream_cfg(tmp_path / "split", model_type, reset_bytes=4 * PIECE, steps=6, **overrides)
    with pytest.raises(TrainingInterrupted, match="at step 3/6"):
        train(cfg, corpus=corpus, verbose=False, on_step=_interrupt_at(3))
    ckpt = load_checkpoint(cfg.out)  # weights_only
    slots = ckpt["stream"]["ranks"][0]
    assert len(slots) == cfg.grad_accum_steps and all(s["state"] and s["cycle"] == 0 for s in slots)
    rest = train(cfg, corpus=corpus, verbose=False, resume=cfg.out)
    assert rest.losses == whole.losses[3:]
    assert rest.val == whole.val
    strip = [{k: v for k, v in r.items() if k not in ("tok/s", "tokens_per_s")} for r in records(whole_cfg)]
    assert strip == [{k: v for k, v in r.items() if k not in ("tok/s", "tokens_per_s")} for r in records(cfg)]
    for name, p in whole.model.named_parameters():
        assert torch.equal(p, dict(rest.model.named_parameters())[name]), name
    save_checkpoint(tmp_path / "no_state.pt", {**ckpt, "stream": None})  # resume with fresh states instead
    cold = train(stream_cfg(tmp_path / "cold", model_type, reset_bytes=4 * PIECE, steps=6, **overrides),
                 corpus=corpus, verbose=False, save=False, resume=tmp_path / "no_state.pt")
    assert cold.losses[0] != whole.losses[3]


def test_resume_refuses_streams_of_another_shape(tmp_path, corpus):
    cfg = stream_cfg(tmp_path, "baseline", reset_bytes=4 * PIECE, steps=4)
    with pytest.raises(TrainingInterrupted):
        train(cfg, corpus=corpus, verbose=False, on_step=_interrupt_at(1))
    other = stream_cfg(tmp_path, "baseline", reset_bytes=3 * PIECE, steps=4)
    with pytest.raises(Exception, match="cannot continue its streams.*reset_bytes changed"):
        train(other, corpus=corpus, verbose=False, resume=cfg.out)
