"""Files as memory-mapped byte tensors: opened without being read, shared by every process that maps them.

`map_file` maps a whole file copy-on-write (`mmap.ACCESS_COPY`, opened read-only, never written) and returns a
uint8 tensor over the mapping: slicing it reads nothing, a window reads only its own pages, and the pages are
the kernel's page cache, shared by every process that maps the same file (DDP ranks, DataLoader workers), so
no process holds a copy of the corpus and resident memory does not grow with its size. Random access is
advised (`MADV_RANDOM`): training reads scattered windows, and read-ahead around each would only inflate the
resident set.

A tensor over a mapping pickles by reference (`MappedSlice`: path, offset, length): a worker started with spawn
or forkserver maps the file again instead of receiving a copy of its bytes (torch would otherwise move the
whole storage into shared memory). A forked worker inherits the mapping itself.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

# mapping address -> (path, size, token): the live mappings made here. An entry is dropped when its mmap object
# dies (the last tensor over it is freed), so an address never names a mapping that is gone.
_MAPS: dict[int, tuple[str, int, object]] = {}
_LOCK = threading.Lock()


def map_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """The bytes of `path` as a uint8 tensor (N,) over a private read-only mapping (N > 0, else ValueError)."""
    path = os.path.abspath(os.fspath(path))
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise ValueError(f"cannot map an empty file: {path}")
        mm = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)  # the mapping outlives the descriptor
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)
    tensor = torch.frombuffer(mm, dtype=torch.uint8)  # keeps `mm` alive as long as any view of it
    address, token = tensor.data_ptr(), object()
    with _LOCK:
        _MAPS[address] = (path, size, token)
    weakref.finalize(mm, _forget, address, token)
    return tensor


def _forget(address: int, token: object) -> None:
    with _LOCK:
        if address in _MAPS and _MAPS[address][2] is token:
            del _MAPS[address]


def mapped_region(tensor: torch.Tensor) -> tuple[str, int, int] | None:
    """(path, offset, length) when `tensor` is a contiguous uint8 view of a file mapped by `map_file`, else None."""
    if tensor.dtype != torch.uint8 or tensor.dim() != 1 or not tensor.is_contiguous() or tensor.device.type != "cpu":
        return None
    start, length = tensor.data_ptr(), tensor.numel()
    with _LOCK:
        for address, (path, size, _) in _MAPS.items():
            if address <= start and start + length <= address + size:
                return path, start - address, length
    return None


@dataclass(frozen=True)
class MappedSlice:
    """A picklable reference to bytes `offset .. offset + length` of a mapped file; `tensor()` maps it again."""

    path: str
    offset: int
    length: int

    def tensor(self) -> torch.Tensor:
        return map_file(self.path)[self.offset:self.offset + self.length]


def share(tensor: torch.Tensor) -> torch.Tensor | MappedSlice:
    """What to pickle for `tensor`: a `MappedSlice` when it views a mapped file, else the tensor itself."""
    region = mapped_region(tensor)
    return tensor if region is None else MappedSlice(*region)


def unshare(value: torch.Tensor | MappedSlice) -> torch.Tensor:
    """The inverse of `share`, in the receiving process."""
    return value.tensor() if isinstance(value, MappedSlice) else value


def mapping_of(tensor: torch.Tensor) -> Path | None:
    """The file the kernel maps at `tensor`'s first byte in this process (Linux /proc/self/maps), else None.

    For checks and tests: it tells a shared file mapping from a private copy of the bytes."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    ptr = tensor.data_ptr()
    for line in lines:
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= ptr < hi:
            return Path(fields[5]) if len(fields) == 6 and fields[5].startswith("/") else None
    return None


__all__ = ["map_file", "mapped_region", "MappedSlice", "share", "unshare", "mapping_of"]
