"""Byte-level tokenizer: token id == byte value, so there is no vocabulary file (vocab_size = 256)."""

from __future__ import annotations

import torch

VOCAB_SIZE = 256


def encode(data: bytes | str) -> torch.Tensor:
    """bytes (or str, encoded as UTF-8) -> int64 ids of shape (T,)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data:  # torch.frombuffer rejects an empty buffer
        return torch.empty(0, dtype=torch.long)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def decode(ids: torch.Tensor | list[int]) -> bytes:
    """ids -> the exact bytes (round-trips arbitrary bytes, invalid UTF-8 included)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.flatten().tolist()
    return bytes(ids)


def decode_text(ids: torch.Tensor | list[int]) -> str:
    """ids -> str for display; invalid UTF-8 becomes U+FFFD replacement characters."""
    return decode(ids).decode("utf-8", errors="replace")
