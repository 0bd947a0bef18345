"""Long-context recall: p(VALUE | everything before it) in synthetic key/value episodes (`hope.data.recall`),
and key lookup: MQAR accuracy at the answers of multi-query rows (`hope.data.mqar`, `task="mqar"`).

    ... \x01 KEY \x02 VALUE \x03 <gap bytes of filler> \x01 KEY \x02 VALUE
                                                                  ^^^^^ scored

The recall probability of one episode is the product over the value bytes of p(byte | all earlier bytes), i.e.
exp of the summed log-probabilities at the value positions; `recall_prob` averages it over `trials` episodes.
A model that knows the format but remembers nothing scores `chance_level()` (10**-2 for two digits).

The model reads each episode as one stream: inputs longer than a segment are processed segment by segment with the
state carried (HOPE carries its memories; the baseline slides its `max_len` attention window, so past that gap it
cannot see the write any more and should fall to chance: that is the comparison, not a defect to hide).
We feed the stream in pieces of whole segments ourselves and keep only the log-probabilities at the value
positions, so memory does not grow with the gap (a gap of 1M bytes holds no (T, 256) logits tensor).

The gap's filler is text of the validation split. On a single file it is a random span of the split. On a
collection of documents (`Corpus.val_docs`) it is a random span of one document (`document_filler`): the
filler never runs from the end of one document into the start of the next, so what the model reads between
write and query is one continuous text, not a splice. The span is drawn uniformly over all the spans of `gap`
bytes that lie inside a document (its document in proportion to the spans it holds), which is the single
file's draw restricted to spans that cross no boundary; where in its document the span starts does not matter
here (the state is fresh at the write, unlike `hope-eval-binned`, which reads each document from its start).
Documents not longer than the gap are skipped and counted in a note, never padded with the next one.

MQAR (`mqar_accuracy`): P pairs, a gap of random filler bytes, the P keys again in a shuffled order. Per row, the
accuracy is the fraction of its P answers whose top-1 byte (over all 256) is the value; `accuracy` averages it
over rows, `value_prob` is the mean p(value) over all answers. Reported beside them: `chance` = 1/64 (a model
that knows which bytes are values), `repeat` = 1/P (one that repeats the last value written) and `elimination`
= H_P/P (one that answers with a written value not yet answered), and `first_accuracy`, the accuracy on each
row's first query, where only a lookup beats 1/P: so neither a copy nor an elimination passes for a lookup.

Repeated-text recall (`copy_gain`, `task="copy"`): a passage P of N validation bytes, G bytes of other
validation text, then P again, read in one stream from a fresh state after a lead of L bytes of other text:

    [ lead (L) | P (N) | gap (G) | P (N) ]
                  ^^^^^^           ^^^^^^ scored: passage bytes 1..N-1 of each occurrence

The lead and the gap are the two ends of one span of text: the N + max(L, G) bytes that follow P where it
was drawn, T, give lead = T[-L:] and gap = T[-G:], so the same min(L, G) bytes come right before both
occurrences, and neither overlaps P. loss_first and loss_second are the model's mean next-byte loss (nats)
over bytes 1..N-1 of each occurrence (byte 0 of each is left out: it follows the lead or the gap, not the
passage), copy_gain = loss_first - loss_second, and copy_gain_se the standard error of the per-passage
difference (its sd / sqrt(samples)). Why a lead: from a fresh state the first occurrence would be read with
no context and an empty memory, the second after L + N + G bytes of text, so any model would gain from the
context alone. With the lead, a model that sees no further back than min(L, G) bytes (a sliding window whose
reach is shorter than the gap and the lead) reads both occurrences after the very same bytes and its gain is
exactly zero; a gain past the window is carried by something else (a memory). A model whose loss drifts with
the position in the stream (a memory state that wanders on long streams) shows that drift in copy_gain too;
`control=True` reads each row a second time with another passage in the first occurrence's place and reports
control_gain = loss_control - loss_second, the passage's own worth at the same place. On a single file the
N + max(L, G) bytes are a random span of the split; on a collection, a span of one validation document drawn
as the episodes' filler is (`document_filler`; documents shorter than the span are left out, counted in a note).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hope.data.corpus import DataError, Documents, data_exists, load_corpus
from hope.config import Config
from hope.data import mqar
from hope.data.recall import VALUE_LEN, chance_level, episode_overhead, make_episode
from hope.errors import HopeError
from hope.runtime import autocast

PIECE_TOKENS = 2048  # bytes fed per model call (rounded to whole segments); bounds the logits held at once
TASKS = ("episodes", "mqar", "copy")
COPY_PASSAGE = 256  # bytes per passage (--passage)
COPY_LEAD = 1024  # bytes of other text before the first occurrence (--lead)


def recall_filler(data: str | Path | None, seed: int = 0) -> torch.Tensor:
    """Filler bytes for the episodes: the validation split of `data` (None: the synthetic corpus)."""
    return load_corpus(data, seed=seed).val


@dataclass(frozen=True)
class Filler:
    """Where the episodes' filler comes from: the validation bytes and, for a collection, their documents."""

    text: torch.Tensor  # (N,) uint8
    documents: Documents | None  # None: one stream of bytes (a file, the synthetic corpus)
    name: str


