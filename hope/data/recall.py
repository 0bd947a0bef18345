"""Synthetic recall episodes: a key/value pair written into filler text, the key asked for after a gap.

    ... filler ... \x01 KEY \x02 VALUE \x03 <gap bytes of filler> \x01 KEY \x02 VALUE
                                                                              ^^^^^ scored

The control bytes \x01-\x03 never occur in text corpora, so the model can learn the format from a training
mixture (`recall_fraction`) and `hope-eval-long` can score p(VALUE | everything before it). Keys are random
lowercase letters, values random digits, so without memory the best a model can do is chance = 10**-value_len.
Pure functions of a `random.Random`, so every episode is reproducible from its seed (zoology's habit).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import torch

OPEN, SEP, CLOSE = 1, 2, 3
KEY_ALPHABET = string.ascii_lowercase.encode()
VALUE_ALPHABET = string.digits.encode()
KEY_LEN = 4
VALUE_LEN = 2


def chance_level(value_len: int = VALUE_LEN) -> float:
    """Probability of the value under a model that knows the format but remembers nothing."""
    return float(len(VALUE_ALPHABET)) ** -value_len


def episode_overhead(key_len: int = KEY_LEN, value_len: int = VALUE_LEN) -> int:
    """Bytes of an episode that are not gap filler."""
    return 2 * (key_len + 2) + 2 * value_len + 1


@dataclass
class RecallEpisode:
    tokens: torch.Tensor  # (L,) int64, ends with the value
    value_start: int  # index of the first value byte of the query (the scored positions are value_start..L-1)
    gap: int  # filler bytes between the end of the write and the start of the query


def _filler(rng: random.Random, source: torch.Tensor, n: int) -> torch.Tensor:
    if n <= 0:
        return torch.empty(0, dtype=torch.long)
    if len(source) <= n:
        reps = n // max(len(source), 1) + 1
        return source.long().repeat(reps)[:n]
    start = rng.randrange(0, len(source) - n)
    return source[start:start + n].long()


def _write(key: bytes, value: bytes) -> torch.Tensor:
    return torch.tensor([OPEN, *key, SEP, *value, CLOSE], dtype=torch.long)


def _query(key: bytes, value: bytes) -> torch.Tensor:
    """The key asked again, followed by the value a model should recall (the scored bytes)."""
    return torch.tensor([OPEN, *key, SEP, *value], dtype=torch.long)


def make_episode(rng: random.Random, gap: int, filler: torch.Tensor, prefix: int = 0,
                 key_len: int = KEY_LEN, value_len: int = VALUE_LEN) -> RecallEpisode:
    """One episode with `gap` filler bytes between write and query, after `prefix` filler bytes."""
    key = bytes(rng.choice(KEY_ALPHABET) for _ in range(key_len))
    value = bytes(rng.choice(VALUE_ALPHABET) for _ in range(value_len))
    tokens = torch.cat([_filler(rng, filler, prefix), _write(key, value),
                        _filler(rng, filler, gap), _query(key, value)])
    return RecallEpisode(tokens=tokens, value_start=len(tokens) - value_len, gap=gap)


def training_row(rng: random.Random, length: int, filler: torch.Tensor, episodes: int = 1) -> torch.Tensor:
    """A training row of exactly `length` bytes holding `episodes` recall episodes.

    One episode ends the row, as `hope-eval-long` lays it out (the query's value is the last bytes). More than
    one are scattered: each key/value pair is written and later asked again at random places in the row, in a
    random interleaving, with text between, so a row trains several copies at gaps from 0 to most of the row
    and the loss on the text in between stays a language-model loss. Fewer episodes are used when they do not fit.
    """
    if episodes > 1:
        episodes = min(episodes, length // episode_overhead())
    if episodes > 1:
        return _scattered_row(rng, length, filler, episodes)
    max_gap = length - episode_overhead()
    if max_gap < 0:
        return _filler(rng, filler, length)
    gap = rng.randint(0, max_gap)
    return make_episode(rng, gap, filler, prefix=max_gap - gap).tokens


def _scattered_row(rng: random.Random, length: int, filler: torch.Tensor, episodes: int) -> torch.Tensor:
    keys: list[bytes] = []
    while len(keys) < episodes:  # distinct keys, so every query has exactly one answer in the row
        key = bytes(rng.choice(KEY_ALPHABET) for _ in range(KEY_LEN))
        if key not in keys:
            keys.append(key)
    values = [bytes(rng.choice(VALUE_ALPHABET) for _ in range(VALUE_LEN)) for _ in keys]
    # A uniformly random interleaving of 2n events in which each pair's write precedes its query: shuffle two
    # copies of every index; the first occurrence of an index is its write, the second its query.
    order = [i for i in range(episodes) for _ in range(2)]
    rng.shuffle(order)
    written: set[int] = set()
    events: list[torch.Tensor] = []
    for i in order:
        events.append(_query(keys[i], values[i]) if i in written else _write(keys[i], values[i]))
        written.add(i)
    text = _filler(rng, filler, length - sum(len(e) for e in events))  # one contiguous span, cut 2n times
    cuts = sorted(rng.randint(0, len(text)) for _ in range(len(events)))
    pieces, prev = [], 0
    for cut, event in zip(cuts, events):
        pieces += [text[prev:cut], event]
        prev = cut
    pieces.append(text[prev:])
    return torch.cat(pieces)
