"""Atomic file writes: the one way every module of `hope` writes a file that must never be seen half-written.

The bytes go to a temporary file in the target's folder (same filesystem, so the rename is atomic on POSIX and
Windows), are fsynced (otherwise a power cut can leave the *renamed* file empty), get the mode `open(path, "w")`
would have left, and then replace the target with `os.replace`. On an exception, Ctrl-C included, the temporary
file is deleted and the target is untouched. Parent folders are created.

Used by the reports (`hope.report.writers`), checkpoints (`hope.checkpoint`), downloads (`hope.data.download`),
prepared collections (`hope.data.prepare`), exports (`hope.export`) and a run's config (`hope.runs`). It imports
nothing from `hope`, so any module can.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def file_mode(path: str | os.PathLike[str]) -> int:
    """The mode `open(path, "w")` leaves `path` with: an existing file's own mode, else 0o666 under the umask
    (0644 under umask 022). The one permission policy of every write: mkstemp's 0600 would make a checkpoint,
    report or corpus unreadable to a teammate, and a replaced file keeps what its owner chose."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_mode & 0o7777
    return 0o666 & ~_umask()


def _umask() -> int:
    """This process's umask: read from /proc on Linux; elsewhere set and put straight back (a thread creating a
    file in between would get mode 0666, hence /proc first)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows flushes only handles open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (torch.save, safetensors); on a clean
    exit its file is fsynced, given `file_mode(path)` and renamed over `path`; on an exception it is deleted.
    The writer must leave a file there."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """`open(path, mode)` that replaces `path` only on a clean exit (`atomic_path`); `mode` is "w" (text, with
    newline="" so the csv module controls line endings) or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        if mode == "wb":
            with open(tmp, "wb") as handle:
                yield handle
        else:
            with open(tmp, "w", encoding=encoding, newline="") as handle:
                yield handle


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


__all__ = ["file_mode", "atomic_path", "atomic_open", "write_text"]
