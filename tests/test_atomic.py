"""One atomic write (hope.atomic) with one permission policy, used by every module that writes a file: a failed
write leaves the old file (or none) and no temporary file; a written file has the mode `open()` would give it."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import torch

import hope
from hope.atomic import atomic_open, atomic_path, file_mode, write_text
from hope.checkpoint import save_checkpoint
from hope.config import Config
from hope.data.download import fetch
from hope.data.prepare import FileSource, build_collection
from hope.export import export_model
from hope.models import build_model
from hope.report.writers import write_csv, write_json
from hope.runs import write_run_config

UMASK = 0o027  # not the usual 022, so a fixed 0644 and the umask's mode differ


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture
def umask():
    old = os.umask(UMASK)
    yield UMASK
    os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed halfway")
    assert target.read_text() == "old" and leftovers(tmp_path, {"a.txt"}) == []
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new" / "b.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert leftovers(tmp_path / "new", set()) == []  # the target never appears


def test_the_mode_is_what_open_would_give(tmp_path, umask):
    with open(tmp_path / "plain.txt", "w") as handle:  # what the policy copies
        handle.write("x")
    assert mode(write_text(tmp_path / "atomic.txt", "x")) == mode(tmp_path / "plain.txt") == 0o666 & ~umask
    for name in ("plain.txt", "atomic.txt"):  # a replaced file keeps the mode its owner gave it, as with open()
        os.chmod(tmp_path / name, 0o600)
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("y")
    assert mode(write_text(tmp_path / "atomic.txt", "y")) == mode(tmp_path / "plain.txt") == 0o600
    assert file_mode(tmp_path / "missing") == 0o666 & ~umask


def _tiny_model() -> tuple[torch.nn.Module, Config]:
    cfg = Config(dim=32, depth=1, num_heads=2, max_len=32, seq_len=32, attn_window=16, memory_capacity=8, top_k=2)
    return build_model(cfg), cfg


def test_every_writer_follows_the_one_policy(tmp_path, umask):
    """Checkpoints, reports, run configs, downloads, prepared collections and exports: new files get the umask's
    mode, replaced files keep theirs."""
    source = tmp_path / "source.txt"
    source.write_text("corpus " * 10)
    books = tmp_path / "books"
    books.mkdir()
    for name in ("a.txt", "b.txt"):
        (books / name).write_text(f"document {name} " * 10)
    model, cfg = _tiny_model()
    writers = {
        "ck.pt": lambda p: save_checkpoint(p, {"model": {}, "config": {}}),
        "r.json": lambda p: write_json(p, {"a": 1}),
        "r.csv": lambda p: write_csv(p, [{"a": 1}], ["a"]),
        "run.config.yaml": lambda p: write_run_config(p, cfg),
        "data.txt": lambda p: fetch(str(source), p),
        "export/model.safetensors": lambda p: export_model(model, cfg, p.parent),
        "collection.bin": lambda p: build_collection(p, [FileSource(books)], progress=False),
    }
    out = tmp_path / "out"
    for name, write in writers.items():
        path = out / name
        write(path)
        assert mode(path) == 0o666 & ~umask, name
        os.chmod(path, 0o600)
        write(path)
        assert mode(path) == 0o600, name
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_no_other_module_renames_files_itself():
    """The atomic write has one home: nothing else in the package renames temporary files or sets modes."""
    root = Path(hope.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "atomic.py" and re.search(r"os\.(replace|rename|chmod)\(", p.read_text())]
    assert offenders == []
