"""Score a pretrained Hugging Face causal LM on a text in bits per byte, for comparison with our byte models.

Bits per byte (total negative log-likelihood in bits / number of UTF-8 bytes) does not depend on the
tokenizer, so a subword model such as GPT-2 can be compared with HOPE and the baseline, which predict bytes.

The comparison is optional: ``transformers`` may be missing, or the machine offline (``HF_HUB_OFFLINE=1``),
in which case ``score_hf_model`` raises ``HFUnavailable`` with a one-line reason that the experiment records
as ``{"skipped": reason}`` instead of failing. ``transformers`` is imported inside the function, not at module
import: the offline switch is read from the environment when ``transformers`` is first imported, and
importing this module must stay cheap and possible without it.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_HF_MODEL", "HFUnavailable", "offline_mode", "score_hf_model"]

DEFAULT_HF_MODEL = "gpt2"

_TRUE = {"1", "true", "yes", "on"}


class HFUnavailable(RuntimeError):
    """The Hugging Face comparison cannot run here; ``str(exc)`` is a one-line reason suitable for a report."""


def offline_mode() -> bool:
    """Whether the user asked for no Hub access (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to 1/true)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    msg = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _load(name_or_path: str, device: str) -> tuple[Any, Any]:
    """Tokenizer and model in eval mode on ``device``, or ``HFUnavailable``."""
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise HFUnavailable("transformers is not installed (pip install transformers)") from None
    # huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported; if transformers was imported before
    # the variable was set, only local_files_only still keeps the loaders off the network.
    offline = offline_mode()
    if offline and not Path(name_or_path).is_dir():
        # The manual: offline, the Hugging Face comparison is skipped. A model folder on disk is not a hub
        # download, so it is still scored (that is how the tests and air-gapped users compare).
        raise HFUnavailable(f"HF_HUB_OFFLINE=1 and {name_or_path!r} is not a local model folder")
    local_only = offline or Path(name_or_path).is_dir()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
        model = transformers.AutoModelForCausalLM.from_pretrained(name_or_path, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001
        # Missing files (OSError), bad repo ids (ValueError), HTTP/network errors (requests or httpx, depending
        # on the huggingface_hub version): whatever stops the optional reference model from loading must not
        # abort an experiment that has already trained two models.
        hint = " (HF_HUB_OFFLINE is set and it is not a local or cached model)" if offline else ""
        raise HFUnavailable(f"cannot load {name_or_path!r}{hint}: {_one_line(exc)}") from exc
    model.to(device)
    model.eval()
    return tokenizer, model


def _model_context(model: Any) -> int:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 1:
            return value
    return 1024  # an unknown architecture: a window every causal LM of interest supports


def _tokenize(tokenizer: Any, text: str, max_tokens: int | None) -> tuple[list[int], int]:
    """Token ids of ``text`` (truncated to ``max_tokens``) and the UTF-8 byte count of the span they cover."""
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast, verbose=False)
    ids = list(enc["input_ids"])
    if max_tokens is None or max_tokens >= len(ids):
        return ids, len(text.encode("utf-8"))
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    ids = ids[:max_tokens]
    if fast:
        # Character offsets map the kept tokens back to the exact prefix of the text they encode.
        end = enc["offset_mapping"][max_tokens - 1][1]
        return ids, len(text[:end].encode("utf-8"))
    return ids, len(tokenizer.decode(ids, clean_up_tokenization_spaces=False).encode("utf-8"))


@torch.no_grad()
def _sum_nll(model: Any, seq: list[int], context: int, device: str) -> tuple[float, int]:
    """Summed next-token NLL (nats) of ``seq[1:]`` given the previous tokens, in windows of ``context`` tokens.

    Consecutive windows share one token: the last token of a window is the first input of the next, so every
    token after the first is predicted exactly once, with up to ``context - 1`` tokens of history.
    """
    total, count = 0.0, 0
    for start in range(0, len(seq) - 1, context - 1):
        window = torch.tensor(seq[start : start + context], dtype=torch.long, device=device)[None]  # (1, T)
        logits = model(input_ids=window).logits.float()  # (1, T, V)
        # Logits at position t predict token t + 1.
        nll = F.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
        total += float(nll)
        count += window.shape[1] - 1
    return total, count


def score_hf_model(
    name_or_path: str | os.PathLike[str],
    text: bytes,
    *,
    device: str = "cpu",
    max_tokens: int | None = None,
    context: int | None = None,
) -> dict[str, Any]:
    """Bits per byte of a Hugging Face causal LM on ``text``.

    ``text`` is decoded as UTF-8 (invalid bytes become U+FFFD) and tokenised without special tokens, then cut
    to ``max_tokens`` tokens if given. When the tokenizer has a BOS token (GPT-2: ``<|endoftext|>``, the
    document separator it was trained with) it is prepended, so the first text token is scored too, as
    lm-evaluation-harness does; otherwise the first token is only context and its bytes are not counted.
    Windows are the model's context (``n_positions`` / ``max_position_embeddings``), capped by ``context``.

    Returns ``{"model", "bpb", "nll_nats", "tokens", "bytes", "context"}``: ``nll_nats`` is the summed NLL of
    the ``tokens`` scored tokens, ``bytes`` the UTF-8 length of exactly the span they encode, and
    ``bpb = nll_nats / (ln 2 * bytes)``. Raises ``HFUnavailable`` when the model cannot be loaded.
    """
    name = str(name_or_path)
    tokenizer, model = _load(name, device)
    window = _model_context(model) if context is None else min(context, _model_context(model))
    if window < 2:
        raise ValueError(f"context must be >= 2 tokens to predict anything, got {window}")

    decoded = text.decode("utf-8", errors="replace")
    ids, n_bytes = _tokenize(tokenizer, decoded, max_tokens)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        seq = [bos] + ids
    else:
        seq = ids
        if ids:
            first = tokenizer.decode(ids[:1], clean_up_tokenization_spaces=False)
            n_bytes -= len(first.encode("utf-8"))
    if len(seq) < 2 or n_bytes <= 0:
        raise ValueError(f"text too short to score with {name!r}: {len(ids)} token(s), {len(text)} byte(s)")

    nll, tokens = _sum_nll(model, seq, window, device)
    return {
        "model": name,
        "bpb": nll / (math.log(2) * n_bytes),
        "nll_nats": nll,
        "tokens": tokens,
        "bytes": n_bytes,
        "context": window,
    }
