"""Process-level runtime: device choice, seeding, autocast, and torchrun/DDP setup.

Kept out of the CLI scripts so that tests and library calls get the same behaviour.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from hope.config import check_device
from hope.errors import HopeError


def resolve_device(device: str = "auto", cuda_device: int = 0) -> torch.device:
    """`auto` -> cuda:<cuda_device> when available else cpu; `cuda` -> cuda:<cuda_device>; `cuda:i` as given.

    Anything else (`hope.config.check_device`: Apple MPS is refused), or a CUDA device this machine does not have,
    raises a one-line HopeError. Resolving a CUDA device also allows TF32 matmuls (`allow_tf32`).
    """
    check_device(device, "--device")
    device = str(device).strip().lower()
    if device == "auto":
        return allow_tf32(torch.device(f"cuda:{cuda_device}")) if torch.cuda.is_available() else torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HopeError(f"--device {device} requested but this PyTorch has no CUDA device (use --device auto or cpu)")
        index = int(device.split(":")[1]) if ":" in device else cuda_device
        if index >= torch.cuda.device_count():
            raise HopeError(f"--device cuda:{index} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return allow_tf32(torch.device(f"cuda:{index}"))
    return torch.device(device)


def allow_tf32(device: torch.device) -> torch.device:
    """Let float32 matmuls on CUDA run on TF32 tensor cores (Ampere and later); returns `device`.

    Process-wide and CUDA-only: it sets `torch.backends.cuda.matmul.allow_tf32` (what
    `torch.set_float32_matmul_precision("high")` would set for cuBLAS), not the global precision, because that
    one also switches CPU (oneDNN) matmuls to TF32 and CPU results must stay exactly as they were. TF32 keeps
    fp32's range with a 10-bit mantissa (~1e-3 relative error per product), the trade every fp32 GPU trainer
    makes; convolutions (cuDNN) already default to TF32. Under `--amp bf16` the matmuls run in bf16 anyway, so
    this matters for fp32 runs and the matmuls autocast leaves in fp32. A no-op for
    other devices.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the legacy flag: mixing it with fp32_precision raises
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, enabled: bool, dtype_name: str = "bf16") -> contextlib.AbstractContextManager:
    """Autocast for the model's forward; a no-op when disabled (fp32 on CPU unless asked)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(dtype_name))


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def print0(*args, info: DistInfo | None = None, **kwargs) -> None:
    """print on rank 0 only."""
    if info is None or info.is_main:
        print(*args, **kwargs)
