"""Corpora as byte tensors: a file, a collection of documents, the embedded synthetic default; the split.

Every command takes `--data PATH`; without it the "quick check" mode of the manual uses a synthetic corpus that
is generated from a seed (no download, no file), so a fresh install runs end to end offline. `PATH` is one of:

- a file: memory-mapped (`hope.data.mapped`), never read whole; split first 90% train, last 10% validation;
- a prepared collection: a byte file written by `hope-prepare-data` with its document index beside it
  (`FILE.index.json`, see `read_index`); memory-mapped, split by document as the index records;
- a directory (every non-hidden file below it, recursively), a glob (`'books/**/*.txt'`) or a manifest
  (`NAME.manifest`: one path per line, relative to the manifest's folder, `#` comments and blank lines ignored):
  each file is one document, read into memory once (prepare a collection for corpora larger than memory).

Documents stay whole and their boundaries are kept (`Documents`, offsets within each split). The split of a
collection is by document (`validation_documents`): no validation document is ever seen in training.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hope.data.mapped import map_file
from hope.errors import HopeError

VAL_FRACTION = 0.1  # standard split: first 90% train, last 10% validation (of bytes, or of a collection's bytes)
MANIFEST_SUFFIX = ".manifest"  # a --data file with this suffix lists the documents' paths
INDEX_SUFFIX = ".index.json"  # FILE + this suffix: the document index of a prepared collection FILE
INDEX_FORMAT = "hope-documents"
_GLOB_CHARS = "*?["


class DataError(HopeError):
    """A missing, empty or too-short data file, or a collection that cannot be read."""


def load_bytes(path: str | Path) -> torch.Tensor:
    """Any file (text or binary) -> uint8 tensor (N,), memory-mapped: nothing is read until sliced and used."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path} (download one with hope-prepare-data, or omit --data for random data)")
    if path.is_dir():
        raise DataError(f"--data must be a file, got a directory: {path}")
    try:
        if path.is_file() and path.stat().st_size > 0:
            try:
                return map_file(path)
            except (OSError, ValueError):  # a file system that cannot map files: read it instead
                pass
        raw = path.read_bytes()  # also a pipe or process substitution, which has no size to map
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    if not raw:
        raise DataError(f"data file is empty: {path}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


_SYLLABLES = ["ka", "ri", "to", "me", "su", "la", "no", "vi", "de", "po", "ga", "shi", "ren", "tho", "qu", "ax",
              "el", "or", "in", "um", "bre", "sta", "fo", "li"]


def synthetic_corpus(n_bytes: int = 400_000, seed: int = 0) -> torch.Tensor:
    """The embedded default corpus: seeded pseudo-text with learnable structure.

    A fixed lexicon of pseudo-words drawn with Zipfian frequencies, a first-order word grammar (each word has a
    few likely successors), sentences and line breaks. Uniform random bytes would be unlearnable, which makes a
    poor smoke test; this text has short- and mid-range regularities a small model picks up in minutes.
    """
    rng = random.Random(seed)
    n_words = 400
    lexicon = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n_words)]
    zipf = [1.0 / (rank + 1) for rank in range(n_words)]
    successors = [rng.choices(range(n_words), weights=zipf, k=4) for _ in range(n_words)]
    out: list[str] = []
    size, word, sentence_len = 0, 0, 0
    while size < n_bytes:
        if rng.random() < 0.75:
            word = rng.choice(successors[word])
        else:
            word = rng.choices(range(n_words), weights=zipf)[0]
        token = lexicon[word]
        sentence_len += 1
        if sentence_len == 1:
            token = token.capitalize()
        if sentence_len > 4 and rng.random() < 0.2:
            token += ("." if rng.random() < 0.7 else "?") + ("\n" if rng.random() < 0.3 else " ")
            sentence_len = 0
        else:
            token += " "
        out.append(token)
        size += len(token)
    return torch.frombuffer(bytearray("".join(out).encode()[:n_bytes]), dtype=torch.uint8).clone()


# ----------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Documents:
    """The documents of one split: document i is bytes `offsets[i]:offsets[i + 1]` of the split's tensor."""

    offsets: np.ndarray  # (n + 1,) int64, offsets[0] == 0, offsets[-1] == the split's length
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class DocumentFile:
    """One document of a collection on disk: its name (what the split hashes) and its file."""

    name: str
    path: Path
    size: int


