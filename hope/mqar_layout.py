"""The byte layout of an MQAR row (`hope.data.mqar` generates the rows; `hope.config` validates against it).

Keys, values and filler come from three disjoint byte ranges, and a row of P pairs with a G-byte gap is
P (key, value) pairs, G filler bytes, then the P keys again each followed by its value: 4 P + G bytes. It lives
here, below both, so that the config can check a row fits `seq_len` without importing the data package.
"""

from __future__ import annotations

KEYS = range(0x80, 0xC0)
VALUES = range(0xC0, 0x100)
FILLER = range(0x40, 0x80)
MAX_PAIRS = min(len(KEYS), len(VALUES))  # keys and values are distinct within a row


def row_length(pairs: int, gap: int) -> int:
    """Bytes of a row with `pairs` pairs and a `gap`-byte filler gap, without padding."""
    return 4 * pairs + gap


__all__ = ["KEYS", "VALUES", "FILLER", "MAX_PAIRS", "row_length"]
