"""The benchmark cases. In-process cases time two implementations interleaved; `worker_*` functions run in a
fresh subprocess (see `bench.worker`) and measure peak memory or long generations."""

from __future__ import annotations

import collections
import dataclasses
import gc
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from hope import models
from bench.measure import current_rss_mib, interleaved, peak_rss_mib, run_worker, state_bytes, sync
from hope.config import Config, config_from_dict, config_to_dict, validate
from hope.sampling import sample
from hope.layers.smt import SelfModifyingMemory
from hope.models import build_model, count_params, matched_baseline_config
from hope.ops.memory import box_apply, memory_chunked, memory_reference
from hope.train.guard import masked_step
from hope.train.optim import build_optimizer

PEER_MISSING = "titans-pytorch is not installed (pip install -r bench/requirements.txt): peer row skipped"


# ----------------------------------------------------------------------------------------------- configs


def at_seq(cfg: Config, seq_len: int) -> Config:
    """`cfg` training on `seq_len`-byte sequences, max_len raised to fit."""
    out = dataclasses.replace(cfg, seq_len=seq_len, max_len=max(cfg.max_len, seq_len))
    validate(out)
    return out


def pair(hope_cfg: Config) -> dict[str, Config]:
    """HOPE and its parameter-matched baseline (`hope.models.matched_baseline_config`)."""
    hope_cfg = dataclasses.replace(hope_cfg, model_type="hope")
    return {"hope": hope_cfg, "baseline": matched_baseline_config(hope_cfg)}


def describe(cfg: Config) -> dict[str, Any]:
    return {"model_type": cfg.model_type, "params": count_params(cfg), "dim": cfg.dim, "depth": cfg.depth,
            "num_heads": cfg.num_heads, "ff_mult": cfg.ff_mult, "seq_len": cfg.seq_len, "max_len": cfg.max_len}


# ---------------------------------------------------------------------------------------------- training


