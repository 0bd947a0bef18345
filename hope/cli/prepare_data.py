"""`hope-prepare-data`: download a corpus (or copy a local one) atomically and print its size and sha256.

Run as:
    hope-prepare-data --out data/tiny_shakespeare.txt --url https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
    hope-prepare-data --out data/corpus.txt --url file:///path/to/corpus.txt
"""

from __future__ import annotations

import json
import sys

from hope.cli.args import new_parser, run
from hope.data.download import TINY_SHAKESPEARE_URL, fetch


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("hope-prepare-data", __doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="destination file (parent folders are created)")
    parser.add_argument("--url", default=TINY_SHAKESPEARE_URL, help="http(s)://, file:// URL or local path (tiny shakespeare)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    args = parser.parse_args(argv)

    def body() -> int:
        path, size, sha = fetch(args.url, args.out, timeout=args.timeout)
        print(json.dumps({"path": str(path), "bytes": size, "sha256": sha}))
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
