"""Lookup or shortcut? MQAR accuracy of a checkpoint split by query order and by the queried key's write slot.

The query half shows each answer after it is scored, so a model can answer its i-th query (of P) by picking among
the P - i written values not yet shown: right with probability 1 / (P - i), looking no key up (hope.data.mqar,
`elimination_level`). This prints, per query order, the model's accuracy beside that 1 / (P - i); a model that
eliminates follows it (0.125, 0.143, ..., 0.5, 1.0 for P = 8), a lookup is flat near 1. By write slot a model that
leans on recency or the row's start shows a slope. docs/results.md §1 reads the baseline's plateau with it.

Run as:
    python scripts/mqar_breakdown.py --ckpt runs/mq/base.pt --pairs 8 --gaps 0,16,32,48 --trials 256
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from hope.checkpoint import load_model
from hope.data import mqar
from hope.errors import HopeError
from hope.eval.long import mqar_hits, parse_gaps


def breakdown(model: torch.nn.Module, pairs: int, gaps: list[int], trials: int, seed: int = 0) -> dict:
    """{accuracy, first_accuracy, by_order, elimination_by_order, by_slot} pooled over `gaps` (`trials` rows each)."""
    order = torch.zeros(pairs, dtype=torch.float64)
    slot = torch.zeros(pairs, dtype=torch.float64)
    for g in gaps:
        out = mqar_hits(model, pairs, g, trials, seed + 1_000_003 * g)
        tokens = torch.stack([r.tokens for r in out.rows])  # (trials, L)
        written = tokens[:, 0:2 * pairs:2]  # (trials, P) keys in write order
        asked = tokens[:, out.rows[0].answers - 1]  # (trials, P) keys in query order
        where = (asked[:, :, None] == written[:, None, :]).double().argmax(-1)  # (trials, P) write slot asked
        order += out.hit.double().sum(0)
        slot.scatter_add_(0, where.flatten(), out.hit.double().flatten())
    n = trials * len(gaps)  # every order and every slot is asked once per row
    by_order = (order / n).tolist()
    return {"accuracy": sum(by_order) / pairs, "first_accuracy": by_order[0],
            "by_order": [round(x, 4) for x in by_order],
            "elimination_by_order": [round(x, 4) for x in mqar.elimination_by_order(pairs)],
            "by_slot": [round(x, 4) for x in (slot / n).tolist()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint (HOPE or baseline)")
    parser.add_argument("--pairs", type=int, default=8, help="key/value pairs per row")
    parser.add_argument("--gaps", default="0,16,32,48", help="filler gaps, comma-separated (pooled)")
    parser.add_argument("--trials", type=int, default=256, help="rows per gap")
    args = parser.parse_args(argv)
    try:
        model, cfg, ckpt = load_model(args.ckpt, "cpu")
        res = breakdown(model, args.pairs, parse_gaps(args.gaps), args.trials)
    except HopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model_type": cfg.model_type, "step": ckpt.get("step"), "pairs": args.pairs,
                      "gaps": args.gaps, "trials": args.trials, **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
