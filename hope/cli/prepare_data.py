"""`hope-prepare-data`: download a corpus (or copy a local one), or build a collection of documents, atomically.

One file (the manual's form): `--url` (http(s)://, file:// or a local path; tiny shakespeare by default) is copied
to `--out`; prints {path, bytes, sha256}.

A collection: `--inputs` (files, folders, globs, NAME.manifest files) and/or `--hf` (the `--text_field` of every
row of a JSON Lines file, a parquet file or a local Hugging Face dataset folder; parquet and folders need pyarrow)
become `--out`, the documents' bytes (training documents first, then the validation ones), and `--out`.index.json,
their offsets, names and split; `--data OUT` then memory-maps them. Prints {path, index, bytes, sha256,
documents, train_documents, validation_documents, validation_bytes, skipped}; a progress bar on stderr for large
inputs.

Run as:
    hope-prepare-data --out data/tiny_shakespeare.txt --url https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
    hope-prepare-data --out data/corpus.txt --url file:///path/to/corpus.txt
    hope-prepare-data --out data/books.bin --inputs data/books/ 'more/**/*.txt' extra.manifest --separator '\\n\\x0c\\n'
    hope-prepare-data --out data/wiki.bin --hf data/wiki_dataset/ --text_field text
"""

from __future__ import annotations

import json
import sys

from hope.cli.args import new_parser, run
from hope.data.download import TINY_SHAKESPEARE_URL, fetch


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("hope-prepare-data", __doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="destination file (parent folders are created)")
    parser.add_argument("--url", default=None,
                        help="http(s)://, file:// URL or local path to copy (default: tiny shakespeare)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    parser.add_argument("--inputs", nargs="+", default=[], metavar="PATH",
                        help="build a collection: files, folders, globs or NAME.manifest files, one document per file")
    parser.add_argument("--hf", nargs="+", default=[], metavar="PATH",
                        help="build a collection from the rows of .jsonl / .json / .parquet files or local Hugging Face "
                             "dataset folders, one document per row (parquet and folders need pyarrow)")
    parser.add_argument("--text_field", default="text", help="the rows' text field for --hf")
    parser.add_argument("--separator", default="",
                        help=r"written after every document of a collection, with Python escapes, e.g. '\n\x0c\n'")
    parser.add_argument("--min_bytes", type=int, default=1, help="skip documents shorter than this many bytes")
    args = parser.parse_args(argv)

    def body() -> int:
        from hope.errors import HopeError

        if not args.inputs and not args.hf:
            path, size, sha = fetch(args.url or TINY_SHAKESPEARE_URL, args.out, timeout=args.timeout)
            print(json.dumps({"path": str(path), "bytes": size, "sha256": sha}))
            return 0
        if args.url is not None:
            raise HopeError("--url copies one file; --inputs / --hf build a collection: give one or the other")
        from hope.data.prepare import FileSource, TextSource, build_collection, parse_separator

        sources = [FileSource(p) for p in args.inputs] + [TextSource(p, args.text_field) for p in args.hf]
        summary = build_collection(args.out, sources, separator=parse_separator(args.separator),
                                   min_bytes=args.min_bytes)
        print(json.dumps(summary))
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
