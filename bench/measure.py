"""Timing and memory helpers: interleaved repeated timing, peak memory, and the subprocess runner."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, device: torch.device, warmup: int = 1
                ) -> dict[str, dict[str, float]]:
    """Time each function `reps` times, interleaved (A B, B A, A B, ...: alternating order so that drift in the
    machine's load hits both alike), after `warmup` untimed calls each. Returns per name the median wall
    seconds and, on CPU, the median CPU seconds of this process (robust to other jobs on a shared machine).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
            sync(device)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            sync(device)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    out = {}
    for n in names:
        out[n] = {"wall_s": statistics.median(wall[n]), "reps": reps}
        if device.type == "cpu":
            out[n]["cpu_s"] = statistics.median(cpu[n])
    return out


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory, in MiB.

    Linux: VmHWM of /proc/self/status, the peak of this process's own address space. Not ru_maxrss: Linux
    carries a forked child's pre-exec peak (the parent's resident size) into ru_maxrss across execve, so a
    fresh subprocess of a large parent would report the parent's peak. Elsewhere ru_maxrss (KiB on Linux,
    bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """Resident memory now (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def state_bytes(tree: Any) -> int:
    """Bytes held by the tensors of a nested state (dicts, lists, tuples)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(state_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(state_bytes(v) for v in tree)
    return 0


def run_worker(spec: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run one case in a fresh interpreter (`python -m bench.worker SPEC`) and return its JSON result.

    A fresh process is the only way to read a clean peak (ru_maxrss never goes down). Errors come back as
    {"error": message} so one failing case does not stop the suite.
    """
    cmd = [sys.executable, "-m", "bench.worker", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"worker printed no JSON: {proc.stdout[-300:]!r}"}