def make_train_step(cfg: Config, device: torch.device, seed: int = 0, compile_model: bool = False):
    """One optimiser step (forward + backward + AdamW) on a fixed random batch; returns (step, model)."""
    torch.manual_seed(seed)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.base_momentum, cfg.beta2),
                            weight_decay=cfg.weight_decay)
    data = torch.randint(0, 256, (cfg.batch_size, cfg.seq_len + 1), generator=torch.Generator().manual_seed(seed))
    data = data.to(device)
    forward = models.compile_model(model) if compile_model else model

    def step() -> None:
        _, loss, _ = forward(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, model


def train_case(hope_cfg: Config, seq_len: int, reps: int, device: torch.device, compile_model: bool = False
               ) -> dict[str, Any]:
    """Training throughput of HOPE and the matched baseline at `seq_len`, interleaved in this process."""
    cfgs = pair(at_seq(hope_cfg, seq_len))  # and HOPE with recompute_memory (what its memory saving costs)
    cfgs = {**cfgs, "hope_recompute": dataclasses.replace(cfgs["hope"], recompute_memory=True)}
    steps = {name: make_train_step(cfg, device, compile_model=compile_model)[0] for name, cfg in cfgs.items()}
    times = interleaved(steps, reps, device)
    tokens = cfgs["hope"].batch_size * seq_len
    out: dict[str, Any] = {"seq_len": seq_len, "batch_size": cfgs["hope"].batch_size, "tokens_per_step": tokens,
                           "compiled": compile_model}
    for name, cfg in cfgs.items():
        t = times[name]
        out[name] = {**describe(cfg), "step_s": t["wall_s"], "tokens_per_s": tokens / t["wall_s"]}
        if "cpu_s" in t:
            out[name].update(cpu_step_s=t["cpu_s"], cpu_tokens_per_s=tokens / t["cpu_s"])
    out["ratio"] = out["hope"]["tokens_per_s"] / out["baseline"]["tokens_per_s"]
    if "cpu_s" in times["hope"]:
        out["cpu_ratio"] = out["hope"]["cpu_tokens_per_s"] / out["baseline"]["cpu_tokens_per_s"]
    return out


def worker_train_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of a training step (forward, backward, AdamW step), in a fresh process."""
    cfg, device = config_from_dict(spec["config"]), torch.device(spec["device"])
    step, model = make_train_step(cfg, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_rss_mib()
    step()  # one step: AdamW's state (2 x params, small next to the activations) is allocated in it
    sync(device)
    out = {"model_type": cfg.model_type, "seq_len": cfg.seq_len, "peak_rss_mib": peak_rss_mib(),
           "step_peak_rss_mib": peak_rss_mib() - before}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def train_memory_case(hope_cfg: Config, seq_len: int, device: torch.device, threads: int) -> dict[str, Any]:
    """Peak memory of a training step of HOPE, HOPE with `recompute_memory` and the baseline (a process each)."""
    cfgs = pair(at_seq(hope_cfg, seq_len))
    cfgs = {"hope": cfgs["hope"], "hope_recompute": dataclasses.replace(cfgs["hope"], recompute_memory=True),
            "baseline": cfgs["baseline"]}
    out: dict[str, Any] = {"seq_len": seq_len}
    for name, cfg in cfgs.items():
        out[name] = run_worker({"kind": "train_memory", "config": config_to_dict(cfg), "device": str(device),
                                "threads": threads})
    return out


def compile_case(hope_cfg: Config, seq_len: int, reps: int, device: torch.device) -> dict[str, Any]:
    """`compile: true` for HOPE and the baseline: the first compiled step's wall time (compilation included) and
    the compiled vs eager step, interleaved, on the same weights and batch."""
    out: dict[str, Any] = {"seq_len": seq_len}
    for name, cfg in pair(at_seq(hope_cfg, seq_len)).items():
        eager, _ = make_train_step(cfg, device)
        compiled, _ = make_train_step(cfg, device, compile_model=True)
        sync(device)
        t0 = time.perf_counter()
        compiled()
        sync(device)
        compile_s = time.perf_counter() - t0
        times = interleaved({"eager": eager, "compiled": compiled}, reps, device)
        key = "cpu_s" if "cpu_s" in times["eager"] else "wall_s"
        out[name] = {**describe(cfg), "compile_s": compile_s, "eager_step_s": times["eager"]["wall_s"],
                     "compiled_step_s": times["compiled"]["wall_s"],
                     "speedup": times["eager"][key] / times["compiled"][key], "speedup_clock": key}
    return out


# -------------------------------------------------------------------------------------------- ops per step


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while it is active (forward and the autograd engine's backward alike), by
    op name. On a GPU each dispatched op is at least one kernel launch, so the count predicts launch overhead:
    a step of N ops costs >= N x ~5-10 us of launches whatever the tensor sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.compute = 0  # ops that are not views (view, expand, transpose, detach, ... launch nothing)
        self.by_op: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        name = func.overloadpacket.__name__
        self.compute += not (func.is_view or name == "_unsafe_view")
        self.by_op[name] += 1
        return func(*args, **(kwargs or {}))


def count_step_ops(cfg: Config, seed: int = 0, batch_size: int = 2) -> dict[str, Any]:
    """Aten ops dispatched by one training forward + backward of `cfg` on CPU (the optimiser step is left out: it
    is the same foreach kernels for both models). The count depends on the code path, not on the batch size, so
    it is taken at `batch_size` 2 (batch 1 elides a few size-1 broadcasts: 2% fewer ops; 2, 3 and 8 agree);
    the model is run once outside the counter first (lazy buffers)."""
    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(cfg, batch_size=batch_size)).train()
    data = torch.randint(0, 256, (batch_size, cfg.seq_len + 1), generator=torch.Generator().manual_seed(seed))

    def step() -> None:
        _, loss, _ = model(data[:, :-1], data[:, 1:])
        loss.backward()

    step()  # warm-up: first-call caches (rotary tables, masks) would otherwise count once here
    model.zero_grad(set_to_none=True)
    counter = OpCounter()
    with counter:
        step()
    return {"ops": counter.count, "compute_ops": counter.compute, "top_ops": dict(counter.by_op.most_common(8)),
            "optimizer_ops": count_optimizer_ops(model), "tensors": sum(1 for _ in model.parameters())}


def count_optimizer_ops(model: torch.nn.Module) -> int:
    """Aten ops of one guarded optimiser step as training takes it (`hope.train.guard.masked_step`: AdamW as
    `build_optimizer` makes it on a CPU/CUDA device, the non-finite decision an on-device bool), after a first
    step that creates the optimiser state. Needs the gradients of a backward pass."""
    optimizer = build_optimizer(model.named_parameters(), "adamw", 1e-3, 0.9, 0.1, fused=True)
    ok = torch.ones((), dtype=torch.bool)
    masked_step(optimizer, ok)
    counter = OpCounter()
    with counter:
        masked_step(optimizer, ok)
    return counter.count


def count_generation_ops(cfg: Config, prompt: int = 64, steps: int = 32) -> float:
    """Aten ops dispatched per generated byte (one single-token forward with the carried state), averaged over
    `steps` bytes after a `prompt`-byte prompt: a whole number of chunks of the memories' cycles (their replayed
    partial-chunk tails grow and reset), so the mean is what a long generation pays per byte."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, batch_size=1)).eval()
    with torch.no_grad():
        _, _, state = model(torch.randint(0, 256, (1, prompt), generator=torch.Generator().manual_seed(0)))
        counter = OpCounter()
        with counter:
            for _ in range(steps):
                _, _, state = model(torch.ones(1, 1, dtype=torch.long), state=state)
    return counter.count / steps


