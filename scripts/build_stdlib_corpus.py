"""Build the long-document corpus of docs/results.md from the running Python's standard library source.

A prepared collection (`hope.data.prepare.build_collection`, what `hope-prepare-data --inputs` builds): one
document per `.py` file of at least `--min_bytes` (default 16 KB) outside site-packages, each followed by a form
feed line, in path order within each split, written as `--out` plus its document index `--out`.index.json. The
validation documents are the collection rule's (`hope.data.corpus.validation_documents`): the files first in
the order of a hash of their path relative to the standard library (so the choice does not depend on the
machine's file order), as many as fit in a tenth of the bytes. `--data OUT` then reads them memory-mapped, split
by document: no validation document is seen in training, and `hope-eval-binned` counts positions from each
document's start. Never committed: it is rebuilt from the interpreter that runs it (so figures name the Python
version this prints).

Run as:
    python scripts/build_stdlib_corpus.py --out data/stdlib_long.txt
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

from hope.data.corpus import DocumentFile, index_path
from hope.data.prepare import FileSource, build_collection
from hope.errors import HopeError

SEPARATOR = b"\n\x0c\n"  # form feed after every document


def documents(root: Path, min_bytes: int) -> list[DocumentFile]:
    """The `.py` files of at least `min_bytes` under `root` (site-packages left out), named relative to `root`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or not path.is_file():
            continue
        size = path.stat().st_size
        if size >= min_bytes:
            out.append(DocumentFile(name=path.relative_to(root).as_posix(), path=path, size=size))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the corpus file to write (refuses to overwrite)")
    p.add_argument("--min_bytes", type=int, default=16384, help="smallest source file kept, in bytes")
    p.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="the standard library folder")
    args = p.parse_args(argv)
    out = Path(args.out)
    for path in (out, index_path(out)):
        if path.exists():
            print(f"error: {path} exists; remove it or choose another --out", file=sys.stderr)
            return 2
    docs = documents(Path(args.stdlib), args.min_bytes)
    if len(docs) < 2:
        print(f"error: fewer than two files of >= {args.min_bytes} bytes under {args.stdlib}", file=sys.stderr)
        return 2
    try:
        stats = build_collection(out, [FileSource(files=docs)], separator=SEPARATOR)
    except HopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {stats['index']}: {stats['documents']} files >= {args.min_bytes} bytes from Python "
          f"{sys.version.split()[0]} ({stats['validation_documents']} validation), "
          f"{stats['bytes'] - stats['validation_bytes']:,} train + {stats['validation_bytes']:,} validation bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
