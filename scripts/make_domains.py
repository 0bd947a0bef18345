"""Write the three continual-learning domains of docs/results.md (none of them is committed).

    A  tiny shakespeare (English drama), the first N bytes of the file given
    B  Python source: the standard library's own .py files (every Python installation ships them), sorted by path
    C  the synthetic pseudo-word corpus of `hope.data.corpus.synthetic_corpus` (seeded)

Run as:
    python scripts/make_domains.py --shakespeare ../shared/data/tiny_shakespeare.txt --out data/domains --bytes 300000
    hope-continual --config configs/continual.yaml --data data/domains/a_shakespeare.txt,data/domains/b_python.txt,data/domains/c_synthetic.txt
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from hope.data.corpus import synthetic_corpus


def python_source(n_bytes: int) -> bytes:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = bytearray()
    for path in sorted(root.glob("*.py")):  # top-level modules only: plain library code, no tests or vendored data
        out += path.read_bytes() + b"\n"
        if len(out) >= n_bytes:
            break
    return bytes(out[:n_bytes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shakespeare", required=True, help="tiny shakespeare text file")
    parser.add_argument("--out", default="data/domains", help="output folder")
    parser.add_argument("--bytes", type=int, default=300_000, help="bytes per domain")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    domains = {
        "a_shakespeare.txt": Path(args.shakespeare).read_bytes()[: args.bytes],
        "b_python.txt": python_source(args.bytes),
        "c_synthetic.txt": bytes(synthetic_corpus(args.bytes, seed=7).tolist()),
    }
    for name, data in domains.items():
        (out / name).write_bytes(data)
        print(f"{out / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
