"""Sampling with carried state: the prompt is read once, then each new byte costs one single-token forward.

HOPE carries its memories (fast weights, bank, attention window cache, partial-chunk tails) token by token, so
memory stays flat however long the generation runs; the baseline keeps a KV cache of at most `max_len` tokens
and slides it, as real Transformers do.
"""

from __future__ import annotations

from typing import Iterator

import torch

from hope.tokenizer import encode


@torch.no_grad()
def generate_bytes(model: torch.nn.Module, prompt: bytes, max_new_tokens: int, *, temperature: float = 1.0,
                   top_k: int | None = None, seed: int | None = None, device: torch.device | str = "cpu"
                   ) -> Iterator[int]:
    """Yield `max_new_tokens` sampled byte values after `prompt` (temperature 0 = greedy)."""
    if max_new_tokens <= 0:
        return
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    model.eval()
    ids = encode(prompt)[None].to(device) if prompt else torch.zeros(1, 1, dtype=torch.long, device=device)
    logits, _, state = model(ids)  # read the prompt once (segment by segment), state carried
    next_logits = logits[0, -1].float()  # (256,)
    for _ in range(max_new_tokens):
        token = sample(next_logits, temperature, top_k, gen)
        yield token
        logits, _, state = model(torch.tensor([[token]], device=device), state=state)
        next_logits = logits[0, -1].float()


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> int:
    """One byte from logits (256,) with temperature and top-k filtering."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.cpu() / temperature
    if top_k is not None and 0 < top_k < logits.numel():
        kth = logits.topk(top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))
