"""Prepared collections: many documents -> one byte file plus its document index, written atomically.

`build_collection(out, sources)` writes `out` (the documents' bytes, training documents first, then validation
ones, each followed by an optional separator) and `out.index.json` (`hope.data.corpus.read_index`), both through
temporary files renamed into place, so an interrupted build leaves no partial corpus. The split is the
collection rule of `hope.data.corpus.validation_documents`, decided before any byte is written; documents are
streamed (a chunk at a time, a progress bar on large inputs), so no input is ever held in memory whole.
`--data out` then memory-maps the result (nanoGPT's `train.bin`/`val.bin`, in one file with an index).

Sources: files (`FileSource`: any file, directory, glob or manifest, as `--data` takes them) and text rows
(`TextSource`: the text field of a JSON Lines file, a parquet file or a local Hugging Face dataset folder; one
row is one document). Parquet and dataset folders need the optional package pyarrow; JSON Lines needs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from hope.atomic import atomic_path
from hope.data.corpus import (INDEX_FORMAT, MANIFEST_SUFFIX, DataError, DocumentFile, has_glob, index_path,
                              list_documents, validation_documents)

PROGRESS_MIN_BYTES = 64 << 20  # inputs at least this large show a progress bar
CHUNK = 1 << 20


class DocumentSource(Protocol):
    """Documents in a fixed order, read in two passes: `listing` (names and sizes), then `contents`."""

    label: str

    def listing(self) -> list[tuple[str, int]]:
        """(name, size in bytes) of every document, in order."""

    def contents(self) -> Iterator[Iterator[bytes]]:
        """Every document's bytes as chunks, in the order of `listing` (a document may be left unread)."""


class FileSource:
    """Files as documents: `files` (DocumentFile) or what `input` names (a file, directory, glob or manifest)."""

    def __init__(self, input: str | Path | None = None, files: Sequence[DocumentFile] | None = None):
        if (input is None) == (files is None):
            raise ValueError("give an input path or a list of files")
        if files is None:
            path = Path(str(input)).expanduser()
            if path.is_file() and not path.name.endswith(MANIFEST_SUFFIX):
                files = [DocumentFile(name=path.name, path=path, size=path.stat().st_size)]
            elif path.exists() or has_glob(str(input)):
                files = list_documents(input)
            else:
                raise DataError(f"input not found: {input}")
        self.label = str(input) if input is not None else "files"
        self.files = list(files)

    def listing(self) -> list[tuple[str, int]]:
        return [(f.name, f.size) for f in self.files]

    def contents(self) -> Iterator[Iterator[bytes]]:
        for f in self.files:
            yield _read_file(f.path)

    def full_name(self, i: int) -> str:  # with several sources: the path as reached from the inputs
        return self.files[i].path.as_posix()


def _read_file(path: Path) -> Iterator[bytes]:
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------- text rows (Hugging Face formats)


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DataError(f"reading {what} needs the optional package pyarrow: pip install pyarrow "
                        "(JSON Lines files need nothing)") from None
    return pyarrow


class TextSource:
    """The `field` of every row of a JSON Lines file (.jsonl, .json), a parquet file, or a local Hugging Face
    dataset folder (`save_to_disk`: state.json and its .arrow files, or dataset_dict.json and one such folder per
    split; else every .parquet / .jsonl / .json file below it): one row, one document, its text in UTF-8.
    Rows whose text is missing (null) or empty are no document. Document names: `FILE:ROW`."""

    def __init__(self, input: str | Path, field: str = "text"):
        self.label, self.field = str(input), field
        root = Path(str(input)).expanduser()
        if root.is_dir():
            self.parts = [(p.relative_to(root).as_posix(), p) for p in _dataset_files(root)]
            if not self.parts:
                raise DataError(f"{input}: no dataset files (state.json with .arrow files, .parquet, .jsonl or .json)")
        elif root.is_file():
            self.parts = [(root.name, root)]
        else:
            raise DataError(f"dataset not found: {input}")
        for _, path in self.parts:
            if path.suffix not in (".arrow", ".parquet", ".jsonl", ".json"):
                raise DataError(f"{path}: not a dataset file (.jsonl, .json, .parquet or a dataset folder's .arrow)")

    def _texts(self) -> Iterator[tuple[str, str | None]]:
        for rel, path in self.parts:
            reader = {".arrow": _arrow_texts, ".parquet": _parquet_texts}.get(path.suffix, _jsonl_texts)
            for row, text in enumerate(reader(path, self.field)):
                yield f"{rel}:{row}", text

    def listing(self) -> list[tuple[str, int]]:
        return [(name, len(_encode(text))) for name, text in self._texts()]

    def contents(self) -> Iterator[Iterator[bytes]]:
        for _, text in self._texts():
            yield iter((_encode(text),))


def _encode(text: Any) -> bytes:
    return text.encode("utf-8", "replace") if isinstance(text, str) else b""


