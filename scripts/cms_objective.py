"""The fast CMS level's in-context objective, surrogate vs task (docs/architecture.md, "CMS fast level objective").

Trains `--config` once per objective (same seed, data and steps), then evaluates each checkpoint three ways on the
validation split: as trained, with the fast level's in-context writes frozen (eta = 0; the SMT and the bank still
write) and with the fast level's output removed (fast_gain = 0). `--fast_gain G` sets the fast level's output gain to
G after the seeded build (default: the model's own init, 0, which leaves the level silent).

Run as:
    python scripts/cms_objective.py --data data/tiny_shakespeare.txt --out runs/cms_objective --steps 300
    python scripts/cms_objective.py --data data/tiny_shakespeare.txt --out runs/cms_objective_gain1 --steps 300 --fast_gain 1
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from hope.checkpoint import load_model
from hope.config import load_config
from hope.data.corpus import load_corpus
from hope.eval.binned import binned_loss
from hope.eval.lm import evaluate_lm
from hope.models import build_model
from hope.runs import find_metrics_log, read_metrics
from hope.runtime import seed_everything
from hope.train.loop import train

OBJECTIVES = ("surrogate", "task")


def trained(config: str, data: str, out: Path, steps: int, objective: str, fast_gain: float | None) -> Path:
    cfg = load_config(config, [{"data": data, "device": "cpu", "steps": steps, "eval_batches": 50,
                                "eval_interval": 100000, "cms_objective": objective,
                                "out": str(out / objective / "ckpt.pt")}])
    seed_everything(cfg.seed)  # as train() does before it builds a model: the same init for both objectives
    model = build_model(cfg)
    if fast_gain is not None:
        with torch.no_grad():
            for block in model.blocks:
                block.cms.fast_gain.fill_(fast_gain)
    train(cfg, model=model)
    return Path(cfg.out)


def ablations(ckpt: Path, val: torch.Tensor, seq_len: int, batch_size: int, windows: int) -> dict:
    """Validation loss of `ckpt` as trained, with the fast level's writes frozen, and without the fast level; the
    first two also per position bin over 512-byte streams (state carried over 8 segments)."""
    model, _, _ = load_model(ckpt)
    frozen, silent = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for a, b in zip(frozen.blocks, silent.blocks):
            a.cms.eta_logit.fill_(-1e4)  # sigmoid underflows to 0: no in-context step
            b.cms.fast_gain.zero_()
    out = {"fast_gain_abs_mean": [round(b.cms.fast_gain.abs().mean().item(), 4) for b in model.blocks]}
    for label, m in (("as trained", model), ("no fast writes", frozen), ("no fast level", silent)):
        out[f"val {label}"] = round(evaluate_lm(m, val, seq_len, batch_size, torch.device("cpu"), windows)["loss"], 4)
        if label != "no fast level":
            rows = binned_loss(m, val, [64, 128, 256, 512], windows=24, batch_size=batch_size)
            out[f"bins 0-64-128-256-512 {label}"] = [round(r["loss"], 4) for r in rows]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/hope_cpu.yaml")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fast_gain", type=float, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    cfg = load_config(args.config)
    val = load_corpus(args.data, seed=cfg.seed).val
    for objective in OBJECTIVES:
        ckpt = trained(args.config, args.data, out, args.steps, objective, args.fast_gain)
        final = [r for r in read_metrics(find_metrics_log(ckpt)) if r.get("final") and r["split"] == "val"][-1]
        row = {"objective": objective, "val": round(final["loss"], 4), "tokens/s": round(final["tokens_per_s"]),
               **ablations(ckpt, val, cfg.seq_len, cfg.batch_size, 50 * cfg.batch_size)}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
