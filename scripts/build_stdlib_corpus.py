"""Build the long-document corpus of docs/results.md from the running Python's standard library source.

One document per `.py` file of at least `--min_bytes` (default 16 KB), files separated by a form feed line, in path
order within each split. The validation documents are the files first in the order of a hash of their path (so
the choice does not depend on the machine's file order), as many as fit in a tenth of the bytes; they come last, and the training part is cut
to exactly nine times their size, so the project's standard split (first 90% train, last 10% validation)
falls exactly on a file boundary: no validation document is seen in training. Never committed: it is rebuilt
from the interpreter that runs it (so figures name the Python version this prints).

Run as:
    python scripts/build_stdlib_corpus.py --out data/stdlib_long.txt
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import sysconfig
from pathlib import Path

SEPARATOR = b"\n\x0c\n"  # form feed between documents


def documents(root: Path, min_bytes: int) -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        data = path.read_bytes()
        if len(data) >= min_bytes:
            out.append((str(path.relative_to(root)), data))
    return out


def validation_names(docs: list[tuple[str, bytes]]) -> set[str]:
    """The files first in hash order whose sizes add up to at most a tenth of all bytes (at least one)."""
    budget, chosen, used = sum(len(d) for _, d in docs) // 10, set(), 0
    for name, data in sorted(docs, key=lambda nd: hashlib.sha256(nd[0].encode()).digest()):
        if used + len(data) > budget and chosen:
            continue
        chosen.add(name)
        used += len(data)
    return chosen


def build(root: Path, min_bytes: int) -> tuple[bytes, dict[str, int]]:
    docs = documents(root, min_bytes)
    if len(docs) < 2:
        raise SystemExit(f"error: fewer than two files of >= {min_bytes} bytes under {root}")
    held = validation_names(docs)
    val = SEPARATOR.join(d for n, d in docs if n in held) + SEPARATOR
    train = SEPARATOR.join(d for n, d in docs if n not in held) + SEPARATOR
    train = train[:9 * len(val)]  # first 90% = exactly the training documents kept
    stats = {"files": len(docs), "validation_files": len(held),
             "train_bytes": len(train), "validation_bytes": len(val)}
    return train + val, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the corpus file to write (refuses to overwrite)")
    p.add_argument("--min_bytes", type=int, default=16384, help="smallest source file kept, in bytes")
    p.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="the standard library folder")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; remove it or choose another --out", file=sys.stderr)
        return 2
    data, stats = build(Path(args.stdlib), args.min_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    print(f"wrote {out}: {stats['files']} files >= {args.min_bytes} bytes from Python {sys.version.split()[0]} "
          f"({stats['validation_files']} validation), {stats['train_bytes']:,} train + "
          f"{stats['validation_bytes']:,} validation bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