def recall_source(data: str | Path | None, seed: int = 0) -> Filler:
    """The validation split of `data` (None: the synthetic corpus) with its document boundaries."""
    corpus = load_corpus(data, seed=seed)
    return Filler(corpus.val, corpus.val_docs, corpus.name)


def filler_documents(documents: Documents, gap: int) -> np.ndarray:
    """The documents a `gap`-byte filler can be drawn from (longer than the gap), as indices."""
    return np.flatnonzero(documents.lengths() > gap)


def document_filler(rng: random.Random, text: torch.Tensor, documents: Documents, usable: np.ndarray,
                    gap: int) -> torch.Tensor:
    """One document of `usable` (`filler_documents`) drawn in proportion to the `gap`-byte spans it holds (as
    `make_episode` draws the span inside it, every span inside a document is equally likely): its bytes."""
    doc = _draw_document(rng, documents, usable, gap)
    return text[int(documents.offsets[doc]):int(documents.offsets[doc + 1])]


def _draw_document(rng: random.Random, documents: Documents, usable: np.ndarray, gap: int) -> int:
    """`document_filler`'s draw: the index of the document."""
    lengths = documents.lengths()[usable]
    cum = np.cumsum(lengths - gap).tolist()
    (doc,) = rng.choices(usable.tolist(), cum_weights=cum)
    return doc


