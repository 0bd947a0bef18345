"""Continual learning A -> B -> C: how much each model forgets earlier domains while it learns later ones.

Domains are three contiguous thirds of one corpus (default) or separate files (`--data a.txt,b.txt,c.txt`); each
domain is split 90/10 into train/validation. One model object is trained on A, then B, then C, for
`steps_per_stage` optimiser steps each; after every stage its validation loss is measured on every domain, which
fills the loss matrix `loss[i][j]` (after stage i, on domain j). HOPE and its parameter-matched baseline
(`matched_baseline_config`) run the same protocol with the same seeds and budget.

Each stage is one call of `hope.train.loop.train` with the model passed in, so each stage starts a fresh
optimiser and a fresh learning-rate schedule (warmup, then cosine decay over the stage): the weights carry
over, the optimiser moments do not. HOPE's fast state (memories, bank) is per sequence and never carries between
sequences, so only what the slow weights learned can be forgotten.

Writes `out_dir/continual_metrics.json` (format: `hope.report.writers.continual_report_md`) and
`out_dir/continual_report.md`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from hope.config import Config, config_to_dict
from hope.data.corpus import Corpus, DataError, load_bytes, synthetic_corpus
from hope.errors import HopeError
from hope.eval.lm import evaluate_lm
from hope.experiments.compare import is_main_process, matched_configs
from hope.models import build_model
from hope.report.writers import compute_forgetting, continual_report_md, write_json, write_text
from hope.runs import check_writable, refuse_overwrite
from hope.runtime import resolve_device, seed_everything
from hope.train.loop import train

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def split_domains(data: str | None, n_domains: int = 3, seed: int = 0) -> list[tuple[str, Corpus]]:
    """[(name, Corpus)]: `a,b,c` -> one domain per file; one path (or None: synthetic) -> contiguous equal parts.

    Names are short ("A: first third", "B: b.txt"); each Corpus.name says where its bytes come from.
    """
    paths = [p.strip() for p in data.split(",")] if data and "," in data else None
    if paths is not None:
        if len(paths) < 2 or any(not p for p in paths):
            raise DataError(f"--data with commas needs two or more file paths (one domain each), got '{data}'")
        if len(paths) > len(LETTERS):
            raise DataError(f"at most {len(LETTERS)} domains, got {len(paths)}")
        return [(f"{LETTERS[i]}: {Path(p).name}", Corpus.from_bytes(load_bytes(p), name=p))
                for i, p in enumerate(paths)]
    raw = load_bytes(data) if data else synthetic_corpus(seed=seed)
    source = data if data else "the synthetic corpus"
    size = len(raw) // n_domains
    ordinal = {2: ["first half", "second half"], 3: ["first third", "second third", "last third"]}.get(
        n_domains, [f"part {i + 1} of {n_domains}" for i in range(n_domains)])
    out = []
    for i in range(n_domains):
        lo, hi = i * size, (i + 1) * size if i < n_domains - 1 else len(raw)
        out.append((f"{LETTERS[i]}: {ordinal[i]}", Corpus.from_bytes(raw[lo:hi], name=f"bytes {lo}-{hi} of {source}")))
    return out


def _eval_all(model: torch.nn.Module, domains: list[tuple[str, Corpus]], cfg: Config, device: torch.device
              ) -> list[float]:
    windows = cfg.eval_batches * cfg.batch_size
    return [evaluate_lm(model, corpus.val, cfg.seq_len, cfg.batch_size, device, max_windows=windows,
                        amp=cfg.amp, amp_dtype=cfg.amp_dtype)["loss"] for _, corpus in domains]


def run_sequence(cfg: Config, domains: list[tuple[str, Corpus]], steps_per_stage: int, verbose: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one `cfg` model through the domains in order; returns {loss_matrix, initial_loss, params, ...}."""
    device = resolve_device(cfg.device, cfg.cuda_device)
    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    initial = _eval_all(model, domains, cfg, device)
    matrix = []
    for i, (name, corpus) in enumerate(domains):
        stage_cfg = dataclasses.replace(cfg, steps=steps_per_stage, seed=cfg.seed + i,
                                        eval_interval=max(cfg.eval_interval, steps_per_stage + 1))
        result = train(stage_cfg, corpus=corpus, model=model, save=False, verbose=verbose, final_eval=False)
        model = result.model
        row = _eval_all(model, domains, cfg, device)
        matrix.append(row)
        log(f"{cfg.model_type} after {name.split(':')[0]}: val loss " +
            " ".join(f"{d.split(':')[0]}={v:.4f}" for (d, _), v in zip(domains, row)))
    forgetting, bwt = compute_forgetting(matrix)
    return {"params": model.num_params(), "depth": cfg.depth, "ff_mult": cfg.ff_mult, "initial_loss": initial,
            "loss_matrix": matrix, "avg_forgetting": forgetting, "backward_transfer": bwt}


