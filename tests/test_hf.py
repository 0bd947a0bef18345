"""Hugging Face reference scoring on a tiny GPT-2 built here: nothing is downloaded, the Hub is never contacted."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_gpt2
import torch

from hope.experiments.hf import HFUnavailable, score_hf_model

LINES = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles",
]
# Several windows at context=16, a partial last window, and multi-byte characters (bytes != characters).
TEXT = ("\n".join(LINES * 3) + "\nhéllo wörld ✓ — ünïcode").encode("utf-8")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained on LINES, saved like a Hub checkpoint."""
    out = tmp_path_factory.mktemp("tiny_gpt2")
    save_tiny_gpt2(out, LINES, n_layer=2)
    return out


def _reference_nll(model_dir: Path, context: int) -> tuple[float, int, int]:
    """Summed NLL from the model's own mean loss (``labels=``) on windows that share one token at each boundary."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tokenizer(TEXT.decode("utf-8"), add_special_tokens=False)["input_ids"]
    seq = [tokenizer.bos_token_id] + ids
    total, count, start = 0.0, 0, 0
    while start < len(seq) - 1:
        window = torch.tensor([seq[start : start + context]])
        with torch.no_grad():
            mean_loss = model(input_ids=window, labels=window).loss  # mean over the T - 1 predictions
        total += float(mean_loss) * (window.shape[1] - 1)
        count += window.shape[1] - 1
        start += context - 1
    return total, count, len(ids)


def test_bpb_matches_a_direct_computation(tiny_model_dir: Path) -> None:
    result = score_hf_model(tiny_model_dir, TEXT, context=16)  # several windows, the last one partial
    assert result["context"] == 16
    nll, count, n_ids = _reference_nll(tiny_model_dir, 16)
    assert result["tokens"] == count == n_ids  # BOS prepended: every text token is predicted exactly once
    assert result["bytes"] == len(TEXT)
    assert math.isfinite(result["bpb"]) and result["bpb"] > 0
    assert result["nll_nats"] == pytest.approx(nll, rel=1e-4)
    assert result["bpb"] == pytest.approx(nll / (math.log(2) * len(TEXT)), rel=1e-4)


def test_max_tokens_counts_the_bytes_of_the_scored_span(tiny_model_dir: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(TEXT.decode("utf-8"), add_special_tokens=False)["input_ids"]
    result = score_hf_model(tiny_model_dir, TEXT, max_tokens=40, context=16)
    assert result["tokens"] == 40
    assert result["bytes"] == len(tokenizer.decode(ids[:40]).encode("utf-8"))
    assert result["bytes"] < len(TEXT)


def test_invalid_utf8_is_replaced_not_fatal(tiny_model_dir: Path) -> None:
    result = score_hf_model(tiny_model_dir, b"abc \xff\xfe def")
    assert result["context"] == 64  # the model's n_positions when no cap is given
    assert math.isfinite(result["bpb"])
    assert result["bytes"] == len("abc \ufffd\ufffd def".encode("utf-8"))  # the bytes of the text scored


def test_offline_and_missing_model_is_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(HFUnavailable) as info:
        score_hf_model(tmp_path / "no_such_model", b"hello world")
    reason = str(info.value)
    assert "no_such_model" in reason and "HF_HUB_OFFLINE" in reason
    assert "\n" not in reason


def test_missing_transformers_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(HFUnavailable, match="transformers is not installed"):
        score_hf_model("gpt2", b"hello world")
