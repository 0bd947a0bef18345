"""Collections of documents as `--data`: a directory, a glob, a manifest. Documents stay whole, their boundaries
are kept, and the train/validation split is by document, deterministic, and never leaks a validation document
into training."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from hope.config import load_config
from hope.data.corpus import (VAL_FRACTION, Corpus, DataError, data_exists, list_documents, load_corpus,
                              validation_documents)
from hope.train.loop import train


def _doc(i: int) -> bytes:
    """Document i: a unique header (so every document can be found by its bytes), then a body of varied length."""
    rng = random.Random(i)
    return f"<<doc {i:03d}>>\n".encode() + bytes(rng.choice(b"abcdefgh \n") for _ in range(200 + 97 * (i % 13)))


def _make_tree(root: Path, n: int = 30) -> dict[str, bytes]:
    """n documents in two folders (created in a shuffled order), plus files a collection must leave out."""
    names = [f"{'part1' if i % 2 else 'part2'}/doc{i:03d}.txt" for i in range(n)]
    order = list(range(n))
    random.Random(0).shuffle(order)
    for i in order:
        path = root / names[i]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_doc(i))
    (root / ".hidden").write_bytes(b"not a document")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"not a document either")
    (root / "part1" / "empty.txt").write_bytes(b"")
    return {name: _doc(i) for i, name in enumerate(names)}


def _split_docs(corpus: Corpus) -> tuple[dict[str, bytes], dict[str, bytes]]:
    out = []
    for tensor, docs in ((corpus.train, corpus.train_docs), (corpus.val, corpus.val_docs)):
        assert docs.offsets[0] == 0 and docs.offsets[-1] == len(tensor) and len(docs.offsets) == len(docs) + 1
        raw = tensor.numpy().tobytes()
        out.append({name: raw[lo:hi] for name, lo, hi in zip(docs.names, docs.offsets[:-1], docs.offsets[1:])})
    return out[0], out[1]


def _check_split(corpus: Corpus, expected: dict[str, bytes]) -> tuple[set[str], set[str]]:
    train_docs, val_docs = _split_docs(corpus)
    assert {**train_docs, **val_docs} == expected  # every document whole, under its name, exactly once
    assert train_docs and val_docs and not set(train_docs) & set(val_docs)
    train_bytes = corpus.train.numpy().tobytes()
    for body in val_docs.values():  # no validation document is seen in training
        assert body[:12] not in train_bytes
    total = sum(map(len, expected.values()))
    assert 0 < len(corpus.val) <= total * VAL_FRACTION
    return set(train_docs), set(val_docs)


# ----------------------------------------------------------------------------- the three forms


def test_directory_splits_by_document(tmp_path):
    expected = _make_tree(tmp_path / "books")
    corpus = load_corpus(tmp_path / "books")
    assert corpus.name == str(tmp_path / "books")
    train_names, val_names = _check_split(corpus, expected)
    assert list(corpus.train_docs.names) == sorted(train_names)  # path order within each split
    assert list(corpus.val_docs.names) == sorted(val_names)


def test_the_split_depends_on_the_documents_only(tmp_path):
    """Same names and bytes -> same split: wherever the folder is, however the files were created."""
    _make_tree(tmp_path / "a")
    first = load_corpus(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    second = load_corpus(str(tmp_path / "elsewhere" / "b"))
    assert first.val_docs.names == second.val_docs.names and first.train_docs.names == second.train_docs.names
    assert np.array_equal(first.val_docs.offsets, second.val_docs.offsets)
    assert bytes(first.train.numpy()) == bytes(second.train.numpy())


def test_glob_splits_by_document(tmp_path):
    expected = _make_tree(tmp_path / "books")
    by_dir = load_corpus(tmp_path / "books")
    corpus = load_corpus(str(tmp_path / "books" / "**" / "*.txt"))  # names relative to books/: the same split
    _check_split(corpus, expected)
    assert corpus.val_docs.names == by_dir.val_docs.names
    part1 = load_corpus(str(tmp_path / "books" / "part1" / "doc*.txt"))
    _check_split(part1, {name.split("/", 1)[1]: body for name, body in expected.items() if name.startswith("part1")})


def test_manifest_splits_by_document(tmp_path):
    expected = _make_tree(tmp_path / "books")
    by_dir = load_corpus(tmp_path / "books")
    manifest = tmp_path / "books" / "list.manifest"
    lines = ["# my books", ""] + [f"  {name}  " for name in sorted(expected, reverse=True)]
    manifest.write_text("\n".join(lines) + "\n")
    corpus = load_corpus(manifest)
    _check_split(corpus, expected)
    assert set(corpus.val_docs.names) == set(by_dir.val_docs.names)  # the same names: the same split
    # manifest order, not path order, within each split
    assert list(corpus.train_docs.names) == [n for n in sorted(expected, reverse=True) if n in corpus.train_docs.names]
    absolute = tmp_path / "abs.manifest"
    absolute.write_text("\n".join(str(tmp_path / "books" / n) for n in expected))
    assert set(load_corpus(absolute).train_docs.names) | set(load_corpus(absolute).val_docs.names) == {
        str(tmp_path / "books" / n) for n in expected}


def test_validation_documents_rule():
    names = [f"doc{i}" for i in range(50)]
    sizes = [100 + 13 * i for i in range(50)]
    held = validation_documents(names, sizes)
    assert 0 < sum(sizes[i] for i in held) <= sum(sizes) * VAL_FRACTION
    order = list(range(50))
    random.Random(1).shuffle(order)  # the input order does not matter
    assert {order[j] for j in validation_documents([names[i] for i in order], [sizes[i] for i in order])} == held
    assert validation_documents(["big", "small"], [1000, 10]) == {1}  # none fits a tenth: the smallest
    assert validation_documents(["a", "b", "c"], [10, 10, 10]) in ({0}, {1}, {2})


# ----------------------------------------------------------------------------- training and errors


def test_training_runs_on_a_directory(tmp_path):
    _make_tree(tmp_path / "books")
    cfg = load_config(None, [dict(model_type="baseline", dim=32, depth=1, num_heads=2, seq_len=32, max_len=32,
                                  batch_size=2, steps=2, eval_batches=2, warmup_steps=1, device="cpu",
                                  data=str(tmp_path / "books"), out=str(tmp_path / "ck.pt"))])
    result = train(cfg, save=False, verbose=False)
    assert result.step == 2 and result.val["loss"] > 0


@pytest.mark.parametrize("kind, fragment", [
    ("empty-dir", "names no file"),
    ("one-doc", "at least two non-empty documents"),
    ("no-match", "no file"),
    ("manifest-missing", "line 2: nope.txt is not a file"),
    ("manifest-twice", "listed twice"),
    ("missing", "data file not found"),
])
def test_bad_collections_raise_one_line_data_errors(tmp_path, kind, fragment):
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.txt").write_text("a document\n")
    data = str(root)
    if kind == "empty-dir":
        (root / "a.txt").unlink()
    elif kind == "no-match":
        data = str(root / "*.md")
    elif kind == "manifest-missing":
        data = str(root / "x.manifest")
        Path(data).write_text("a.txt\nnope.txt\n")
    elif kind == "manifest-twice":
        data = str(root / "x.manifest")
        Path(data).write_text("a.txt\n./b.txt\na.txt\n")
        (root / "b.txt").write_text("b\n")
    elif kind == "missing":
        data = str(root / "missing.txt")
    with pytest.raises(DataError) as err:
        load_corpus(data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_cli_turns_a_bad_collection_into_exit_status_2(tmp_path, capsys):
    from hope.cli.train import main

    assert main(["--data", str(tmp_path / "*.none"), "--steps", "1", "--out", str(tmp_path / "ck.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: pattern ") and err.endswith("names no file")


def test_data_exists_knows_every_form(tmp_path):
    _make_tree(tmp_path / "books")
    assert data_exists(tmp_path / "books") and data_exists(str(tmp_path / "books" / "*" / "*.txt"))
    assert data_exists(tmp_path / "books" / "part1" / "doc001.txt")
    assert not data_exists(str(tmp_path / "books" / "*.md")) and not data_exists(None)
    assert [d.name for d in list_documents(tmp_path / "books")][:2] == ["part1/doc001.txt", "part1/doc003.txt"]
    assert os.path.basename(str(tmp_path / "books")) == "books"
