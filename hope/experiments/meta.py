"""`hope-meta-train`'s experiment: meta-learning against plain training (or the model at init), compared by the
adaptation gain on held-out validation text (the training side lives in `hope.train.meta`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from hope.config import Config, config_to_dict
from hope.errors import HopeError
from hope.train.meta import (GainResult, adaptation_gain, check_meta_supported, eval_pair_starts, hold_out_meta,
                             paired_difference)

MODEL_LABELS = {"init": "at init (untrained)", "plain": "trained, meta off (plain hope-train)",
                "meta": "trained with meta-learning"}


def run_meta_experiment(cfg: Config, *, out_dir: str | Path = "reports", reference: str = "plain",
                        eval_pairs: int = 64, command: str = "", resume: str | None = None,
                        verbose: bool = True, overwrite: bool = True, tensorboard: str | None = None
                        ) -> dict[str, Any]:
    """`hope-meta-train`: train with meta-learning and compare the adaptation gain on validation text with
    the model at init and (reference "plain") the same config trained with meta off for the same steps and seed.

    Both training runs use the same corpus with the meta split held out, hence the same batches: the runs
    differ only by the meta-updates. Writes `meta_metrics.json` and `meta_report.md` to `out_dir`; `files` in
    the returned dict lists every file the run wrote (the checkpoint first). `overwrite=False` refuses to replace
    another run's files (checked before any training).
    """
    from hope.data.corpus import load_corpus
    from hope.models import build_model
    from hope.report.writers import meta_report_md, write_json, write_text
    from hope.runtime import resolve_device, seed_everything
    from hope.runs import RunFiles, check_writable, refuse_overwrite
    from hope.train.loop import metrics_path, train

    check_meta_supported(cfg)
    if not cfg.meta.use:
        raise HopeError("hope-meta-train runs meta-learning: meta.use must be true (use hope-train for meta off)")
    if reference not in ("plain", "init"):
        raise HopeError(f"--reference must be plain or init, got '{reference}'")
    if eval_pairs < 1:
        raise HopeError(f"--samples (--eval_pairs) must be >= 1, got {eval_pairs}")
    reports = [Path(out_dir) / "meta_metrics.json", Path(out_dir) / "meta_report.md"]
    if int(os.environ.get("RANK", "0")) == 0:  # before the reference run, not after it
        run_paths = RunFiles(Path(cfg.out)).paths()
        check_writable(reports + run_paths)
        if not overwrite:
            refuse_overwrite(reports + run_paths, allowed=RunFiles(Path(resume)).paths() if resume else ())
    corpus = hold_out_meta(load_corpus(cfg.data, seed=cfg.seed), cfg.meta.split)
    eval_pair_starts(len(corpus.val), cfg.meta.support_len, cfg.meta.query_len, eval_pairs)  # fail early if too short
    device = resolve_device(cfg.device, cfg.cuda_device)
    models: dict[str, dict[str, Any]] = {}
    gains: dict[str, GainResult] = {}

    def record(name: str, model: torch.nn.Module, val: dict[str, float] | None) -> None:
        gains[name] = adaptation_gain(model, corpus.val, cfg, eval_pairs, device)
        models[name] = {"label": MODEL_LABELS[name], **gains[name].summary(), "val": val or {}}
        if verbose:
            print(f"adaptation gain on validation, {MODEL_LABELS[name]}: {models[name]['gain']:+.4f} nats/byte")

    seed_everything(cfg.seed)  # the same initial weights train() starts from
    record("init", build_model(cfg).to(device), None)
    if reference == "plain":
        plain_cfg = dataclasses.replace(cfg, meta=dataclasses.replace(cfg.meta, use=False))
        plain = train(plain_cfg, corpus=corpus, save=False, verbose=verbose)
        record("plain", plain.model, plain.val)
        del plain
    result = train(cfg, corpus=corpus, resume=resume, verbose=verbose, overwrite=overwrite, tensorboard=tensorboard)
    record("meta", result.model, result.val)

    rounds = []
    mpath = metrics_path(cfg)
    if mpath.is_file():
        import json

        rounds = [r for r in (json.loads(line) for line in mpath.read_text().splitlines() if line.strip())
                  if "meta_gain" in r]
    before = "plain" if reference == "plain" else "init"
    metrics = {
        "command": command,
        "config": config_to_dict(cfg),
        "data": {"corpus": corpus.name, "train_bytes": len(corpus.train), "meta_bytes": len(corpus.meta),
                 "val_bytes": len(corpus.val),
                 "meta_split": f"last {cfg.meta.split:g} of the training split, excluded from training batches"},
        "eval": {"split": "validation", "pairs": models["meta"]["pairs"], "support_len": cfg.meta.support_len,
                 "query_len": cfg.meta.query_len, "inner_steps": cfg.meta.inner_steps},
        "models": models,
        "comparison": {"before": before, "after": "meta",
                       "gain_difference": paired_difference(gains["meta"].gain, gains[before].gain),
                       "memory_write_gain_difference": paired_difference(gains["meta"].memory_gain,
                                                                         gains[before].memory_gain)},
        "rounds": rounds,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "files": [str(p) for p in result.files] + [str(p) for p in reports],
    }
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: one writer
        return metrics
    out_dir = Path(out_dir)
    write_json(out_dir / "meta_metrics.json", metrics)
    write_text(out_dir / "meta_report.md", meta_report_md(metrics))
    return metrics