def ops_case(hope_cfg: Config, seq_len: int, generation: bool = False) -> dict[str, Any]:
    """Dispatched aten ops per training forward + backward of HOPE and its matched baseline at `seq_len` (and,
    with `generation`, per generated byte)."""
    out: dict[str, Any] = {"seq_len": seq_len}
    for name, cfg in pair(at_seq(hope_cfg, seq_len)).items():
        out[name] = {**describe(cfg), **count_step_ops(cfg)}
        if generation:
            out[name]["generation_ops_per_byte"] = count_generation_ops(cfg)
    out["ratio"] = out["hope"]["ops"] / out["baseline"]["ops"]
    return out


# -------------------------------------------------------------------------------------------- generation


def worker_generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Generate max(marks) bytes with the carried-state loop of `hope.sampling` (one single-token forward per
    byte) and record, at every mark, the time per token since the previous mark, the process's peak and
    current resident memory, and the bytes held by the carried state."""
    cfg, device = config_from_dict(spec["config"]), torch.device(spec["device"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(spec.get("seed", 0))  # sampling stays on the device
    prompt = torch.randint(0, 256, (1, spec.get("prompt_len", 64)), generator=torch.Generator().manual_seed(0)).to(device)
    rows, done = [], 0
    import time

    with torch.no_grad():
        logits, _, state = model(prompt)  # the prompt is read once, then one byte per forward
        for mark in spec["marks"]:
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(mark - done):
                token = sample(logits[0, -1], 1.0, None, gen)  # (1,) on the device, fed back as it is
                logits, _, state = model(token.view(1, 1), state=state)
            sync(device)
            n = mark - done
            row = {"bytes": mark, "ms_per_token": (time.perf_counter() - w0) / n * 1e3,
                   "cpu_ms_per_token": (time.process_time() - c0) / n * 1e3, "peak_rss_mib": peak_rss_mib(),
                   "rss_mib": current_rss_mib(), "state_mib": state_bytes(state) / 2**20}
            if device.type == "cuda":
                row["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append(row)
            done = mark
    return {"model_type": cfg.model_type, "rows": rows}


def generate_case(hope_cfg: Config, marks: list[int], device: torch.device, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"marks": marks}
    for name, cfg in pair(hope_cfg).items():
        out[name] = run_worker({"kind": "generate", "config": config_to_dict(cfg), "device": str(device),
                                "threads": threads, "marks": marks})
    return out


# -------------------------------------------------------------------------------------- memory update op


def op_inputs(B: int, H: int, T: int, d: int, h: int, device: torch.device, kind: str = "linear", seed: int = 0
              ) -> dict[str, Any]:
    """Inputs shaped like one SMT layer's call (3 boxes per head folded into H), gates in the ranges the layer
    produces at init (eta ~ 0.5, alpha close to 1)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(rand(*shape), dim=-1)

    if kind == "linear":
        prior, change = (rand(H, d, d, scale=1 / math.sqrt(d)),), torch.zeros(B, H, d, d, device=device)
    else:
        prior, change = (rand(H, d, h, scale=0.02), rand(H, h, d, scale=1 / math.sqrt(d))), torch.zeros(B, H, d, h, device=device)
    return {"prior": prior, "change": change, "k": unit(B, H, T, d), "v": unit(B, H, T, d), "q": unit(B, H, T, d),
            "eta": torch.rand(B, H, T, generator=g).to(device),
            "alpha": (0.999 + 0.001 * torch.rand(B, H, T, generator=g)).to(device)}


