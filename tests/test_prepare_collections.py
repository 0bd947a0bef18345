"""`hope-prepare-data --inputs / --hf`: many documents -> one memory-mapped byte file plus its document index,
written atomically, split exactly as the same documents are split when `--data` names them directly."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from hope.cli.prepare_data import main
from hope.data import prepare
from hope.data.corpus import DataError, index_path, load_corpus, read_index
from hope.data.mapped import mapping_of
from hope.data.prepare import FileSource, TextSource, build_collection, parse_separator


def _tree(root: Path, n: int = 24) -> dict[str, bytes]:
    docs = {}
    for i in range(n):
        rng = random.Random(i)
        body = f"<<doc {i:03d}>>\n".encode() + bytes(rng.choice(b"xyzw \n") for _ in range(150 + 61 * (i % 11)))
        name = f"{'a' if i % 3 else 'b'}/d{i:03d}.txt"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
        docs[name] = body
    return docs


def _docs_of(corpus) -> dict[str, bytes]:
    out = {}
    for tensor, docs in ((corpus.train, corpus.train_docs), (corpus.val, corpus.val_docs)):
        raw = tensor.numpy().tobytes()
        out.update({n: raw[a:b] for n, a, b in zip(docs.names, docs.offsets[:-1], docs.offsets[1:])})
    return out


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 else None, captured.err


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("form", ["directory", "glob", "manifest"])
def test_a_prepared_collection_equals_the_direct_one_and_is_mapped(tmp_path, capsys, form):
    expected = _tree(tmp_path / "books")
    if form == "directory":
        source = str(tmp_path / "books")
    elif form == "glob":
        source = str(tmp_path / "books" / "**" / "*.txt")
    else:
        source = str(tmp_path / "books" / "all.manifest")
        Path(source).write_text("".join(f"{name}\n" for name in sorted(expected)))
    out = tmp_path / "data" / "books.bin"
    code, summary, _ = _run(capsys, "--out", str(out), "--inputs", source)
    assert code == 0
    direct, prepared = load_corpus(source), load_corpus(out)
    assert summary["documents"] == len(expected) and summary["skipped"] == 0
    assert summary["train_documents"] == len(prepared.train_docs) and summary["bytes"] == out.stat().st_size
    assert summary["validation_documents"] == len(prepared.val_docs) > 0
    assert summary["index"] == str(index_path(out))
    for split in ("train", "val"):  # the same bytes, the same documents, the same split
        assert getattr(direct, split).numpy().tobytes() == getattr(prepared, split).numpy().tobytes()
        d, p = getattr(direct, f"{split}_docs"), getattr(prepared, f"{split}_docs")
        assert d.names == p.names and np.array_equal(d.offsets, p.offsets)
    assert _docs_of(prepared) == expected
    assert mapping_of(prepared.train) == out and mapping_of(prepared.val) == out  # memory-mapped, not read
    assert sorted(p.name for p in out.parent.iterdir()) == ["books.bin", "books.bin.index.json"]  # no temp files
    again = load_corpus(index_path(out))  # the index itself also names the collection
    assert again.val_docs.names == prepared.val_docs.names


def test_separator_several_inputs_and_min_bytes(tmp_path):
    expected = _tree(tmp_path / "books")
    (tmp_path / "extra.txt").write_bytes(b"one more document, long enough to be kept " * 8)
    (tmp_path / "tiny.txt").write_bytes(b"short")
    out = tmp_path / "c.bin"
    summary = build_collection(out, [FileSource(tmp_path / "books"), FileSource(tmp_path / "extra.txt"),
                                     FileSource(tmp_path / "tiny.txt")],
                               separator=parse_separator(r"\n\x0c\n"), min_bytes=100, progress=False)
    assert summary["skipped"] == 1 and summary["documents"] == len(expected) + 1
    corpus = load_corpus(out)
    docs = _docs_of(corpus)
    names = {f"{(tmp_path / 'books').as_posix()}/{n}" for n in expected} | {(tmp_path / "extra.txt").as_posix()}
    assert set(docs) == names  # several inputs: names are the paths as reached from the inputs
    for name, body in expected.items():
        assert docs[f"{(tmp_path / 'books').as_posix()}/{name}"] == body + b"\n\x0c\n"
    assert read_index(index_path(out))["separator"] == "\n\x0c\n"


def test_progress_bar_on_large_inputs_only(tmp_path, capsys, monkeypatch):
    _tree(tmp_path / "books")
    assert main(["--out", str(tmp_path / "a.bin"), "--inputs", str(tmp_path / "books")]) == 0
    assert capsys.readouterr().err == ""  # small: no bar
    monkeypatch.setattr(prepare, "PROGRESS_MIN_BYTES", 1)
    assert main(["--out", str(tmp_path / "b.bin"), "--inputs", str(tmp_path / "books")]) == 0
    err = capsys.readouterr().err
    assert "b.bin" in err and "100%" in err


def test_a_failed_build_leaves_nothing_and_keeps_the_old_collection(tmp_path, monkeypatch):
    _tree(tmp_path / "books")
    out = tmp_path / "c.bin"
    build_collection(out, [FileSource(tmp_path / "books")], progress=False)
    before = (out.read_bytes(), index_path(out).read_text())
    source = FileSource(tmp_path / "books")
    source.files[3].path.write_bytes(b"changed after listing")  # the listing's size no longer holds
    with pytest.raises(DataError, match="changed while it was read"):
        build_collection(out, [source], progress=False)
    assert (out.read_bytes(), index_path(out).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["books", "c.bin", "c.bin.index.json"]


def test_index_and_bytes_must_belong_together(tmp_path):
    _tree(tmp_path / "books")
    out = tmp_path / "c.bin"
    build_collection(out, [FileSource(tmp_path / "books")], progress=False)
    with open(out, "ab") as fh:
        fh.write(b"more")
    with pytest.raises(DataError, match="do not belong together"):
        load_corpus(out)
    index_path(out).write_text('{"format": "hope-documents", "version": 1, "offsets": [0]}')
    with pytest.raises(DataError, match="damaged"):
        load_corpus(out)


@pytest.mark.parametrize("argv, fragment", [
    (["--inputs", "{tmp}/none"], "input not found"),
    (["--inputs", "{tmp}/one"], "at least two documents"),
    (["--inputs", "{tmp}/one", "--url", "http://127.0.0.1:9/x"], "give one or the other"),
    (["--hf", "{tmp}/rows.jsonl", "--text_field", "body"], "no field 'body'"),
    (["--hf", "{tmp}/none.parquet"], "dataset not found"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv, fragment):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "only.txt").write_text("a single document\n")
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    code, _, err = _run(capsys, "--out", str(tmp_path / "out.bin"), *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "out.bin").exists()


# ----------------------------------------------------------------------------- rows of Hugging Face formats

ROWS = [{"text": f"row {i}: " + "lorem ipsum " * (5 + i), "id": i} for i in range(20)]
ROWS[4]["text"] = ""  # no document
ROWS[7]["text"] = None  # no document
ROWS[9]["text"] = "unicode: héllo wörld ✓ " * 3


def _expected_rows(label: str) -> dict[str, bytes]:
    return {f"{label}:{i}": r["text"].encode() for i, r in enumerate(ROWS) if r["text"]}


def test_jsonl_rows_become_documents(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n", encoding="utf-8")
    code, summary, _ = _run(capsys, "--out", str(tmp_path / "rows.bin"), "--hf", str(rows))
    assert code == 0 and summary["documents"] == 18 and summary["skipped"] == 2
    assert _docs_of(load_corpus(tmp_path / "rows.bin")) == _expected_rows("rows.jsonl")


def _pyarrow():
    return pytest.importorskip("pyarrow", reason="the optional package pyarrow is not installed")


def test_parquet_rows_become_documents(tmp_path, capsys):
    pa = _pyarrow()
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "rows.parquet", row_group_size=6)
    code, summary, _ = _run(capsys, "--out", str(tmp_path / "rows.bin"), "--hf", str(tmp_path / "rows.parquet"))
    assert code == 0 and summary["documents"] == 18
    assert _docs_of(load_corpus(tmp_path / "rows.bin")) == _expected_rows("rows.parquet")


def _save_to_disk(folder: Path, rows: list[dict]) -> None:
    """A dataset folder as `datasets.Dataset.save_to_disk` writes it (the library itself when installed)."""
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        datasets.Dataset.from_list(rows).save_to_disk(str(folder))
        return
    import pyarrow as pa

    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=7):
                writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_fingerprint": "0", "_split": None}))
    (folder / "dataset_info.json").write_text("{}")


def test_a_hugging_face_dataset_folder_becomes_documents(tmp_path, capsys):
    _pyarrow()
    _save_to_disk(tmp_path / "ds", ROWS)
    code, summary, _ = _run(capsys, "--out", str(tmp_path / "ds.bin"), "--hf", str(tmp_path / "ds"))
    assert code == 0 and summary["documents"] == 18
    docs = _docs_of(load_corpus(tmp_path / "ds.bin"))
    assert sorted(docs.values()) == sorted(_expected_rows("x").values())
    assert all(name.endswith(".arrow:" + name.rsplit(":", 1)[1]) for name in docs)


def test_without_pyarrow_parquet_is_a_clear_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "rows.parquet").write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    code, _, err = _run(capsys, "--out", str(tmp_path / "rows.bin"), "--hf", str(tmp_path / "rows.parquet"))
    assert code == 2 and "needs the optional package pyarrow: pip install pyarrow" in err and err.count("\n") == 1
    assert TextSource(tmp_path / "rows.parquet").label.endswith("rows.parquet")  # listing files needs no pyarrow
