"""Is the memory alive? Reads a stream of text through a HOPE model and prints, per block, what
docs/architecture.md, "Invariants under test" (no collapse) and "Surprise" (alive) ask of a memory: how far each box's fast weight moved
from its prior, whether the k and v boxes are different maps, and the spread of the normalised surprise along
the text (overall and in the stream's first chunk), and the learned gates along it: the mean inner rate
sigmoid(eta logit) (before surprise) and the mean retention alpha with its half-life in bytes (how far back a write
survives: docs/results.md §2); per head, the rate each token wrote at (surprise, timescale ceilings and the write
threshold included), the share of tokens writing at > 0.1, and the half-life of a write under retention alone and
under retention and overwriting together (docs/results.md §10).

Run as:
    python scripts/memory_health.py --data data/tiny_shakespeare.txt                 # the default config at init
    python scripts/memory_health.py --data data/tiny_shakespeare.txt --ckpt runs/hope/ckpt.pt --bytes 16384
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from hope.checkpoint import load_model
from hope.config import Config, validate
from hope.data.corpus import load_bytes
from hope.eval.gates import half_life, record_gates, write_half_life
from hope.models import build_model
from hope.ops.memory import box_apply


def health(model: torch.nn.Module, text: torch.Tensor, seed: int = 0) -> list[dict[str, float]]:
    surprises: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    hooks = [b.smt.register_forward_hook(lambda _m, _a, out, i=i: surprises[i].append(out[1]))
             for i, b in enumerate(model.blocks)]
    try:
        with torch.no_grad(), record_gates(model) as gates:
            _, _, state = model(text[None].long())
    finally:
        for h in hooks:
            h.remove()
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i, (block, layer) in enumerate(zip(model.blocks, state.layers)):
        smt, change = block.smt, layer.smt.change  # (1, boxes, H, d, f)
        prior = smt.prior(torch.float32)
        scale = (prior[0] if smt.kind == "linear" else prior[0]).norm(dim=(-2, -1)).clamp_min(1e-6)
        moved = (change.norm(dim=(-2, -1)) / scale)[0]  # (boxes, H) |W - W_0| / |W_0| (|D| / |W1_0| for mlp)
        row = {"block": i, "moved_memory": moved[0].mean().item()}
        if smt.boxes == 3:
            z = F.normalize(torch.randn(1, 1, smt.num_heads, 256, smt.head_dim, generator=g), dim=-1)
            k = box_apply(tuple(w[:, 1:2] for w in prior), change[:, 1:2], z, smt.kind)
            v = box_apply(tuple(w[:, 2:] for w in prior), change[:, 2:], z, smt.kind)
            row.update(moved_k=moved[1].mean().item(), moved_v=moved[2].mean().item(),
                       abs_cos_k_v=F.cosine_similarity(k, v, dim=-1).abs().mean().item())
        s = torch.cat(surprises[i], dim=1)[0]  # (L,)
        first = s[:smt.chunk]
        row.update(surprise_std=s.std().item(), surprise_p05=s.quantile(0.05).item(),
                   surprise_p95=s.quantile(0.95).item(), first_chunk_surprise_std=first.std().item())
        eta, alpha = torch.sigmoid(gates.logit(i)[:, 0]), gates.retention(model, i).T  # (L, H) each
        mean_alpha = alpha.mean().item()
        row.update(mean_eta=eta.mean().item(), mean_retention=mean_alpha, min_retention=alpha.min().item(),
                   retention_half_life=half_life(mean_alpha))
        # Per head, the rate each token wrote at (surprise, ceilings and threshold included) and how long a write
        # survives the head's retention alone and with the overwriting by later writes (hope.eval.gates).
        written = gates.rate(i)  # (H, L)
        eta_h, alpha_h = written.mean(-1).tolist(), alpha.mean(0).tolist()  # per head
        row.update(rate_by_head=eta_h, write_share_by_head=(written > 0.1).float().mean(-1).tolist(),
                   retention_half_life_by_head=[half_life(a) for a in alpha_h],
                   memory_half_life_by_head=[write_half_life(a, e, smt.head_dim) for a, e in zip(alpha_h, eta_h)])
        rows.append(row)
    return rows


def rounded(value):
    return [rounded(v) for v in value] if isinstance(value, list) else round(value, 4) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="text file to read (its first --bytes bytes)")
    p.add_argument("--ckpt", default=None, help="a HOPE checkpoint (default: the default config at init, seed 0)")
    p.add_argument("--bytes", type=int, default=16384, help="bytes of text to read")
    args = p.parse_args(argv)
    if args.ckpt:
        model = load_model(args.ckpt)
        model = model[0] if isinstance(model, tuple) else model
    else:
        cfg = Config(dim=128, depth=2, num_heads=4, seq_len=256, max_len=256)
        validate(cfg)
        torch.manual_seed(0)
        model = build_model(cfg)
    model.eval()
    for row in health(model, load_bytes(args.data)[:args.bytes]):
        print(json.dumps({k: rounded(v) for k, v in row.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