def _op_call(fn, inp: dict[str, Any], chunk: int, backward: bool, kind: str):
    args = dict(inp)
    if backward:
        args = {k: (tuple(t.detach().requires_grad_(True) for t in v) if isinstance(v, tuple)
                    else v.detach().requires_grad_(True)) for k, v in inp.items()}
    with torch.set_grad_enabled(backward):
        call = (args["prior"], args["change"], args["k"], args["v"], args["q"], args["eta"], args["alpha"])
        o, d = fn(*call, kind=kind) if fn is memory_reference else fn(*call, chunk, kind=kind)
        if backward:
            (o.square().sum() + d.square().sum()).backward()


def op_case(shape: dict[str, int], chunks: list[int], reps: int, device: torch.device,
            bwd_chunks: list[int] | None = None, kind: str = "linear") -> list[dict[str, Any]]:
    """`memory_chunked` against the per-token `memory_reference`, forward only (`no_grad`) at every chunk size
    and forward + backward at `bwd_chunks` (default all)."""
    inp = op_inputs(**shape, device=device, kind=kind)
    rows = []
    for chunk in chunks:
        row: dict[str, Any] = {"chunk": chunk, "kind": kind, **shape}
        for mode, backward in (("fwd", False), ("fwd_bwd", True)):
            if backward and bwd_chunks is not None and chunk not in bwd_chunks:
                continue
            t = interleaved({name: (lambda fn=fn: _op_call(fn, inp, chunk, backward, kind))
                             for name, fn in (("chunked", memory_chunked), ("reference", memory_reference))},
                            reps, device)
            key = "cpu_s" if "cpu_s" in t["chunked"] else "wall_s"
            row[mode] = {"chunked_s": t["chunked"][key], "reference_s": t["reference"][key],
                         "speedup": t["reference"][key] / t["chunked"][key], "timer": key}
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- store / retrieve


def store_retrieve(kind: str, pairs: int, chunk: int, *, memories: int = 4, d: int = 32, h: int = 64, seed: int = 0,
                   device: torch.device = torch.device("cpu")) -> tuple[float, float]:
    """(top-1, seconds) of `pairs` random unit key/value pairs written once (eta = alpha = 1) into each of
    `memories` empty memories of head dim `d` (mlp: `h` random silu features), read back at their keys and
    matched against every value by cosine (docs/architecture.md, "The memory update": its store/retrieve table; chance 1 / pairs)."""
    g = torch.Generator().manual_seed(seed)
    k = F.normalize(torch.randn(memories, pairs, d, generator=g), dim=-1).to(device)
    v = F.normalize(torch.randn(memories, pairs, d, generator=g), dim=-1).to(device)
    if kind == "linear":
        prior, change = (torch.zeros(memories, d, d, device=device),), torch.zeros(memories, d, d, device=device)
    else:
        prior = (torch.zeros(memories, d, h, device=device), (torch.randn(memories, h, d, generator=g) / d ** 0.5).to(device))
        change = torch.zeros(memories, d, h, device=device)
    ones = torch.ones(memories, pairs, device=device)
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        _, d_end = memory_chunked(prior, change, k, v, None, ones, ones, chunk, kind=kind)
    sync(device)
    seconds = time.perf_counter() - start
    read = F.normalize(box_apply(prior, d_end, k, kind), dim=-1)
    return ((read @ v.mT).argmax(-1) == torch.arange(pairs, device=device)).float().mean().item(), seconds