def validation_documents(names: Sequence[str], sizes: Sequence[int]) -> set[int]:
    """Which documents are validation: the first in the order of sha256(name) whose sizes add up to at most
    `VAL_FRACTION` of all bytes (documents that would overflow it are passed over); if none fits, the smallest.

    A function of the names and sizes only (not of the seed, the machine's file order or the input order), so
    the same collection always splits the same way, wherever it was listed or prepared."""
    if len(names) != len(sizes):
        raise ValueError("names and sizes differ in length")
    budget = int(sum(sizes) * VAL_FRACTION)
    order = sorted(range(len(names)), key=lambda i: (hashlib.sha256(names[i].encode()).digest(), i))
    chosen, used = set(), 0
    for i in order:
        if used + sizes[i] <= budget:
            chosen.add(i)
            used += sizes[i]
    if not chosen and len(names) > 1:
        chosen.add(min(order, key=lambda i: sizes[i]))  # stable: min keeps the first of equal sizes in hash order
    return chosen


def has_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _document_file(name: str, path: Path) -> DocumentFile:
    return DocumentFile(name=name, path=path, size=path.stat().st_size)


def list_directory(root: str | Path) -> list[DocumentFile]:
    """Every non-hidden regular file below `root`, recursively, in path order; names relative to `root`."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in filenames:
            path = Path(dirpath) / fname
            if not fname.startswith(".") and path.is_file():
                out.append(_document_file(path.relative_to(root).as_posix(), path))
    return sorted(out, key=lambda d: d.name)


def list_glob(pattern: str) -> list[DocumentFile]:
    """The files matching `pattern` (`**` matches any folders), in path order; names relative to the pattern's
    folder part before its first wildcard."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if has_glob(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    return sorted((_document_file(p.relative_to(root.expanduser()).as_posix(), p) for p in matches if p.is_file()),
                  key=lambda d: d.name)


def list_manifest(manifest: str | Path) -> list[DocumentFile]:
    """The files a manifest lists: one path per line (relative to the manifest's folder unless absolute), blank
    lines and lines starting with '#' ignored. Names are the paths as written."""
    manifest = Path(manifest)
    out, seen = [], set()
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else manifest.parent / path
        if not path.is_file():
            raise DataError(f"{manifest}, line {number}: {entry} is not a file (a manifest lists one file path per line)")
        if entry in seen:
            raise DataError(f"{manifest}, line {number}: {entry} is listed twice")
        seen.add(entry)
        out.append(_document_file(Path(entry).as_posix(), path))
    return out


