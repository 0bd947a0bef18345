"""`hope-infer`: not implemented yet.

Run as:
    hope-infer --help
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hope-infer", description="(not implemented yet)")
    parser.parse_args(argv)
    print("hope-infer: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