def store_retrieve_case(pairs: list[int], chunks: list[int], seeds: int, device: torch.device) -> list[dict[str, Any]]:
    """Top-1 retrieval (mean over `seeds` seeds of 4 memories each) and write time, by kind, pairs and chunk."""
    rows = []
    for kind in ("linear", "mlp"):
        for n in pairs:
            for chunk in chunks:
                runs = [store_retrieve(kind, n, chunk, seed=s, device=device) for s in range(seeds)]
                rows.append({"kind": kind, "pairs": n, "chunk": chunk, "top1": sum(a for a, _ in runs) / seeds,
                             "top1_min": min(a for a, _ in runs), "chance": 1 / n,
                             "write_ms": 1e3 * sorted(t for _, t in runs)[seeds // 2]})
    return rows


# ------------------------------------------------------------------------------------------------- peer


def peer_modules(cfg: Config, seed: int = 0) -> dict[str, torch.nn.Module]:
    """This project's memory in plain Titans mode (mlp box, the exact delta rule, no momentum) and titans-pytorch's
    NeuralMemory at the same width, heads, chunk size and memory MLP (depth 2, hidden = memory_hidden_mult *
    head_dim, residual; momentum on, its default): the same layer shape, not the same rule."""
    from titans_pytorch import NeuralMemory  # optional: bench/requirements.txt

    torch.manual_seed(seed)
    ours = SelfModifyingMemory(cfg.dim, cfg.num_heads, cfg.memory_hidden_mult, cfg.update_frequencies.mem_write,
                               kind="mlp", self_modifying=False, error_decay=cfg.error_decay)
    theirs = NeuralMemory(dim=cfg.dim, chunk_size=cfg.update_frequencies.mem_write, heads=cfg.num_heads,
                          dim_head=cfg.dim // cfg.num_heads, momentum=True,
                          default_model_kwargs=dict(depth=2, expansion_factor=cfg.memory_hidden_mult))
    return {"ours": ours, "titans_pytorch": theirs}


def _peer_step(name: str, module: torch.nn.Module, x: torch.Tensor):
    def step() -> None:
        if name == "ours":
            y, _, _ = module(x, module.init_state(x.shape[0], x.device), x.shape[1], 1.0, 1.0)
        else:
            y, _ = module(x)
        y.square().mean().backward()

    return step


def peer_available() -> bool:
    try:
        import titans_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def worker_peer_memory(spec: dict[str, Any]) -> dict[str, Any]:
    cfg, device = config_from_dict(spec["config"]), torch.device(spec["device"])
    module = peer_modules(cfg)[spec["which"]].to(device)
    x = torch.randn(cfg.batch_size, spec["seq_len"], cfg.dim, generator=torch.Generator().manual_seed(0)).to(device)
    step = _peer_step(spec["which"], module, x)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_rss_mib()
    step()
    sync(device)
    out = {"peak_rss_mib": peak_rss_mib(), "step_peak_rss_mib": peak_rss_mib() - before}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def peer_case(cfg: Config, seq_len: int, reps: int, device: torch.device, threads: int, memory: bool
              ) -> dict[str, Any]:
    """Forward + backward tokens/s (interleaved) and peak memory (subprocesses) of the two memories."""
    if not peer_available():
        return {"skipped": PEER_MISSING}
    from importlib.metadata import PackageNotFoundError, version

    try:
        peer_version = version("titans-pytorch")
    except PackageNotFoundError:
        peer_version = None
    modules = {k: m.to(device) for k, m in peer_modules(cfg).items()}
    x = torch.randn(cfg.batch_size, seq_len, cfg.dim, generator=torch.Generator().manual_seed(0)).to(device)
    times = interleaved({k: _peer_step(k, m, x) for k, m in modules.items()}, reps, device)
    tokens = cfg.batch_size * seq_len
    out: dict[str, Any] = {"seq_len": seq_len, "batch_size": cfg.batch_size, "dim": cfg.dim, "heads": cfg.num_heads,
                           "chunk": cfg.update_frequencies.mem_write,
                           "titans_pytorch_version": peer_version}
    for k, m in modules.items():
        key = "cpu_s" if "cpu_s" in times[k] else "wall_s"
        out[k] = {"params": sum(p.numel() for p in m.parameters()), "tokens_per_s": tokens / times[k]["wall_s"],
                  "step_s": times[k]["wall_s"]}
        if key == "cpu_s":
            out[k]["cpu_tokens_per_s"] = tokens / times[k]["cpu_s"]
        if memory:
            out[k]["memory"] = run_worker({"kind": "peer_memory", "which": k, "config": config_to_dict(cfg),
                                           "seq_len": seq_len, "device": str(device), "threads": threads})
    out["ratio"] = out["ours"]["tokens_per_s"] / out["titans_pytorch"]["tokens_per_s"]
    if "cpu_tokens_per_s" in out["ours"]:
        out["cpu_ratio"] = out["ours"]["cpu_tokens_per_s"] / out["titans_pytorch"]["cpu_tokens_per_s"]
    return out


WORKERS = {"train_memory": worker_train_memory, "generate": worker_generate, "peer_memory": worker_peer_memory}
