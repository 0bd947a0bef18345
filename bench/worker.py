"""One benchmark case in a fresh interpreter: `python -m bench.worker '<json spec>'` prints one JSON line.

Used by `bench.measure.run_worker` for the peak-memory and generation cases (a process's peak resident memory
cannot be reset, so each case gets its own process).
"""

from __future__ import annotations

import json
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    torch.set_num_threads(int(spec.get("threads", 1)))
    from bench.cases import WORKERS

    print(json.dumps(WORKERS[spec["kind"]](spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
