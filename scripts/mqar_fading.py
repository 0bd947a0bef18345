"""Why does MQAR recall fade with the gap? Accuracy of a HOPE checkpoint under evaluation-time interventions that
each remove one cause of fading (docs/results.md §1):

    as trained          the model unchanged
    bank off            every block's episodic bank removed (its read no longer added)
    bank never ages     bank_aging 1: an old slot keeps its priority against fresh filler
    SMT retains         the self-modifying memory's retention alpha = 1 (no decay of its writes)
    filler silent       no write at a filler byte: the SMT's inner rate and the bank's write strength are 0 there
                        (an oracle gate: what perfectly sparse writes would keep)
    filler silent, SMT  the same for the SMT only

and the gates the model learned on the rows, by byte kind (pairs and queries vs filler): the mean rate each token
wrote at, its retention, and the half-life of a write under retention and overwriting (scripts/memory_health.py).
A cause whose removal restores the far gaps is what fades; one whose removal changes nothing is not.

Run as:
    python scripts/mqar_fading.py --ckpt runs/mq/hope_p16.pt --pairs 16 --gaps 0,2048,8192,16384 --samples 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from collections.abc import Iterator

import torch

from hope.checkpoint import load_model
from hope.data import mqar
from hope.errors import HopeError
from hope.eval.gates import record_gates, write_half_life
from hope.eval.long import mqar_accuracy, parse_gaps

SILENT = -50.0  # a logit whose sigmoid is 0 in float32, whatever surprise adds (clipped to +-3)


@contextlib.contextmanager
def _hooked(model: torch.nn.Module, smt_gates=None, bank_scores=None) -> Iterator[None]:
    """Rewrite the SMT gate logits ``(B, L, 2H)`` / the bank's write scores ``(B, L, 1)`` of every block through
    ``fn(out, filler_mask)``, with the filler mask ``(B, L)`` of the tokens of the current call."""
    current: dict[str, torch.Tensor] = {}

    def segment(idx, state, run=model._segment):  # the model runs a call seq_len tokens at a time: mask per segment
        current["filler"] = (idx >= min(mqar.FILLER)) & (idx <= max(mqar.FILLER))
        return run(idx, state)

    outer = model.__dict__.get("_segment")  # another intervention's wrapper, when nested
    model._segment = segment
    hooks = []
    for block in model.blocks:
        if smt_gates is not None:
            hooks.append(block.smt.gates.register_forward_hook(lambda _m, _a, out: smt_gates(out, current["filler"])))
        if bank_scores is not None and block.bank is not None:
            hooks.append(block.bank.write_score.register_forward_hook(
                lambda _m, _a, out: bank_scores(out, current["filler"])))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        if outer is None:
            del model._segment
        else:
            model._segment = outer


def _silence_filler_rates(out: torch.Tensor, filler: torch.Tensor) -> torch.Tensor:
    H = out.shape[-1] // 2
    return torch.cat([out[..., :H].masked_fill(filler[..., None], SILENT), out[..., H:]], dim=-1)


def _full_retention(out: torch.Tensor, _filler: torch.Tensor) -> torch.Tensor:
    H = out.shape[-1] // 2
    return torch.cat([out[..., :H], out[..., H:].clamp_min(-SILENT)], dim=-1)


def _silence_filler_scores(out: torch.Tensor, filler: torch.Tensor) -> torch.Tensor:
    return out.masked_fill(filler[..., None], SILENT)


@contextlib.contextmanager
def _set_banks(model: torch.nn.Module, **changes) -> Iterator[None]:
    """Set attributes of every block (`bank=None`) or of its bank (`aging=1.0`) for the duration."""
    saved = []
    for block in model.blocks:
        for name, value in changes.items():
            owner = block if name == "bank" else block.bank
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


INTERVENTIONS = {
    "as trained": lambda m: contextlib.nullcontext(),
    "bank off": lambda m: _set_banks(m, bank=None),
    "bank never ages": lambda m: _set_banks(m, aging=1.0),
    "SMT retains": lambda m: _hooked(m, smt_gates=_full_retention),
    "filler silent": lambda m: _hooked(m, smt_gates=_silence_filler_rates, bank_scores=_silence_filler_scores),
    "filler silent, SMT": lambda m: _hooked(m, smt_gates=_silence_filler_rates),
}


@torch.no_grad()
def gates_by_kind(model: torch.nn.Module, pairs: int, gap: int, seed: int = 0) -> list[dict]:
    """Per block, the mean rate each token wrote at (`SelfModifyingMemory.rate`), the mean retention and the
    half-life of a write under both, over one row's filler bytes and over its key/value bytes."""
    row = mqar.make_row(random.Random(seed), pairs, gap)
    tokens = row.tokens[None, :-1].to(next(model.parameters()).device)
    filler = ((tokens >= min(mqar.FILLER)) & (tokens <= max(mqar.FILLER)))[0]  # (L,)
    model.eval()
    with record_gates(model) as gates:
        model(tokens)
    out = []
    for i, b in enumerate(model.blocks):
        eta, alpha = gates.rate(i), gates.retention(model, i)  # (H, L) each
        row_out = {"block": i}
        for kind, mask in (("filler", filler), ("pairs", ~filler)):
            e, a = eta[:, mask].mean().item(), alpha[:, mask].mean().item()
            row_out[kind] = {"rate": round(e, 4), "retention": round(a, 6),
                             "write_half_life": round(write_half_life(a, e, b.smt.head_dim), 1)}
        out.append(row_out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a HOPE checkpoint trained on MQAR rows")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--gaps", default="0,2048,8192,16384", help="comma-separated gaps in bytes")
    p.add_argument("--samples", type=int, default=32, help="rows per gap")
    p.add_argument("--only", default=None, help="comma-separated intervention names (default: all)")
    args = p.parse_args(argv)
    try:
        gaps = parse_gaps(args.gaps)
        model, cfg, _ = load_model(args.ckpt, "cpu")
        if cfg.model_type != "hope":
            raise HopeError(f"{args.ckpt} is a {cfg.model_type} checkpoint; the interventions are HOPE's memories")
        names = args.only.split(",") if args.only else list(INTERVENTIONS)
        unknown = [n for n in names if n not in INTERVENTIONS]
        if unknown:
            raise HopeError(f"unknown intervention(s) {unknown} (choose from {', '.join(INTERVENTIONS)})")
    except HopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in gates_by_kind(model, args.pairs, max(gaps)):
        print(json.dumps({"gates": row}))
    for name in names:
        with INTERVENTIONS[name](model):
            for gap in gaps:
                res = mqar_accuracy(model, args.pairs, gap, args.samples)
                print(json.dumps({"intervention": name, "gap": gap, "accuracy": round(res["accuracy"], 4),
                                  "first_accuracy": round(res["first_accuracy"], 4)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
