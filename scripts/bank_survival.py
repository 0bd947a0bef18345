"""Do the episodic-bank entries written around a recall key survive a long gap? (docs/results.md, "History")

Streams recall episodes through a HOPE checkpoint one segment at a time and, per layer, prints the strengths of
the entries the write episode added to the bank and how many of them are still stored every 2048 bytes, next to
the bank's minimum and median strength (the eviction threshold is the minimum once the bank is full).

Run as:
    python scripts/bank_survival.py reports/hope_checkpoint.pt --gap 8192 --data data/tiny_shakespeare.txt
"""

from __future__ import annotations

import argparse
import random

import torch

from hope.checkpoint import load_model
from hope.data.recall import KEY_LEN, VALUE_LEN, make_episode
from hope.eval.long import recall_filler


def stored(bank_keys: torch.Tensor, key: torch.Tensor) -> bool:
    """Is `key` (C,) one of the slots of `bank_keys` (cap, C)?"""
    return bool(((bank_keys - key).abs().sum(-1).min() < 1e-5).item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--gap", type=int, default=8192)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--data", help="filler text (default: the synthetic corpus)")
    args = parser.parse_args()
    model, cfg, _ = load_model(args.ckpt)
    if cfg.model_type != "hope" or cfg.memory_capacity == 0:
        raise SystemExit("error: needs a HOPE checkpoint with an episodic bank")
    filler = recall_filler(args.data)
    seg = cfg.seq_len
    for trial in range(args.episodes):
        ep = make_episode(random.Random(trial), args.gap, filler)
        # the write's first value byte: <query: OPEN KEY SEP VALUE> and <CLOSE gap> sit after it
        write_value = len(ep.tokens) - (KEY_LEN + 2 + VALUE_LEN) - args.gap - 1 - VALUE_LEN
        state, added, born = model.init_state(1), None, 0
        with torch.no_grad():
            for start in range(0, len(ep.tokens) - 1, seg):
                before = [layer.bank.keys[0].clone() for layer in state.layers]
                _, _, state = model(ep.tokens[None, start:start + seg], state=state)
                banks = [(layer.bank.keys[0], layer.bank.strength[0]) for layer in state.layers]
                if added is None and start + seg > write_value + cfg.update_frequencies.mem_write:
                    added = [[(k[i].clone(), float(s[i])) for i in range(len(s)) if s[i] > 0 and not stored(old, k[i])]
                             for old, (k, s) in zip(before, banks)]
                    born = start
                    print(f"episode {trial}: strengths of the entries added around the write, per layer: "
                          f"{[[round(x[1], 2) for x in layer] for layer in added]}")
                elif added is not None and (start - born) % 2048 < seg and start > born:
                    alive = [sum(stored(k, e[0]) for e in layer) for layer, (k, _) in zip(added, banks)]
                    print(f"  +{start - born:5d} bytes: still stored {alive}, bank min strength "
                          f"{[round(float(s.min()), 2) for _, s in banks]}, median {[round(float(s.median()), 2) for _, s in banks]}")


if __name__ == "__main__":
    main()
