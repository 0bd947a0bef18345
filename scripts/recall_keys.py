"""Does a model look a value up by its key, or just repeat a recent value? (docs/results.md, "History")

`hope-eval-long` writes one key/value pair per stream, so a model that answers every query with the last value it
saw scores as well as one that matches keys. Here each row holds several pairs (`training_row(..., episodes=N)`,
distinct keys, writes and queries interleaved at random), and for every query we report p(its own value) and the
mean p(the value of another pair written earlier in the row), split by whether the write is inside the attention
window. A key lookup puts its mass on the own value; a "repeat a value" shortcut spreads it over all of them.

Run as:
    python scripts/recall_keys.py reports/hope_checkpoint.pt --episodes 4 --data data/tiny_shakespeare.txt
"""

from __future__ import annotations

import argparse
import random

import torch

from hope.checkpoint import load_model
from hope.data.recall import CLOSE, KEY_LEN, OPEN, VALUE_LEN, chance_level, episode_overhead, training_row
from hope.eval.long import recall_filler


def queries(row: list[int]) -> list[tuple[int, int, list[bytes]]]:
    """(position of the first value byte, gap from its write, values written earlier under other keys) per query."""
    writes: dict[bytes, tuple[int, bytes]] = {}
    out = []
    for i, b in enumerate(row):
        if b != OPEN or i + 2 + KEY_LEN + VALUE_LEN > len(row):
            continue
        key, start = bytes(row[i + 1:i + 1 + KEY_LEN]), i + 2 + KEY_LEN
        value = bytes(row[start:start + VALUE_LEN])
        if start + VALUE_LEN < len(row) and row[start + VALUE_LEN] == CLOSE:
            writes[key] = (i, value)
        elif key in writes:
            others = [v for k, (_, v) in writes.items() if k != key and v != value]
            out.append((start, i - writes[key][0], others))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("--episodes", type=int, default=4, help="key/value pairs per row")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--length", type=int, default=0, help="row length in bytes (default: the checkpoint's seq_len)")
    parser.add_argument("--data", help="filler text (default: the synthetic corpus)")
    args = parser.parse_args()
    model, cfg, _ = load_model(args.ckpt)
    filler = recall_filler(args.data)
    length = (args.length or cfg.seq_len) + 1
    window = cfg.attn_window if cfg.model_type == "hope" else cfg.max_len
    own: dict[bool, list[float]] = {True: [], False: []}
    other: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rows):
        row = training_row(random.Random(100_000 + r), length, filler, args.episodes)
        with torch.no_grad():
            logits, _, _ = model(row[None, :-1])
        logp = torch.log_softmax(logits[0].float(), dim=-1)  # (L - 1, 256): position t predicts row[t + 1]

        def p(start: int, value: bytes) -> float:
            return float(sum(logp[start - 1 + j, value[j]] for j in range(VALUE_LEN)).exp())

        for start, gap, others in queries(row.tolist()):
            near = gap < window
            own[near].append(p(start, bytes(row[start:start + VALUE_LEN].tolist())))
            other[near] += [p(start, v) for v in others]
    pairs = max(1, min(args.episodes, length // episode_overhead()))  # as many as fit (training_row's rule)
    print(f"{args.ckpt}: {args.rows} rows of {length} bytes, {pairs} pairs each; chance {chance_level():.3f}")
    for near, label in ((True, f"write inside the {window}-byte window"), (False, "write outside the window")):
        n = len(own[near])
        if n:
            mean_own = sum(own[near]) / n
            mean_other = sum(other[near]) / max(len(other[near]), 1)
            print(f"  {label}: {n} queries, p(own value) {mean_own:.3f}, p(another pair's value) {mean_other:.3f}")


if __name__ == "__main__":
    main()