def list_documents(source: str | Path) -> list[DocumentFile]:
    """The documents of a directory, a glob or a manifest (the `--data` forms that name many files), in order;
    DataError when `source` is none of these or names no file."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        docs, what = list_directory(path), f"directory {text}"
    elif path.is_file() and path.name.endswith(MANIFEST_SUFFIX):
        docs, what = list_manifest(path), f"manifest {text}"
    elif not path.exists() and has_glob(text):
        docs, what = list_glob(text), f"pattern {text}"
    else:
        raise DataError(f"{text} is not a directory, a glob or a {MANIFEST_SUFFIX} file")
    if not docs:
        raise DataError(f"{what} names no file")
    return docs


def index_path(data_file: str | Path) -> Path:
    """Where the document index of the prepared collection `data_file` lives."""
    return Path(str(data_file) + INDEX_SUFFIX)


def read_index(index_file: str | Path) -> dict:
    """A prepared collection's index, checked. JSON: {"format": "hope-documents", "version": 1, "data": the byte
    file's name (beside the index), "bytes": its size, "sha256": of its bytes, "separator": appended to every
    document (latin-1 string), "train_documents": k, "offsets": n + 1 byte offsets, "names": n document names}.
    Documents 0..k-1 are the training split, k..n-1 the validation split, in that order in the byte file."""
    index_file = Path(index_file)
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the document index {index_file}: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or index.get("version") != 1:
        raise DataError(f"{index_file} is not a document index of hope-prepare-data (format {INDEX_FORMAT}, version 1)")
    try:
        offsets, names, k, size = index["offsets"], index["names"], int(index["train_documents"]), int(index["bytes"])
        ok = (len(offsets) == len(names) + 1 and offsets[0] == 0 and offsets[-1] == size and 0 < k < len(names)
              and all(a <= b for a, b in zip(offsets, offsets[1:])) and isinstance(index["data"], str))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"the document index {index_file} is damaged (rebuild it with hope-prepare-data)")
    return index


def _prepared_corpus(index_file: Path, name: str) -> Corpus:
    index = read_index(index_file)
    data_file = index_file.parent / index["data"]
    if not data_file.is_file():
        raise DataError(f"{index_file}: its byte file {data_file} is missing")
    if data_file.stat().st_size != index["bytes"]:
        raise DataError(f"{data_file} has {data_file.stat().st_size} bytes, its index {index_file} says "
                        f"{index['bytes']}: they do not belong together (rebuild with hope-prepare-data)")
    data = load_bytes(data_file)
    offsets = np.asarray(index["offsets"], dtype=np.int64)
    names, k = tuple(index["names"]), index["train_documents"]
    cut = int(offsets[k])
    return Corpus(train=data[:cut], val=data[cut:], name=name,
                  train_docs=Documents(offsets[:k + 1], names[:k]),
                  val_docs=Documents(offsets[k:] - cut, names[k:]))


def split_order(docs: Sequence[DocumentFile]) -> tuple[list[int], list[int]]:
    """(training, validation) document positions, each in the given order."""
    held = validation_documents([d.name for d in docs], [d.size for d in docs])
    return [i for i in range(len(docs)) if i not in held], [i for i in range(len(docs)) if i in held]


def _collection_corpus(docs: list[DocumentFile], name: str) -> Corpus:
    """Read the documents into one buffer, training documents first, then validation ones."""
    docs = [d for d in docs if d.size > 0]
    if len(docs) < 2:
        raise DataError(f"{name}: a collection needs at least two non-empty documents (one goes to validation), "
                        f"found {len(docs)}")
    train_ids, val_ids = split_order(docs)
    order = [docs[i] for i in train_ids + val_ids]
    offsets = np.concatenate([[0], np.cumsum([d.size for d in order])]).astype(np.int64)
    data = torch.empty(int(offsets[-1]), dtype=torch.uint8)
    view = memoryview(data.numpy())
    for doc, lo in zip(order, offsets[:-1].tolist()):
        try:
            with open(doc.path, "rb", buffering=0) as fh:
                got = fh.readinto(view[lo:lo + doc.size])
                while got < doc.size:
                    n = fh.readinto(view[lo + got:lo + doc.size])
                    if not n:
                        break
                    got += n
        except OSError as exc:
            raise DataError(f"cannot read {doc.path}: {exc.strerror or exc}") from None
        if got != doc.size:
            raise DataError(f"{doc.path} changed while it was read ({got} of {doc.size} bytes)")
    k, cut = len(train_ids), int(offsets[len(train_ids)])
    names = tuple(d.name for d in order)
    return Corpus(train=data[:cut], val=data[cut:], name=name,
                  train_docs=Documents(offsets[:k + 1], names[:k]),
                  val_docs=Documents(offsets[k:] - cut, names[k:]))


# ----------------------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    """A byte corpus split deterministically: a file's first 90% train, last 10% validation; a collection's
    documents by `validation_documents`. `train_docs` / `val_docs` hold a collection's document boundaries
    (None for a single file or the synthetic corpus: one stream, no boundaries)."""

    train: torch.Tensor  # (N_train,) uint8
    val: torch.Tensor  # (N_val,) uint8
    name: str
    train_docs: Documents | None = field(default=None, kw_only=True)
    val_docs: Documents | None = field(default=None, kw_only=True)

    @classmethod
    def from_bytes(cls, data: torch.Tensor, name: str) -> "Corpus":
        n_train = int(len(data) * (1 - VAL_FRACTION))
        return cls(train=data[:n_train], val=data[n_train:], name=name)

    def check_length(self, window: int) -> None:
        """Both splits must hold at least one window of `window` bytes (seq_len + 1)."""
        for split, tensor in (("train", self.train), ("validation", self.val)):
            if len(tensor) < window:
                raise DataError(
                    f"{self.name}: the {split} split has {len(tensor)} bytes, fewer than seq_len + 1 = {window} "
                    f"(use a longer file or a smaller --seq_len)")


def data_exists(path: str | Path | None) -> bool:
    """Whether `--data path` names something `load_corpus` can open (a file, a directory or a matching glob)."""
    if not path:
        return False
    text = str(path)
    p = Path(text).expanduser()
    return p.exists() or (has_glob(text) and bool(glob.glob(os.path.expanduser(text), recursive=True)))


def load_corpus(path: str | Path | None, seed: int = 0) -> Corpus:
    """`--data PATH` -> Corpus (a file, a prepared collection, a directory, a glob or a manifest: see the module
    docstring); None -> the synthetic default corpus (the seed picks it; a file's split never depends on it)."""
    if path is None:
        return Corpus.from_bytes(synthetic_corpus(seed=seed), name="synthetic (no --data)")
    text = str(path)
    p = Path(text).expanduser()
    if p.is_file() and text.endswith(INDEX_SUFFIX):
        return _prepared_corpus(p, text)
    if p.is_file() and index_path(p).is_file():
        return _prepared_corpus(index_path(p), text)
    if p.is_dir() or (p.is_file() and p.name.endswith(MANIFEST_SUFFIX)) or (not p.exists() and has_glob(text)):
        return _collection_corpus(list_documents(text), text)
    return Corpus.from_bytes(load_bytes(p), name=text)
