"""Language-model metrics: loss (nats/byte), perplexity, bits per byte, top-1/5/10 next-byte accuracy.

Evaluation sums over tokens, all-reduces the sums across ranks, then divides once (nanochat's habit), so the
figures do not depend on the number of processes or on batch boundaries.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from hope.runtime import autocast

TOPK = (1, 5, 10)


IGNORE = -100  # a target that counts nowhere (F.cross_entropy's default ignore_index; `loss_on: answers`)


def token_sums(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-batch sums [nll, top1, top5, top10, count] (float64, shape (5,)) from logits (B, T, V), targets (B, T).

    Targets equal to IGNORE count in none of the sums (nor in the count), so the means are over scored bytes."""
    logits = logits.float().reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    scored = targets != IGNORE  # (N,)
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE)
    top = logits.topk(max(TOPK), dim=-1).indices  # (N, 10); an ignored target (-100) never matches a byte
    hits = (top == targets[:, None]) & scored[:, None]  # (N, 10)
    counts = [hits[:, :k].any(-1).sum() for k in TOPK]
    return torch.stack([nll.double(), *[c.double() for c in counts], scored.sum().double()])


def summarize(sums: torch.Tensor, track_ppl: bool = True, track_accuracy: bool = True) -> dict[str, float]:
    """[nll, top1, top5, top10, count] -> {loss, ppl, bpb, accuracy, top5_acc, top10_acc}."""
    nll, c1, c5, c10, n = (float(x) for x in sums.tolist())
    n = max(n, 1.0)
    loss = nll / n
    out = {"loss": loss}
    if track_ppl:
        out["ppl"] = math.exp(min(loss, 50.0))
    out["bpb"] = loss / math.log(2)
    if track_accuracy:
        out.update(accuracy=c1 / n, top5_acc=c5 / n, top10_acc=c10 / n)
    return out


def eval_windows(n_bytes: int, seq_len: int, max_windows: int | None) -> list[int]:
    """Start offsets of non-overlapping windows of seq_len + 1 bytes spread evenly over the split."""
    total = max((n_bytes - 1) // seq_len, 0)
    if total == 0:
        return []
    if max_windows is None or max_windows >= total:
        return [i * seq_len for i in range(total)]
    stride = total / max_windows
    return [int(i * stride) * seq_len for i in range(max_windows)]


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, data: torch.Tensor, seq_len: int, batch_size: int, device: torch.device,
                max_windows: int | None = None, amp: bool = False, amp_dtype: str = "bf16",
                track_ppl: bool = True, track_accuracy: bool = True, rank: int = 0, world_size: int = 1,
                lockstep: bool = False) -> dict[str, float]:
    """Metrics of `model` on `data` (uint8 bytes) over fixed windows; each window starts a fresh state.

    Rank r of `world_size` scores every world_size-th window; the sums are all-reduced. `lockstep` (a sharded
    model, whose every forward call is a collective all-gather) makes every rank call the model as often as
    rank 0, which has the most windows: a rank short of a batch runs the first window and discards its scores."""
    was_training = model.training
    model.eval()
    windows = eval_windows(len(data), seq_len, max_windows)
    starts = windows[rank::world_size]
    calls = -(-len(windows[0::world_size]) // batch_size) if lockstep else -(-len(starts) // batch_size)
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    for call in range(calls):
        batch = starts[call * batch_size:(call + 1) * batch_size]
        rows = torch.stack([data[s:s + seq_len + 1] for s in batch or windows[:1]])
        rows = rows.long().to(device)
        with autocast(device, amp, amp_dtype):
            logits, _, _ = model(rows[:, :-1])
        if batch:
            sums += token_sums(logits, rows[:, 1:])
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    out = summarize(sums, track_ppl, track_accuracy)
    out["tokens"] = int(sums[4].item())
    return out
