"""HOPE vs the parameter-matched Transformer++ baseline, trained the same way on the same data.

`run_experiment(cfg, out_dir)` trains HOPE with `cfg` (model_type forced to hope) and the baseline from
`matched_baseline_config(cfg)` (same width, heads, max_len, data, seed, steps, batch, schedule and optimiser;
depth/ff_mult chosen so the parameter counts are within +-10%), evaluates both on the train and validation splits,
optionally scores a pretrained Hugging Face model on the same validation text in bits per byte, and writes

    out_dir/hope_checkpoint.pt, out_dir/baseline_checkpoint.pt    the trained models
    out_dir/<model>_checkpoint.metrics.jsonl                      their training logs (`hope.runs`)
    out_dir/<model>_checkpoint.config.yaml                        their resolved configs
    out_dir/metrics.json                                          format: hope.report.writers.experiment_report_md
    out_dir/experiment_report.md

Every output is checked before the first model trains: writable, and (unless `overwrite`) not already there.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from hope.config import Config, config_to_dict
from hope.data.corpus import Corpus, load_corpus
from hope.errors import HopeError
from hope.experiments.hf import DEFAULT_HF_MODEL, HFUnavailable, score_hf_model
from hope.models import count_params, matched_baseline_config
from hope.report.writers import experiment_report_md, write_json, write_text
from hope.runs import RunFiles, check_writable, refuse_overwrite
from hope.runtime import resolve_device
from hope.train.loop import train

PARAM_TOLERANCE = 0.10
METRIC_KEYS = ("loss", "ppl", "bpb", "accuracy", "top5_acc", "top10_acc", "tokens")


def is_main_process() -> bool:
    """Rank 0 (or no torchrun): the process that writes reports. Every rank trains; only one writes."""
    return int(os.environ.get("RANK", "0")) == 0


def matched_configs(cfg: Config, out_dir: str | Path) -> dict[str, Config]:
    """{"hope": cfg as HOPE, "baseline": its parameter-matched baseline}, writing out_dir/<name>_checkpoint.pt.

    Raises HopeError when no baseline within +-10% parameters exists for this config.
    """
    out_dir = Path(out_dir)
    hope_cfg = dataclasses.replace(cfg, model_type="hope", out=str(out_dir / "hope_checkpoint.pt"))
    base_cfg = dataclasses.replace(matched_baseline_config(hope_cfg, PARAM_TOLERANCE),
                                   out=str(out_dir / "baseline_checkpoint.pt"))
    n_hope, n_base = count_params(hope_cfg), count_params(base_cfg)
    gap = abs(n_base - n_hope) / n_hope
    if gap > PARAM_TOLERANCE:
        raise HopeError(f"no baseline within {PARAM_TOLERANCE:.0%} of HOPE's {n_hope:,} parameters for this config "
                        f"(closest: {n_base:,}, depth {base_cfg.depth}, ff_mult {base_cfg.ff_mult}, {gap:.1%} off)")
    return {"hope": hope_cfg, "baseline": base_cfg}


def hf_reference(name: str | None, text: bytes, device: str, max_tokens: int | None,
                 log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Bits per byte of a Hugging Face model on `text`, or {"skipped": reason} (one line logged); None: disabled."""
    if name is None or str(name).strip().lower() in ("", "none", "off"):
        return None
    try:
        result = score_hf_model(name, text, device=device, max_tokens=max_tokens)
    except (HFUnavailable, ValueError) as exc:
        reason = " ".join(str(exc).split())
        log(f"HF comparison skipped: {reason}")
        return {"skipped": reason}
    log(f"HF reference {result['model']}: {result['bpb']:.4f} bits/byte on {result['bytes']} validation bytes")
    return result


def _model_entry(result: Any, params: int, checkpoint: Path | None, cfg: Config) -> dict[str, Any]:
    return {
        "params": params,
        "tokens_per_s": result.tokens_per_s,
        "train_time_s": result.train_time_s,
        "steps": result.step,
        "depth": cfg.depth,
        "ff_mult": cfg.ff_mult,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "metrics_log": str(RunFiles(Path(cfg.out)).metrics),
        "config_file": str(RunFiles(Path(cfg.out)).config),
        "train": {k: result.train[k] for k in METRIC_KEYS if k in result.train},
        "val": {k: result.val[k] for k in METRIC_KEYS if k in result.val},
    }