def run_continual(cfg: Config, steps_per_stage: int, out_dir: str | Path = "reports", *, command: str = "",
                  verbose: bool = False, log: Callable[[str], None] = print, overwrite: bool = True
                  ) -> dict[str, Any]:
    """HOPE and the matched baseline through A -> B -> C; writes continual_metrics.json and continual_report.md
    (checked before training: writable, and with `overwrite=False` not already there)."""
    if steps_per_stage <= 0:
        raise HopeError(f"--steps_per_stage must be > 0, got {steps_per_stage}")
    out_dir = Path(out_dir)
    reports = [out_dir / "continual_metrics.json", out_dir / "continual_report.md"]
    if is_main_process():
        check_writable(reports)
        if not overwrite:
            refuse_overwrite(reports)
    domains = split_domains(cfg.data, seed=cfg.seed)
    for _, corpus in domains:
        corpus.check_length(cfg.seq_len + 1)
    configs = matched_configs(cfg, out_dir)
    models = {}
    for name, model_cfg in configs.items():
        log(f"== {name}: {len(domains)} stages of {steps_per_stage} steps ==")
        models[name] = run_sequence(model_cfg, domains, steps_per_stage, verbose=verbose, log=log)
    if not is_main_process():
        return {"models": models}
    metrics = {
        "command": command,
        "domains": [name for name, _ in domains],
        "domain_sources": [corpus.name for _, corpus in domains],
        "steps_per_stage": steps_per_stage,
        "config": config_to_dict(configs["hope"]),
        "models": models,
    }
    write_json(out_dir / "continual_metrics.json", metrics)
    write_text(out_dir / "continual_report.md", continual_report_md(metrics) + _notes(metrics))
    for path in reports:  # the last lines: the files this run wrote
        log(f"wrote {path}")
    return metrics


def _notes(metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]
    lines = ["", "## Protocol", ""]
    if metrics.get("command"):
        lines += ["Command:", "", "```", metrics["command"], "```", ""]
    lines += [
        "- Domains (each split 90% train / 10% validation): " + "; ".join(
            f"{d.split(':')[0]} = {src}" for d, src in zip(metrics["domains"], metrics["domain_sources"])) + ".",
        f"- {metrics['steps_per_stage']} optimiser steps per stage of {cfg['batch_size']} x {cfg['seq_len']} bytes; "
        f"the same model object continues from stage to stage. Each stage starts a **fresh optimiser** "
        f"(`{cfg['optimizer_type']}`, lr {cfg['lr']}) and its own warmup + cosine schedule: weights carry over, "
        f"optimiser moments do not.",
        f"- Validation loss: {cfg['eval_batches'] * cfg['batch_size']} evenly spread windows of {cfg['seq_len']} bytes "
        f"per domain, each from a fresh state (HOPE's in-context memories never carry between sequences).",
    ]
    if cfg.get("ema_decay", 0) > 0:
        lines.append(f"- EMA of weights (decay {cfg['ema_decay']}) restarts each stage; the EMA weights are what the "
                     "next stage continues from.")
    for name, m in metrics["models"].items():
        lines.append(f"- {name}: {m['params']:,} parameters (depth {m['depth']}, ff_mult {m['ff_mult']}); loss before "
                     "training: " + ", ".join(f"{v:.4f}" for v in m["initial_loss"]) + ".")
    return "\n".join(lines + [""])


__all__ = ["split_domains", "run_sequence", "run_continual"]