def _dataset_files(root: Path) -> list[Path]:
    if (root / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk: one dataset folder per split
        try:
            splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(f"{root / 'dataset_dict.json'} is damaged (no list of splits)") from None
        return [p for split in splits for p in _dataset_files(root / split)]
    if (root / "state.json").is_file():  # Dataset.save_to_disk
        try:
            files = [root / f["filename"] for f in json.loads((root / "state.json").read_text())["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(f"{root / 'state.json'} is damaged (no _data_files)") from None
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{root}: state.json lists missing files: {', '.join(missing)}")
        return files
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".parquet", ".jsonl", ".json")
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _jsonl_texts(path: Path, field: str) -> Iterator[str | None]:
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise DataError(f"{path}, line {number}: not JSON (a JSON Lines file holds one object per line)"
                                    ) from None
                if not isinstance(row, dict) or field not in row:
                    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise DataError(f"{path}, line {number}: no field '{field}' (has {keys}; choose one with "
                                    "--text_field)")
                yield row[field]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (a JSON Lines file is UTF-8)") from None


def _check_field(path: Path, names: Sequence[str], field: str) -> None:
    if field not in names:
        raise DataError(f"{path}: no field '{field}' (has {list(names)}; choose one with --text_field)")


def _parquet_texts(path: Path, field: str) -> Iterator[str | None]:
    pa = _pyarrow("parquet files")
    try:
        parquet = pa.parquet.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    _check_field(path, parquet.schema_arrow.names, field)
    for batch in parquet.iter_batches(batch_size=1024, columns=[field]):
        yield from batch.column(0).to_pylist()


def _arrow_texts(path: Path, field: str) -> Iterator[str | None]:
    pa = _pyarrow("Hugging Face dataset folders")
    try:
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)  # what datasets' save_to_disk writes
            except pa.ArrowInvalid:
                reader = pa.ipc.open_file(source)
            _check_field(path, reader.schema.names, field)
            column = reader.schema.get_field_index(field)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) \
                if isinstance(reader, pa.ipc.RecordBatchFileReader) else reader
            for batch in batches:
                yield from batch.column(column).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Arrow file ({exc})") from None


# ----------------------------------------------------------------------------- the build


def build_collection(out: str | Path, sources: Sequence[DocumentSource], separator: bytes = b"",
                     min_bytes: int = 1, progress: bool = True) -> dict[str, Any]:
    """Write the prepared collection `out` (+ `out.index.json`) from `sources`; returns a summary {path, index,
    bytes, sha256, documents, train_documents, validation_documents, validation_bytes, skipped}.

    Documents shorter than `min_bytes` (and empty ones) are skipped. With several sources a document's name is
    its path as reached from the inputs (`FILE:ROW` for rows), so names stay distinct."""
    out = Path(out)
    if not sources:
        raise DataError("no inputs: give files, folders, globs or manifests (--inputs) or datasets (--hf)")
    names, sizes, keep = [], [], []  # keep[s][i]: position in names of document i of source s, or -1
    for source in sources:
        kept = []
        for i, (name, size) in enumerate(source.listing()):
            if size < max(min_bytes, 1):
                kept.append(-1)
                continue
            full = name if len(sources) == 1 else (
                source.full_name(i) if hasattr(source, "full_name") else f"{source.label}/{name}")
            kept.append(len(names))
            names.append(full)
            sizes.append(size)
        keep.append(kept)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two documents are named {dup} (list each file once)")
    skipped = sum(k.count(-1) for k in keep)
    if len(names) < 2:
        raise DataError(f"a collection needs at least two documents of >= {max(min_bytes, 1)} bytes (one goes to "
                        f"validation), found {len(names)}")
    held = validation_documents(names, sizes)
    order = [i for i in range(len(names)) if i not in held] + [i for i in range(len(names)) if i in held]
    stored = np.asarray([sizes[i] + len(separator) for i in order], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(stored)]).astype(np.int64)
    total = int(offsets[-1])

    digest = hashlib.sha256()
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=out.name, file=sys.stderr,
               disable=not progress or total < PROGRESS_MIN_BYTES)
    # hope.atomic: both files appear only when both are written, the bytes first, then the index that describes
    # them (the inner context renames first); the validation documents wait in a scratch file beside them.
    try:
        with atomic_path(index_path(out)) as index_tmp, atomic_path(out) as main_tmp:
            with open(main_tmp, "wb") as main, tempfile.TemporaryFile(dir=out.parent) as val:
                for source, kept in zip(sources, keep):
                    for position, chunks in zip(kept, source.contents()):
                        if position < 0:
                            continue
                        sink, got = (val if position in held else main), 0
                        for chunk in chunks:
                            sink.write(chunk)
                            got += len(chunk)
                            if sink is main:
                                digest.update(chunk)
                            bar.update(len(chunk))
                        if got != sizes[position]:
                            raise DataError(f"{names[position]} changed while it was read ({got} bytes, "
                                            f"{sizes[position]} listed); nothing written")
                        sink.write(separator)
                        if sink is main:
                            digest.update(separator)
                        bar.update(len(separator))
                val.seek(0)
                while chunk := val.read(CHUNK):  # the validation documents follow the training ones
                    main.write(chunk)
                    digest.update(chunk)
            if os.path.getsize(main_tmp) != total:
                raise DataError(f"the inputs changed while {out} was written; nothing written")
            k = len(names) - len(held)
            index = {"format": INDEX_FORMAT, "version": 1, "data": out.name, "bytes": total,
                     "sha256": digest.hexdigest(), "separator": separator.decode("latin-1"), "train_documents": k,
                     "offsets": offsets.tolist(), "names": [names[i] for i in order]}
            index_tmp.write_text(json.dumps(index, separators=(",", ":")), encoding="utf-8")
    finally:
        bar.close()
    return {"path": str(out), "index": str(index_path(out)), "bytes": total, "sha256": index["sha256"],
            "documents": len(names), "train_documents": k, "validation_documents": len(held),
            "validation_bytes": total - int(offsets[k]), "skipped": skipped}


def parse_separator(text: str) -> bytes:
    r"""'\n\x0c\n' (Python escapes) -> the bytes written after every document (UTF-8)."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("utf-8")
    except UnicodeError:
        raise DataError(f"--separator {text!r}: not a valid escaped string") from None


__all__ = ["DocumentSource", "FileSource", "TextSource", "build_collection", "parse_separator", "PROGRESS_MIN_BYTES"]
