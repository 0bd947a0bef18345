"""Corpus files: `--data FILE` is memory-mapped, and its train/validation split is exactly the historical one.

The split of a single file is pinned against the implementation that read the file whole (frozen below) and
against the sha256 of each split it produced, so memory-mapping changes no byte of either split.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import torch

from hope.data.corpus import VAL_FRACTION, load_corpus


def _historical_split(path: Path) -> tuple[bytes, bytes]:
    """The split as hope/data/corpus.py computed it before memory mapping (read whole, first 90% train)."""
    raw = path.read_bytes()
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    n_train = int(len(data) * (1 - VAL_FRACTION))
    return data[:n_train].numpy().tobytes(), data[n_train:].numpy().tobytes()


# (file size, train bytes, sha256 of train, sha256 of validation) produced by the whole-file implementation on
# random.Random(size).randbytes(size).
PINNED = [
    (12345, 11110, "c38f69993a7ff9afe155659887c393275355841034e498d1b3debd040c6088cd",
     "fbf962d9595d2efe0913c761e543dea437405bd3c3f8e6f812fe2d8a13fad4de"),
    (10, 9, "959fb797cc0a084d3812bac5ec81575311bf29dcb431dfab258303b52d7d0e14",
     "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
    (1001, 900, "d2b0c8b6f057dc11decfdaa1713032b37b1a7ba64e45ee3a12adb74966edb972",
     "08d90ef48370774c82269223d74067739e93e3f75adf8c366bbe2e3a9a3bdcb8"),
    (1 << 20, 943718, "67baa2b814498a9d082b0ee8f2c78845215d134ced64a92c71331c82a88d198c",
     "95e3e1ecac5cfdd4e2db2c0bf897ed67f22ad2337ba159c502b9048b5b4d8d30"),
]


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("size, n_train, train_sha, val_sha", PINNED)
def test_single_file_split_is_pinned(tmp_path, size, n_train, train_sha, val_sha):
    path = tmp_path / "corpus.bin"
    path.write_bytes(random.Random(size).randbytes(size))
    for seed in (0, 3):  # the seed picks the synthetic corpus only; a file's split never depends on it
        corpus = load_corpus(path, seed=seed)
        assert corpus.train.dtype == corpus.val.dtype == torch.uint8
        assert (len(corpus.train), len(corpus.train) + len(corpus.val)) == (n_train, size)
        assert (_sha(corpus.train), _sha(corpus.val)) == (train_sha, val_sha)


@pytest.mark.parametrize("size", [*range(1, 60), 999, 1000, 1001, 4097, 65_537])
def test_single_file_split_equals_the_whole_file_implementation(tmp_path, size):
    path = tmp_path / "corpus.txt"
    path.write_bytes(random.Random(size + 1).randbytes(size))
    corpus = load_corpus(str(path))
    assert (corpus.train.numpy().tobytes(), corpus.val.numpy().tobytes()) == _historical_split(path)
    assert corpus.name == str(path)