def run_experiment(cfg: Config, out_dir: str | Path = "reports", *, command: str = "",
                   hf_model: str | None = DEFAULT_HF_MODEL, hf_max_tokens: int | None = None,
                   corpus: Corpus | None = None, verbose: bool = True,
                   log: Callable[[str], None] = print, overwrite: bool = True) -> dict[str, Any]:
    """Train and evaluate HOPE and the matched baseline; write metrics.json and experiment_report.md into out_dir.

    Returns the metrics dict written to metrics.json, plus `files` (every file written). `overwrite=False`
    refuses, before any training, when one of the outputs already exists.
    """
    out_dir = Path(out_dir)
    configs = matched_configs(cfg, out_dir)
    reports = [out_dir / "metrics.json", out_dir / "experiment_report.md"]
    outputs = [p for c in configs.values() for p in RunFiles(Path(c.out)).paths()] + reports
    if is_main_process():
        check_writable(outputs)
        if not overwrite:
            refuse_overwrite(outputs)
    params = {name: count_params(c) for name, c in configs.items()}
    base = configs["baseline"]
    log(f"parameters: HOPE {params['hope']:,} (depth {cfg.depth}), baseline {params['baseline']:,} "
        f"(matched to HOPE: depth {base.depth}, ff_mult {base.ff_mult}; "
        f"{100 * (params['baseline'] / params['hope'] - 1):+.1f}%)")
    corpus = corpus if corpus is not None else load_corpus(cfg.data, seed=cfg.seed)
    corpus.check_length(cfg.seq_len + 1)

    models: dict[str, Any] = {}
    files: list[str] = []
    for name, model_cfg in configs.items():
        log(f"== training {name} ({params[name]:,} parameters, {model_cfg.steps} steps) ==")
        result = train(model_cfg, corpus=corpus, save=True, verbose=verbose, final_eval=True)
        models[name] = _model_entry(result, params[name], result.checkpoint, model_cfg)
        files += [str(p) for p in result.files]
        log(f"{name}: val loss {result.val['loss']:.4f}, bpb {result.val['bpb']:.4f}, "
            f"{result.tokens_per_s:,.0f} tokens/s -> {model_cfg.out}")
        del result  # free the model before training the next one
    if not is_main_process():
        return {"models": models}

    device = resolve_device(cfg.device, cfg.cuda_device)
    hf = hf_reference(hf_model, corpus.val.numpy().tobytes(), str(device), hf_max_tokens, log)
    metrics = {
        "command": command,
        "data": corpus.name,
        "config": config_to_dict(configs["hope"]),
        "baseline_config": {"depth": base.depth, "ff_mult": base.ff_mult},
        "models": models,
        "hf": hf,
    }
    write_json(out_dir / "metrics.json", metrics)
    write_text(out_dir / "experiment_report.md", experiment_report_md(metrics) + _notes(metrics))
    for path in files + [str(p) for p in reports]:  # the last lines: every file this run wrote
        log(f"wrote {path}")
    return {**metrics, "files": files + [str(p) for p in reports]}


def _notes(metrics: dict[str, Any]) -> str:
    base = metrics["baseline_config"]
    cfg = metrics["config"]
    return "\n".join([
        "",
        "## Protocol",
        "",
        f"- Data: `{metrics['data']}` (first 90% train, last 10% validation).",
        f"- Both models: seed {cfg['seed']}, {cfg['steps']} steps of {cfg['batch_size']} x {cfg['seq_len']} bytes "
        f"(x{cfg['grad_accum_steps']} accumulation), the same learning-rate schedule and optimiser "
        f"(`{cfg['optimizer_type']}`, lr {cfg['lr']}).",
        f"- Baseline: Transformer++ with depth {base['depth']} and ff_mult {base['ff_mult']}, chosen to match HOPE's "
        f"parameter count (within {PARAM_TOLERANCE:.0%}).",
        f"- Train/validation metrics: {cfg['eval_batches'] * cfg['batch_size']} evenly spread windows of "
        f"{cfg['seq_len']} bytes per split, each from a fresh state.",
        "- Checkpoints: " + ", ".join(f"`{m['checkpoint']}`" for m in metrics["models"].values()) + "; training logs: "
        + ", ".join(f"`{m['metrics_log']}`" for m in metrics["models"].values()) + ".",
        "",
    ])


__all__ = ["run_experiment", "matched_configs", "hf_reference", "is_main_process"]
