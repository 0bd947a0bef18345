"""Shared test setup: one torch thread per test.

The suite runs on 2-core machines (CI, laptops) where torch's default thread pool oversubscribes the cores and
makes tiny models ~10x slower; one thread is faster and keeps timings predictable. Restored after each test.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def save_tiny_gpt2(out, lines: list[str], n_layer: int) -> None:
    """A tiny GPT-2 with a byte-level BPE tokenizer trained on `lines`, saved to `out` like a Hub checkpoint
    (nothing downloaded). Used by the Hugging Face comparison tests."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                     eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=n_layer, n_head=2, n_embd=32, n_positions=64, vocab_size=len(tokenizer),
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    tokenizer.save_pretrained(out)
    transformers.GPT2LMHeadModel(config).save_pretrained(out)
