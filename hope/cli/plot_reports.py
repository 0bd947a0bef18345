"""`hope-plot-reports`: not implemented yet.

Run as:
    hope-plot-reports --help
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hope-plot-reports", description="(not implemented yet)")
    parser.parse_args(argv)
    print("hope-plot-reports: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