def _piece_len(model: torch.nn.Module) -> int:
    seg = int(getattr(getattr(model, "cfg", None), "seq_len", 0) or PIECE_TOKENS)
    return max(seg, (PIECE_TOKENS // seg) * seg)  # whole segments: the same segmentation as one long call


def _check_counts(gap: int, count: int, batch_size: int, name: str) -> None:
    """One-line errors for a negative gap and a non-positive sample count (`name`) or batch size."""
    if gap < 0:
        raise HopeError(f"gap must be >= 0, got {gap}")
    if count <= 0 or batch_size <= 0:
        raise HopeError(f"{name} and batch_size must be > 0, got {count} and {batch_size}")


def _model_device(model: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    """`device`, or the model's when None."""
    return torch.device(next(model.parameters()).device if device is None else device)


@torch.no_grad()
def value_logprobs(model: torch.nn.Module, tokens: torch.Tensor, value_start: int, amp: bool = False,
                   amp_dtype: str = "bf16") -> torch.Tensor:
    """Summed log p(tokens[:, value_start:] | earlier bytes) per row, streaming with carried state.

    tokens (B, L) int64 on the model's device; returns (B,) float64.
    """
    inputs = tokens[:, :-1]  # position t predicts tokens[:, t + 1]
    first = value_start - 1  # first input position whose prediction is scored
    piece = _piece_len(model)
    device = tokens.device
    total = torch.zeros(tokens.shape[0], dtype=torch.float64, device=device)
    state = None
    for start in range(0, inputs.shape[1], piece):
        end = min(start + piece, inputs.shape[1])
        with autocast(device, amp, amp_dtype):
            logits, _, state = model(inputs[:, start:end], state=state)  # (B, T_piece, 256)
        lo = max(first, start)
        if lo >= end:
            continue
        logp = torch.log_softmax(logits[:, lo - start:].float(), dim=-1)  # (B, end - lo, 256)
        target = tokens[:, lo + 1:end + 1]  # (B, end - lo)
        total += logp.gather(-1, target[..., None])[..., 0].double().sum(dim=1)
    return total


@torch.no_grad()
def recall_prob(model: torch.nn.Module, gap: int, trials: int = 64, seed: int = 0, filler: torch.Tensor | None = None,
                device: torch.device | str | None = None, batch_size: int = 16, amp: bool = False,
                amp_dtype: str = "bf16", documents: Documents | None = None) -> dict[str, float | int]:
    """Mean recall probability of the value over `trials` episodes with `gap` filler bytes between write and query.

    Episode i is `make_episode(random.Random(seed + i), gap, filler)`, so runs are reproducible and two models
    given the same seed and filler see exactly the same episodes. With `documents` (the boundaries of `filler`'s
    documents) the same generator first draws the episode's document (`document_filler`) and the span comes from
    it alone; DataError when no document is longer than the gap. Episodes of equal length run as one batch.
    Returns {recall_prob, chance, trials, gap}.
    """
    _check_counts(gap, trials, batch_size, "trials")
    if filler is None:
        filler = recall_filler(None, seed)
    device = _model_device(model, device)
    if documents is None:
        episodes = [make_episode(random.Random(seed + i), gap, filler) for i in range(trials)]
    else:
        usable = filler_documents(documents, gap)
        if not len(usable):
            longest = int(documents.lengths().max()) if len(documents) else 0
            raise DataError(f"no validation document is longer than the gap of {gap} bytes (the longest has "
                            f"{longest}); use a smaller gap or a collection of longer documents")
        episodes = []
        for i in range(trials):
            rng = random.Random(seed + i)
            episodes.append(make_episode(rng, gap, document_filler(rng, filler, documents, usable, gap)))
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        groups[(len(ep.tokens), ep.value_start)].append(i)
    was_training = model.training
    model.eval()
    probs = torch.zeros(trials, dtype=torch.float64)
    try:
        for (_, value_start), members in groups.items():
            for b in range(0, len(members), batch_size):
                rows = members[b:b + batch_size]
                tokens = torch.stack([episodes[i].tokens for i in rows]).to(device)  # (B, L)
                logp = value_logprobs(model, tokens, value_start, amp, amp_dtype)
                probs[rows] = logp.exp().cpu()
    finally:
        model.train(was_training)
    value_len = len(episodes[0].tokens) - episodes[0].value_start
    p = float(probs.mean())
    if not math.isfinite(p):
        raise HopeError(f"recall probability at gap {gap} is not finite (the model produced NaN/inf logits)")
    return {"recall_prob": p, "chance": chance_level(value_len), "trials": trials, "gap": gap}


@torch.no_grad()
def answer_logprobs(model: torch.nn.Module, tokens: torch.Tensor, answers: torch.Tensor, amp: bool = False,
                    amp_dtype: str = "bf16") -> torch.Tensor:
    """log p(. | earlier bytes) at the answer indices, streaming with carried state.

    tokens (B, L) int64 on the model's device, answers (P,) indices into L shared by the rows (each > 0);
    returns (B, P, 256) float32: the distribution the model gives each answer byte.
    """
    inputs = tokens[:, :-1]  # position t predicts tokens[:, t + 1]
    wanted = answers.tolist()
    where = {a - 1: i for i, a in enumerate(wanted)}  # input position -> answer number
    piece = _piece_len(model)
    out = torch.zeros(tokens.shape[0], len(wanted), 256, dtype=torch.float32, device=tokens.device)
    state = None
    stop = max(wanted)  # nothing after the last answer is needed
    for start in range(0, stop, piece):
        end = min(start + piece, stop)
        with autocast(tokens.device, amp, amp_dtype):
            logits, _, state = model(inputs[:, start:end], state=state)  # (B, T_piece, 256)
        here = [(t, i) for t, i in where.items() if start <= t < end]
        if here:
            pos = torch.tensor([t - start for t, _ in here], device=tokens.device)
            idx = torch.tensor([i for _, i in here], device=tokens.device)
            out[:, idx] = torch.log_softmax(logits[:, pos].float(), dim=-1)  # (B, n_here, 256)
    return out


@dataclass
class MQARHits:
    """Per-answer outcomes of `mqar_hits` on `trials` rows of P pairs, in query order."""

    rows: list[mqar.MQARRow]  # the rows scored (their tokens say which key each query asks)
    hit: torch.Tensor  # (trials, P) bool: the top-1 byte is the value
    prob: torch.Tensor  # (trials, P) float64: p(value)


@torch.no_grad()
def mqar_hits(model: torch.nn.Module, pairs: int, gap: int, trials: int = 64, seed: int = 0,
              device: torch.device | str | None = None, batch_size: int = 16, amp: bool = False,
              amp_dtype: str = "bf16", hide_answers: bool = False) -> MQARHits:
    """Score every answer of `trials` MQAR rows of `pairs` pairs and a `gap`-byte filler gap.

    Row i is `hope.data.mqar.make_row(random.Random(seed + i), pairs, gap, hide_answers=hide_answers)`, so two
    models given the same seed see the same rows. `mqar_accuracy` summarises the outcome;
    scripts/mqar_breakdown.py splits it by query order.
    """
    try:
        mqar.check_pairs(pairs)
    except ValueError as exc:
        raise HopeError(str(exc)) from None
    _check_counts(gap, trials, batch_size, "trials")
    device = _model_device(model, device)
    rows = [mqar.make_row(random.Random(seed + i), pairs, gap, hide_answers=hide_answers) for i in range(trials)]
    answers = rows[0].answers  # every row of one (pairs, gap) has the same layout
    was_training = model.training
    model.eval()
    hit = torch.zeros(trials, pairs, dtype=torch.bool)
    prob = torch.zeros(trials, pairs, dtype=torch.float64)
    try:
        for b in range(0, trials, batch_size):
            batch = rows[b:b + batch_size]
            tokens = torch.stack([r.tokens for r in batch]).to(device)  # (B, L)
            logp = answer_logprobs(model, tokens, answers, amp, amp_dtype)  # (B, P, 256)
            target = torch.stack([r.values for r in batch]).to(device)  # (B, P)
            hit[b:b + len(batch)] = (logp.argmax(-1) == target).cpu()
            prob[b:b + len(batch)] = logp.gather(-1, target[..., None])[..., 0].double().exp().cpu()
    finally:
        model.train(was_training)
    if not torch.isfinite(prob).all():
        raise HopeError(f"MQAR p(value) at gap {gap} is not finite (the model produced NaN/inf logits)")
    return MQARHits(rows=rows, hit=hit, prob=prob)


def mqar_accuracy(model: torch.nn.Module, pairs: int, gap: int, trials: int = 64, seed: int = 0,
                  device: torch.device | str | None = None, batch_size: int = 16, amp: bool = False,
                  amp_dtype: str = "bf16", hide_answers: bool = False) -> dict[str, float | int | str]:
    """MQAR accuracy over `trials` rows of `pairs` pairs and a `gap`-byte filler gap (the rows of `mqar_hits`).

    Returns {accuracy, first_accuracy, value_prob, chance, repeat, elimination, pairs, answers, trials, gap}:
    accuracy is the top-1 accuracy over a row's answers averaged over rows, first_accuracy the same on each row's
    first query only (where no answer has been shown yet, so eliminating answered values cannot help: its levels
    are chance and 1/P), value_prob the mean p(value) over all answers; chance, repeat and elimination are the
    levels of the three shortcuts (`hope.data.mqar`; with `hide_answers` nothing is shown to eliminate, so
    elimination is the repeat level), answers "shown" or "hidden".
    """
    out = mqar_hits(model, pairs, gap, trials, seed, device, batch_size, amp, amp_dtype, hide_answers)
    repeat = mqar.repeat_level(pairs)
    return {"accuracy": out.hit.double().mean().item(), "first_accuracy": out.hit[:, 0].double().mean().item(),
            "value_prob": out.prob.mean().item(), "chance": mqar.chance_level(), "repeat": repeat,
            "elimination": repeat if hide_answers else mqar.elimination_level(pairs), "pairs": pairs,
            "answers": "hidden" if hide_answers else "shown", "trials": trials, "gap": gap}


def check_copy(passage: int, lead: int) -> None:
    """HopeError unless `passage` >= 2 (byte 0 of each occurrence is not scored) and `lead` >= 0."""
    if passage < 2:
        raise HopeError(f"--passage must be >= 2 bytes (the first byte of each occurrence is not scored), got "
                        f"{passage}")
    if lead < 0:
        raise HopeError(f"--lead must be >= 0 bytes, got {lead}")


def copy_span(passage: int, gap: int, lead: int = COPY_LEAD) -> int:
    """Bytes of text one copy row is cut from: the passage and the max(lead, gap) bytes that follow it."""
    return passage + max(lead, gap)


def make_copy_row(rng: random.Random, text: torch.Tensor, passage: int, gap: int,
                  lead: int = COPY_LEAD) -> torch.Tensor:
    """[lead, P, gap, P] (int64, lead + 2 * passage + gap bytes) from a random span of `text` (`copy_span` bytes:
    P, then T; lead = T[-lead:], gap = T[-gap:], so the same min(lead, gap) bytes precede both occurrences)."""
    start = rng.randrange(len(text) - copy_span(passage, gap, lead) + 1)
    return _copy_row(text, start, passage, gap, lead)


def _copy_row(text: torch.Tensor, start: int, passage: int, gap: int, lead: int) -> torch.Tensor:
    cut = text[start:start + copy_span(passage, gap, lead)].long()
    p, t = cut[:passage], cut[passage:]
    return torch.cat([t[len(t) - lead:], p, t[len(t) - gap:], p])


def _span_start(rng: random.Random, size: int, documents: Documents | None, usable: np.ndarray | None,
                span: int) -> int:
    """Where a random `span`-byte span of the text starts: anywhere in a single text of `size` bytes; on a
    collection inside one document of `usable`, drawn as `document_filler` draws it (the same draws of `rng`
    as `make_copy_row` on that document)."""
    if documents is None:
        return rng.randrange(size - span + 1)
    assert usable is not None
    doc = _draw_document(rng, documents, usable, span - 1)
    lo, hi = int(documents.offsets[doc]), int(documents.offsets[doc + 1])
    return lo + rng.randrange(hi - lo - span + 1)


CONTROL_TRIES = 100  # draws for a control passage that does not overlap the passage


def copy_rows(text: torch.Tensor, passage: int, gap: int, lead: int = COPY_LEAD, samples: int = 64, seed: int = 0,
              documents: Documents | None = None,
              control: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The rows of `copy_gain` and, with `control`, each one's control: the same row with its first occurrence
    replaced by another passage of the text (on a collection, from one document) that does not overlap it.

    Row i comes from `random.Random(seed + i)` (its control from the same generator, after it). DataError when
    no span of `copy_span` bytes fits (the text, or every document, is shorter) or no control passage is found.
    """
    span = copy_span(passage, gap, lead)
    need = f"{span} bytes (--passage {passage} + max(--lead {lead}, --gap {gap}))"
    usable = usable_q = None
    if documents is None:
        if len(text) < span:
            raise DataError(f"the validation text has {len(text)} bytes, fewer than the {need} one passage and its "
                            "gap are cut from; use a smaller --passage, --gap or --lead, or more text")
    else:
        usable = filler_documents(documents, span - 1)  # documents of at least `span` bytes
        usable_q = filler_documents(documents, passage - 1)
        if not len(usable):
            longest = int(documents.lengths().max()) if len(documents) else 0
            raise DataError(f"no validation document holds the {need} one passage and its gap are cut from (the "
                            f"longest has {longest}); use a smaller --passage, --gap or --lead, or longer documents")
    rows, controls = [], []
    for i in range(samples):
        rng = random.Random(seed + i)
        start = _span_start(rng, len(text), documents, usable, span)
        rows.append(_copy_row(text, start, passage, gap, lead))
        if not control:
            continue
        for _ in range(CONTROL_TRIES):
            other = _span_start(rng, len(text), documents, usable_q, passage)
            if other + passage <= start or start + passage <= other:
                break
        else:
            raise DataError(f"no control passage of {passage} bytes apart from the passage found in {CONTROL_TRIES} "
                            f"draws: the validation text of {len(text)} bytes is too short for --control")
        row = rows[-1].clone()
        row[lead:lead + passage] = text[other:other + passage].long()
        controls.append(row)
    return rows, (controls if control else None)


def copy_spans(passage: int, gap: int, lead: int = COPY_LEAD) -> tuple[tuple[int, int], tuple[int, int]]:
    """The target indices scored in a copy row, [lo, hi) for each occurrence: its passage bytes 1..N-1."""
    first = lead
    second = lead + passage + gap
    return (first + 1, first + passage), (second + 1, second + passage)


@torch.no_grad()
def span_logprobs(model: torch.nn.Module, tokens: torch.Tensor, spans: list[tuple[int, int]], amp: bool = False,
                  amp_dtype: str = "bf16") -> torch.Tensor:
    """Summed log p(tokens[:, t] | tokens[:, :t]) over the targets t of each span [lo, hi) (lo >= 1), per row,
    streaming with carried state from a fresh one; nothing after the last span is read.

    tokens (B, L) int64 on the model's device; returns (B, len(spans)) float64.
    """
    if any(lo < 1 or hi <= lo or hi > tokens.shape[1] for lo, hi in spans):
        raise ValueError(f"spans {spans} must lie in [1, {tokens.shape[1]}] and be non-empty")
    inputs = tokens[:, :-1]  # position t predicts tokens[:, t + 1]
    stop = max(hi for _, hi in spans) - 1  # the inputs [0, stop) predict every target up to the last span's
    piece = _piece_len(model)
    out = torch.zeros(tokens.shape[0], len(spans), dtype=torch.float64, device=tokens.device)
    state = None
    for start in range(0, stop, piece):
        end = min(start + piece, stop)
        with autocast(tokens.device, amp, amp_dtype):
            logits, _, state = model(inputs[:, start:end], state=state)  # (B, T_piece, 256)
        for s, (lo, hi) in enumerate(spans):
            a, b = max(lo - 1, start), min(hi - 1, end)  # the input positions of this piece scored for span s
            if a >= b:
                continue
            logp = torch.log_softmax(logits[:, a - start:b - start].float(), dim=-1)  # (B, b - a, 256)
            out[:, s] += logp.gather(-1, tokens[:, a + 1:b + 1, None])[..., 0].double().sum(dim=1)
    return out


@torch.no_grad()
def copy_gain(model: torch.nn.Module, gap: int, passage: int = COPY_PASSAGE, samples: int = 64, seed: int = 0,
              text: torch.Tensor | None = None, device: torch.device | str | None = None, batch_size: int = 16,
              amp: bool = False, amp_dtype: str = "bf16", documents: Documents | None = None,
              lead: int = COPY_LEAD, control: bool = False) -> dict[str, float | int | None]:
    """Repeated-text recall: the mean next-byte loss on a passage's first and second occurrence, `gap` bytes of
    other text apart, over `samples` passages of `passage` bytes (the module's docstring gives the layout).

    The rows are `copy_rows(text, passage, gap, lead, samples, seed, documents, control)`, so two models given
    the same seed and text read the same rows. `text` is the validation bytes (None: the synthetic corpus),
    `documents` their document boundaries.
    Returns {copy_gain, copy_gain_se, loss_first, loss_second, loss_control, control_gain, control_gain_se,
    samples, passage, lead, gap}: losses in nats per byte over bytes 1..passage-1 of an occurrence,
    copy_gain = loss_first - loss_second, copy_gain_se the standard error of the per-passage differences (None for
    one passage). With `control`, loss_control is the loss on the second occurrence when another passage took the
    first one's place, and control_gain = loss_control - loss_second (what having read this passage, rather than
    another, is worth at the same place in the stream: for a model whose loss drifts along the stream,
    copy_gain mixes that drift in, control_gain does not); without it those three are None.
    """
    check_copy(passage, lead)
    _check_counts(gap, samples, batch_size, "samples")
    if text is None:
        text = recall_filler(None, seed)
    device = _model_device(model, device)
    rows, controls = copy_rows(text, passage, gap, lead, samples, seed, documents, control)
    first, second = copy_spans(passage, gap, lead)
    was_training = model.training
    model.eval()
    sums = torch.zeros(samples, 3, dtype=torch.float64)  # first, second, second after the control passage
    try:
        for b in range(0, samples, batch_size):
            tokens = torch.stack(rows[b:b + batch_size]).to(device)  # (B, lead + 2 * passage + gap)
            sums[b:b + len(tokens), :2] = span_logprobs(model, tokens, [first, second], amp, amp_dtype).cpu()
            if controls is not None:
                tokens = torch.stack(controls[b:b + batch_size]).to(device)
                sums[b:b + len(tokens), 2:] = span_logprobs(model, tokens, [second], amp, amp_dtype).cpu()
    finally:
        model.train(was_training)
    loss = -sums / (passage - 1)  # (samples, 3): mean nats per scored byte
    if not torch.isfinite(loss).all():
        raise HopeError(f"the copy losses at gap {gap} are not finite (the model produced NaN/inf logits)")

    def gain(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float | None]:
        diff = a - b
        return float(diff.mean()), (float(diff.std(correction=1)) / math.sqrt(samples) if samples > 1 else None)

    copy, copy_se = gain(loss[:, 0], loss[:, 1])
    ctrl, ctrl_se = gain(loss[:, 2], loss[:, 1]) if control else (None, None)
    return {"copy_gain": copy, "copy_gain_se": copy_se, "loss_first": float(loss[:, 0].mean()),
            "loss_second": float(loss[:, 1].mean()),
            "loss_control": float(loss[:, 2].mean()) if control else None, "control_gain": ctrl,
            "control_gain_se": ctrl_se, "samples": samples, "passage": passage, "lead": lead, "gap": gap}


def copy_line(res: dict) -> str:
    """`copy_gain`'s result in words: 'gap G passage N: loss first .., second .., copy gain +.. (se ..) ...'."""
    def se(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    line = (f"gap {res['gap']} passage {res['passage']}: loss first {res['loss_first']:.4f}, second "
            f"{res['loss_second']:.4f}, copy gain {res['copy_gain']:+.4f} (se {se(res['copy_gain_se'])}) nats/byte "
            f"over {res['samples']} passages")
    if res.get("control_gain") is not None:
        line += (f"; after another passage {res['loss_control']:.4f}, control gain {res['control_gain']:+.4f} "
                 f"(se {se(res['control_gain_se'])})")
    return line


def attention_reach(cfg: Config) -> int:
    """How far back attention can carry a byte: depth x (window - 1), the window being the baseline's max_len or
    HOPE's attn_window (each layer sees the last `window` positions, the current one included)."""
    window = cfg.max_len if cfg.model_type == "baseline" else cfg.attn_window
    return cfg.depth * (window - 1)


def copy_note(cfg: Config, gap: int, lead: int) -> str | None:
    """A line saying when the first occurrence lies beyond the model's attention (its gain then comes from
    elsewhere: nothing for the baseline, the memories for HOPE), or None."""
    reach = attention_reach(cfg)
    if gap < reach:
        return None
    what = (f"beyond its attention's reach of {reach} bytes ({cfg.depth} layer(s) x "
            f"{(cfg.max_len if cfg.model_type == 'baseline' else cfg.attn_window) - 1})")
    if cfg.model_type != "baseline":
        return f"note: {cfg.model_type}, gap {gap}: the first occurrence is {what}; only its memories can carry it"
    if lead >= reach:
        return (f"note: baseline, gap {gap}: the first occurrence is {what}, and both occurrences follow the same "
                f"{min(lead, gap)} bytes: its copy gain is 0 up to rounding")
    return (f"note: baseline, gap {gap}: the first occurrence is {what}, but the lead of {lead} bytes is shorter "
            f"than that reach: the two occurrences are read after different text and its gain need not be 0 (a "
            f"--lead of at least {reach} makes it 0)")


def parse_gaps(text: str) -> list[int]:
    """'256,512,1024' -> [256, 512, 1024] (non-negative integers), else HopeError."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        gaps = [int(p) for p in parts]
    except ValueError:
        raise HopeError(f"--gaps must be comma-separated integers like 256,512,1024,2048, got '{text}'") from None
    if not gaps:
        raise HopeError("--gaps is empty; give gaps like 256,512,1024,2048")
    if any(g < 0 for g in gaps):
        raise HopeError(f"--gaps must be >= 0, got {gaps}")
    return gaps


def split_paths(text: str) -> list[str]:
    """'a.pt,b.pt' -> ['a.pt', 'b.pt'] (several checkpoints compared in one report)."""
    paths = [p.strip() for p in str(text).split(",") if p.strip()]
    if not paths:
        raise HopeError("no checkpoint given (--ckpt PATH[,PATH...])")
    return paths


def write_distance(gap: int, task: str = "episodes") -> int:
    """Bytes from the start of the write to the position that predicts the first value byte of the query (MQAR:
    from the last written pair, the nearest one)."""
    if task == "mqar":
        return gap + 2
    return gap + episode_overhead() - VALUE_LEN - 1


def window_note(cfg: Config, gap: int, task: str = "episodes") -> str | None:
    """A line saying when the write lies beyond the baseline's attention window, or None.

    Each baseline layer attends to the last `max_len` positions (the current one included), so a stack of `depth`
    layers can relay information at most depth * (max_len - 1) bytes back; past that the write is out of reach
    and the baseline can only guess (chance at best).
    """
    if cfg.model_type != "baseline":
        return None
    distance = write_distance(gap, task)
    reach = cfg.depth * (cfg.max_len - 1)
    if distance < cfg.max_len:
        return None
    where = (f"beyond its receptive field of {reach} bytes ({cfg.depth} layer(s) x {cfg.max_len - 1}), so it cannot "
             "recall it" if distance > reach else
             f"outside its max_len={cfg.max_len} attention window; only relaying through its {cfg.depth} layers can "
             "reach it")
    what = "the last written pair starts" if task == "mqar" else "the write starts"
    return f"note: baseline, gap {gap}: {what} {distance} bytes before the queried value, {where}"


def track_long(checkpoints: list[str], gaps: list[int], trials: int = 64, seed: int = 0, data: str | None = None,
               device: str = "auto", batch_size: int = 16, amp: bool = False, amp_dtype: str = "bf16",
               log: Callable[[str], None] = print, memory_capacity: int | None = None, task: str = "episodes",
               pairs: int = 8, hide_answers: bool = False, passage: int = COPY_PASSAGE,
               lead: int = COPY_LEAD, control: bool = False) -> list[dict]:
    """Rows for every checkpoint and gap, with model_type, checkpoint, step (the checkpoint's training step) and
    data (where the filler came from): `task="episodes"` adds {gap, recall_prob, chance, trials},
    `task="mqar"` {gap, accuracy, first_accuracy, value_prob, chance, repeat, elimination, pairs, answers, trials}
    (`mqar_accuracy`, `pairs` pairs, the answers hidden in the query half with `hide_answers`), `task="copy"`
    {gap, copy_gain, copy_gain_se, loss_first, loss_second, loss_control, control_gain, control_gain_se, samples,
    passage, lead, max_len, attn_window, reach} (`copy_gain` over `trials` passages of `passage` bytes after a lead
    of `lead`, the control with `control`; reach: `attention_reach`).

    Episodes: the filler is the validation split of `data`, else of each checkpoint's training data, else the
    synthetic corpus (on a collection, a span of one validation document per episode; a note per gap counts the
    documents not longer than it, left out); the same seed gives every checkpoint the same episodes when they
    share the filler (copy rows: passages and gaps from the same text, by the same rules). MQAR
    rows fill their gaps with random bytes of their own range (`data` must be None), so every checkpoint sees the
    same rows. `memory_capacity` evaluates HOPE with another episodic-bank size than it trained with (the bank's
    size is state, not parameters): it tells eviction apart from forgetting when recall drops with the gap.
    """
    from hope.checkpoint import load_model
    from hope.runtime import resolve_device

    if task not in TASKS:
        raise HopeError(f"task must be one of {', '.join(TASKS)}, got '{task}'")
    if hide_answers and task != "mqar":
        raise HopeError("hidden answers are an MQAR row format (--task mqar)")
    if task == "copy":
        check_copy(passage, lead)
    elif control:
        raise HopeError("--control reads copy rows a second time (--task copy)")
    if task == "mqar":
        if data:
            raise HopeError("--data is the episodes' filler text; MQAR rows fill their gaps with random bytes "
                            "(drop --data or use --task episodes)")
        try:
            mqar.check_pairs(pairs)
        except ValueError as exc:
            raise HopeError(str(exc)) from None
    if any(g < 0 for g in gaps):
        raise HopeError(f"gaps must be >= 0, got {gaps}")
    dev = resolve_device(device)
    rows = []
    for path in checkpoints:
        sizes = {"memory_capacity": memory_capacity} if memory_capacity is not None else None
        model, cfg, ckpt = load_model(path, dev, state_sizes=sizes)
        filler = checkpoint_source(cfg, data) if task != "mqar" else None
        source = str(data or cfg.data or "synthetic") if task != "mqar" else "mqar random bytes"
        for gap in gaps:
            where = {"model_type": cfg.model_type, "checkpoint": str(path), "step": ckpt.get("step"), "data": source}
            if task == "copy":  # its notes after the rows are built: a text too short is an error, not a note
                assert filler is not None
                res = copy_gain(model, gap, passage, trials, seed, filler.text, dev, batch_size, amp, amp_dtype,
                                documents=filler.documents, lead=lead, control=control)
                note = copy_note(cfg, gap, lead)
                if note:
                    log(note)
                if filler.documents is not None:
                    docs, span = filler.documents, copy_span(passage, gap, lead)
                    usable = len(filler_documents(docs, span - 1))
                    log(f"note: {filler.name}, gap {gap}: each passage and its gap are cut from {span} bytes of one "
                        f"validation document; {len(docs) - usable} of {len(docs)} documents shorter than that "
                        "left out")
                rows.append({**res, **where, "max_len": cfg.max_len, "attn_window": cfg.attn_window,
                             "reach": attention_reach(cfg)})
                log(f"{cfg.model_type} {path} {copy_line(res)}")
                continue
            note = window_note(cfg, gap, task)
            if note:
                log(note)
            if filler is not None and filler.documents is not None:
                docs = filler.documents
                usable = len(filler_documents(docs, gap))
                log(f"note: {filler.name}, gap {gap}: each episode's filler is a span of one validation document; "
                    f"{len(docs) - usable} of {len(docs)} documents not longer than the gap left out")
            if task == "mqar":
                res = mqar_accuracy(model, pairs, gap, trials, seed, dev, batch_size, amp, amp_dtype, hide_answers)
                rows.append({**res, **where})
                hidden = ", answers hidden" if hide_answers else ""
                log(f"{cfg.model_type} {path} gap {gap} pairs {pairs}{hidden}: accuracy {res['accuracy']:.4g} (first query "
                    f"{res['first_accuracy']:.4g}), p(value) {res['value_prob']:.4g} (chance {res['chance']:.4g}, "
                    f"repeat-last-value {res['repeat']:.4g}, eliminate-answered {res['elimination']:.4g})")
                continue
            res = recall_prob(model, gap, trials, seed, filler.text, dev, batch_size, amp, amp_dtype,
                              documents=filler.documents)
            rows.append({**res, **where})
            log(f"{cfg.model_type} {path} gap {gap}: recall_prob {res['recall_prob']:.4g} (chance {res['chance']:.4g})")
        del model
    return rows


def checkpoint_source(cfg: Config, data: str | Path | None) -> Filler:
    """Filler for a checkpoint, with its documents: --data if given, else the data it was trained on, else the
    synthetic corpus."""
    if not data and cfg.data and not data_exists(cfg.data):
        raise HopeError(f"the checkpoint's training data {cfg.data} is not there; pass --data PATH for the filler text")
    return recall_source(data if data else cfg.data, seed=cfg.seed)


def checkpoint_filler(cfg: Config, data: str | Path | None) -> torch.Tensor:
    """Filler bytes for a checkpoint (`checkpoint_source` without the document boundaries)."""
    return checkpoint_source(cfg, data).text


__all__ = ["copy_gain", "copy_rows", "copy_spans", "copy_span", "make_copy_row", "span_logprobs", "check_copy",
           "copy_note", "copy_line", "attention_reach", "COPY_PASSAGE", "COPY_LEAD",
           "recall_prob", "mqar_accuracy", "mqar_hits", "MQARHits", "answer_logprobs", "TASKS", "recall_filler", "value_logprobs", "parse_gaps",
           "split_paths", "track_long",
           "checkpoint_filler", "checkpoint_source", "Filler", "recall_source", "filler_documents", "document_filler",
           "window_note", "write_distance"]
