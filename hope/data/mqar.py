"""Multi-query associative recall (MQAR, Zoology's key-lookup task) in bytes: a pure, seeded generator.

    k1 v1 k2 v2 ... kP vP  <gap bytes of filler>  kq1 vq1 kq2 vq2 ... kqP vqP  [<pad filler>]
                                                       ^^^      ^^^        ^^^  scored (the answers)

P pairs of a single-byte key and a single-byte value are written, then after a filler gap the same P keys are
asked again in a shuffled order, each followed by its value. Keys, values and filler come from three disjoint
byte ranges (fixed constants, `hope.mqar_layout`), so a value byte can only be predicted by looking its key up:

    KEYS    0x80-0xBF (64 bytes)     VALUES  0xC0-0xFF (64 bytes)     FILLER  0x40-0x7F (64 bytes, random)

Within a row keys are distinct (every query has exactly one answer) and values are distinct too, so a model
that repeats the last value written before the gap is right exactly once per row: its accuracy is exactly
`repeat_level(P) = 1/P`, and one that knows only which bytes are values scores `chance_level() = 1/64`. An
answer is a copy passed off as a lookup unless it beats both.

The query half shows every answer once it is scored, so a model can also *eliminate*: answer each query with one of
the written values not yet answered, looking no key up. Its i-th query (of P) is right with probability 1/(P - i),
so it scores `elimination_level(P) = H_P / P` (0.340 for P = 8), and nothing on the first query above 1/P. A
matched Transformer plateaus exactly there (docs/results.md, §1): beating `elimination_level` overall, and 1/P on a
row's first query (`first_accuracy` in hope.eval.long), is what makes a figure a lookup.

With `hide_answers` (config `recall_answers: hidden`, Zoology's own format) the query half never shows an answer:
the byte after each query key is filler in the input, while the value stays its target, so nothing can be
eliminated and the elimination level falls to the repeat level 1/P:

    k1 v1 ... kP vP  <gap>  kq1 f kq2 f ... kqP f          (f: filler input, its target the queried value)

Pure functions of a `random.Random`, so every row is reproducible from its seed (zoology's habit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from hope.mqar_layout import FILLER, KEYS, MAX_PAIRS, VALUES, row_length  # the layout's one home

IGNORE = -100  # the target F.cross_entropy skips by default (ignore_index)


def chance_level() -> float:
    """Accuracy (and p(value)) of a model that knows which bytes are values but looks nothing up."""
    return 1.0 / len(VALUES)


def repeat_level(pairs: int) -> float:
    """Accuracy of a model that answers every query with the last value written: right once per row."""
    return 1.0 / pairs


def elimination_by_order(pairs: int) -> list[float]:
    """Accuracy at the i-th query (i = 0 .. P-1) of a model that answers with a uniformly chosen written value not
    yet answered in the query half: 1 / (P - i), one value left at the last query."""
    return [1.0 / (pairs - i) for i in range(pairs)]


def elimination_level(pairs: int) -> float:
    """That model's accuracy over a row: the mean of `elimination_by_order`, the harmonic number H_P over P."""
    return sum(elimination_by_order(pairs)) / pairs


def check_pairs(pairs: int) -> None:
    """ValueError unless 1 <= pairs <= MAX_PAIRS (the caller turns it into its own one-line error)."""
    if not 1 <= pairs <= MAX_PAIRS:
        raise ValueError(f"MQAR pairs must be between 1 and {MAX_PAIRS} (the key range holds {len(KEYS)} bytes, "
                         f"the value range {len(VALUES)}), got {pairs}")


@dataclass(frozen=True)
class MQARSpec:
    """How training mixes MQAR rows in (config keys recall_pairs, recall_gap_min, recall_gap_max, loss_on)."""

    pairs: int = 8
    gap_min: int = 0
    gap_max: int = 64
    answers_only: bool = False  # loss_on: answers: every target but the answers is IGNORE
    hide_answers: bool = False  # recall_answers: hidden: filler instead of each answer in the query half's input


@dataclass
class MQARRow:
    tokens: torch.Tensor  # (L,) int64: the model's input bytes
    answers: torch.Tensor  # (P,) int64: indices in `tokens` of the query half's value slots (the scored bytes)
    gap: int  # filler bytes between the last written value and the first query
    values: torch.Tensor  # (P,) int64: the queried values, the targets at `answers` (== tokens[answers] if shown)


def filler(rng: random.Random, n: int) -> list[int]:
    """`n` random bytes of the FILLER range."""
    return [rng.choice(FILLER) for _ in range(max(n, 0))]


def make_row(rng: random.Random, pairs: int, gap: int, length: int | None = None,
             hide_answers: bool = False) -> MQARRow:
    """One MQAR row; with `length`, padded with filler after the last answer to exactly `length` bytes (so the
    keys always start the row, as in evaluation); with `hide_answers`, filler in the answers' input slots. The
    hidden slots are drawn after everything else, so a seed gives the same row either way but for them."""
    check_pairs(pairs)
    if gap < 0:
        raise ValueError(f"MQAR gap must be >= 0, got {gap}")
    need = row_length(pairs, gap)
    if length is not None and length < need:
        raise ValueError(f"an MQAR row of {pairs} pairs and a {gap}-byte gap needs {need} bytes, got {length}")
    keys = rng.sample(KEYS, pairs)
    values = rng.sample(VALUES, pairs)
    order = list(range(pairs))
    rng.shuffle(order)
    write = [b for k, v in zip(keys, values) for b in (k, v)]
    query = [b for i in order for b in (keys[i], values[i])]
    tokens = write + filler(rng, gap) + query
    start = 2 * pairs + gap  # index of the first query key
    answers = torch.arange(start + 1, start + 2 * pairs, 2, dtype=torch.long)  # (P,)
    if length is not None:
        tokens += filler(rng, length - need)
    out = torch.tensor(tokens, dtype=torch.long)
    values = out[answers].clone()  # (P,)
    if hide_answers:
        out[answers] = torch.tensor(filler(rng, pairs), dtype=torch.long)
    return MQARRow(tokens=out, answers=answers, gap=gap, values=values)


def training_row(rng: random.Random, length: int, pairs: int, gap_min: int, gap_max: int,
                 hide_answers: bool = False) -> MQARRow:
    """A training row of exactly `length` bytes, its gap drawn uniformly from [gap_min, gap_max], padded with
    filler after the last answer. ValueError when the longest row does not fit."""
    if row_length(pairs, gap_max) > length:
        raise ValueError(f"an MQAR row of {pairs} pairs and a gap of up to {gap_max} bytes needs "
                         f"{row_length(pairs, gap_max)} bytes, more than {length}")
    return make_row(rng, pairs, rng.randint(gap_min, gap_max), length, hide_answers)


def training_targets(row: MQARRow, answers_only: bool) -> torch.Tensor:
    """Targets of a row's inputs tokens[:-1]: the next byte, the queried value at each answer slot (input
    position a - 1 predicts the answer at index a, hidden or not), and with `answers_only` IGNORE elsewhere."""
    y = row.tokens[1:].clone()
    y[row.answers - 1] = row.values
    if answers_only:
        keep = y.new_full(y.shape, IGNORE)
        keep[row.answers - 1] = row.values
        y = keep
    return y


__all__ = ["IGNORE", "MQARSpec", "training_targets", "KEYS", "VALUES", "FILLER", "MAX_PAIRS", "MQARRow",
           "chance_level", "repeat_level", "elimination_by_order", "elimination_level", "row_length",
           "check_pairs", "make_row", "training_row", "filler"]
