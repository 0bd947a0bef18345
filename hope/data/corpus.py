"""Corpora as byte tensors: files, the embedded synthetic default, the train/validation split.

Every command takes `--data PATH`; without it the "quick check" mode of the manual uses a synthetic corpus that
is generated from a seed (no download, no file), so a fresh install runs end to end offline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from hope.errors import HopeError

VAL_FRACTION = 0.1  # standard split: first 90% train, last 10% validation


class DataError(HopeError):
    """A missing, empty or too-short data file."""


def load_bytes(path: str | Path) -> torch.Tensor:
    """Any file (text or binary) -> uint8 tensor (N,)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path} (download one with hope-prepare-data, or omit --data for random data)")
    if path.is_dir():
        raise DataError(f"--data must be a file, got a directory: {path}")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"data file is empty: {path}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()


_SYLLABLES = ["ka", "ri", "to", "me", "su", "la", "no", "vi", "de", "po", "ga", "shi", "ren", "tho", "qu", "ax",
              "el", "or", "in", "um", "bre", "sta", "fo", "li"]


def synthetic_corpus(n_bytes: int = 400_000, seed: int = 0) -> torch.Tensor:
    """The embedded default corpus: seeded pseudo-text with learnable structure.

    A fixed lexicon of pseudo-words drawn with Zipfian frequencies, a first-order word grammar (each word has a
    few likely successors), sentences and line breaks. Uniform random bytes would be unlearnable, which makes a
    poor smoke test; this text has short- and mid-range regularities a small model picks up in minutes.
    """
    rng = random.Random(seed)
    n_words = 400
    lexicon = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n_words)]
    zipf = [1.0 / (rank + 1) for rank in range(n_words)]
    successors = [rng.choices(range(n_words), weights=zipf, k=4) for _ in range(n_words)]
    out: list[str] = []
    size, word, sentence_len = 0, 0, 0
    while size < n_bytes:
        if rng.random() < 0.75:
            word = rng.choice(successors[word])
        else:
            word = rng.choices(range(n_words), weights=zipf)[0]
        token = lexicon[word]
        sentence_len += 1
        if sentence_len == 1:
            token = token.capitalize()
        if sentence_len > 4 and rng.random() < 0.2:
            token += ("." if rng.random() < 0.7 else "?") + ("\n" if rng.random() < 0.3 else " ")
            sentence_len = 0
        else:
            token += " "
        out.append(token)
        size += len(token)
    return torch.frombuffer(bytearray("".join(out).encode()[:n_bytes]), dtype=torch.uint8).clone()


@dataclass
class Corpus:
    """A byte corpus split deterministically: first 90% train, last 10% validation."""

    train: torch.Tensor  # (N_train,) uint8
    val: torch.Tensor  # (N_val,) uint8
    name: str

    @classmethod
    def from_bytes(cls, data: torch.Tensor, name: str) -> "Corpus":
        n_train = int(len(data) * (1 - VAL_FRACTION))
        return cls(train=data[:n_train], val=data[n_train:], name=name)

    def check_length(self, window: int) -> None:
        """Both splits must hold at least one window of `window` bytes (seq_len + 1)."""
        for split, tensor in (("train", self.train), ("validation", self.val)):
            if len(tensor) < window:
                raise DataError(
                    f"{self.name}: the {split} split has {len(tensor)} bytes, fewer than seq_len + 1 = {window} "
                    f"(use a longer file or a smaller --seq_len)")


def load_corpus(path: str | Path | None, seed: int = 0) -> Corpus:
    """`--data PATH` -> Corpus of that file; None -> the synthetic default corpus."""
    if path is None:
        return Corpus.from_bytes(synthetic_corpus(seed=seed), name="synthetic (no --data)")
    return Corpus.from_bytes(load_bytes(path), name=str(path))
