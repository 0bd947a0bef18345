"""Report files written atomically: JSON and CSV, through ``hope.atomic`` (temporary file in the same directory,
fsync, ``os.replace``; ``atomic_open`` and ``write_text`` come from there), so a crash (or Ctrl-C) halfway through a
write never leaves a truncated ``metrics.json`` or CSV behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hope.atomic import atomic_open, write_text

__all__ = ["atomic_open", "write_csv", "write_json", "write_text"]


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; returns the path.

    The object is serialised to a string *before* the file is opened, so an unserialisable object raises
    ``TypeError`` without touching the existing file.
    """
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return write_text(path, text)


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` (dicts keyed by ``fieldnames``) as CSV with a header, atomically; returns the path.

    A row with a key outside ``fieldnames`` raises ``ValueError`` (a silently dropped column is worse than a crash).
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())
