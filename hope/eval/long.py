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
TASKS = ("episodes", "mqar")


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
    lengths = documents.lengths()[usable]
    cum = np.cumsum(lengths - gap).tolist()
    (doc,) = rng.choices(usable.tolist(), cum_weights=cum)
    return text[int(documents.offsets[doc]):int(documents.offsets[doc + 1])]


def _piece_len(model: torch.nn.Module) -> int:
    seg = int(getattr(getattr(model, "cfg", None), "seq_len", 0) or PIECE_TOKENS)
    return max(seg, (PIECE_TOKENS // seg) * seg)  # whole segments: the same segmentation as one long call


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
    if gap < 0:
        raise HopeError(f"gap must be >= 0, got {gap}")
    if trials <= 0 or batch_size <= 0:
        raise HopeError(f"trials and batch_size must be > 0, got {trials} and {batch_size}")
    if filler is None:
        filler = recall_filler(None, seed)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
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
    if gap < 0:
        raise HopeError(f"gap must be >= 0, got {gap}")
    if trials <= 0 or batch_size <= 0:
        raise HopeError(f"trials and batch_size must be > 0, got {trials} and {batch_size}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
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
               pairs: int = 8, hide_answers: bool = False) -> list[dict]:
    """Rows for every checkpoint and gap, with model_type, checkpoint, step (the checkpoint's training step) and
    data (where the filler came from): `task="episodes"` adds {gap, recall_prob, chance, trials},
    `task="mqar"` {gap, accuracy, first_accuracy, value_prob, chance, repeat, elimination, pairs, answers, trials}
    (`mqar_accuracy`, `pairs` pairs, the answers hidden in the query half with `hide_answers`).

    Episodes: the filler is the validation split of `data`, else of each checkpoint's training data, else the
    synthetic corpus (on a collection, a span of one validation document per episode; a note per gap counts the
    documents not longer than it, left out); the same seed gives every checkpoint the same episodes when they
    share the filler. MQAR
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
        filler = checkpoint_source(cfg, data) if task == "episodes" else None
        source = str(data or cfg.data or "synthetic") if task == "episodes" else "mqar random bytes"
        for gap in gaps:
            note = window_note(cfg, gap, task)
            if note:
                log(note)
            if filler is not None and filler.documents is not None:
                docs = filler.documents
                usable = len(filler_documents(docs, gap))
                log(f"note: {filler.name}, gap {gap}: each episode's filler is a span of one validation document; "
                    f"{len(docs) - usable} of {len(docs)} documents not longer than the gap left out")
            where = {"model_type": cfg.model_type, "checkpoint": str(path), "step": ckpt.get("step"), "data": source}
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


__all__ = ["recall_prob", "mqar_accuracy", "mqar_hits", "MQARHits", "answer_logprobs", "TASKS", "recall_filler", "value_logprobs", "parse_gaps",
           "split_paths", "track_long",
           "checkpoint_filler", "checkpoint_source", "Filler", "recall_source", "filler_documents", "document_filler",
           "window_note", "write_distance"]
