"""Byte tokenizer: id == byte, vocab 256, exact round-trips of any bytes, replacement characters for display."""

from __future__ import annotations

import random

import pytest
import torch

from hope.tokenizer import VOCAB_SIZE, decode, decode_text, encode


def test_vocab_is_every_byte():
    assert VOCAB_SIZE == 256
    ids = encode(bytes(range(256)))
    assert ids.dtype == torch.int64 and ids.shape == (256,)
    assert ids.tolist() == list(range(256))
    assert int(ids.min()) == 0 and int(ids.max()) == VOCAB_SIZE - 1


@pytest.mark.parametrize("seed", range(5))
def test_arbitrary_bytes_round_trip(seed):
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
    assert decode(encode(data)) == data


@pytest.mark.parametrize("data", [
    b"\xff\xfe\x80abc",  # invalid UTF-8 start bytes and a lone continuation byte
    b"\xe4\xb8",  # a truncated 3-byte sequence
    b"\x00\x01\x02\x03\n",  # control bytes (the recall task's markers)
    "héllo, 世界 🙂".encode("utf-8"),
    b"",
])
def test_edge_bytes_round_trip(data):
    ids = encode(data)
    assert ids.shape == (len(data),) and ids.dtype == torch.int64
    assert decode(ids) == data


def test_str_is_encoded_as_utf8():
    text = "Hello, HOPE! héllo 世界"
    assert torch.equal(encode(text), encode(text.encode("utf-8")))
    assert len(encode(text)) == len(text.encode("utf-8"))
    assert decode_text(encode(text)) == text
    assert encode("").shape == (0,) and decode_text(encode("")) == ""


def test_decode_text_uses_replacement_characters():
    assert decode_text(encode(b"ab\xffcd")) == "ab\ufffdcd"
    assert decode_text([0xE4, 0xB8]) == "\ufffd"  # truncated sequence
    assert decode_text(encode(b"\x80\x80")).count("\ufffd") == 2


def test_decode_accepts_lists_and_any_shape():
    assert decode([72, 105]) == b"Hi"
    batch = encode(b"abcdef").view(2, 3)  # (B, T)
    assert decode(batch) == b"abcdef"
    assert decode(torch.tensor([104, 105], dtype=torch.uint8)) == b"hi"


def test_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError):
        decode([256])


def test_encode_does_not_alias_the_input():
    buf = bytearray(b"abc")
    ids = encode(bytes(buf))
    buf[0] = ord("z")
    ids[1] = 0
    assert decode(ids) == b"a\x00c"
