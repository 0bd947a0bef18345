"""Shareable models: a folder with `model.safetensors` and `config.json`, read back without pickle.

    model.safetensors   the weights (the EMA weights when the checkpoint has them), safetensors format: loading it
                        cannot run code, unlike a pickle
    config.json         {"format": "hope-export-v1", "model_type", "step", "params", "config": {resolved config}}

`export_checkpoint(ckpt, out_dir)` writes the folder from a training checkpoint (`hope-export`), `load_exported`
builds the model back. `HopeHub` wraps the same folder in huggingface_hub's `PyTorchModelHubMixin`
(`save_pretrained` / `from_pretrained` / `push_to_hub`) when `huggingface_hub` is installed (the `hub` extra).
The training checkpoint stays the format to resume from (optimiser, RNG); the export is the one to share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hope.atomic import atomic_path
from hope.config import Config, ConfigError, config_from_dict, config_to_dict
from hope.errors import HopeError

FORMAT = "hope-export-v1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise HopeError("exporting needs the safetensors package: pip install safetensors") from None
    return safetensors.torch


def export_model(model: torch.nn.Module, cfg: Config, out_dir: str | Path, *, step: int | None = None) -> list[Path]:
    """Write `model`'s weights and `cfg` into `out_dir` (created); returns [weights, config] paths.

    Each file is written to a temporary name and renamed, so a failed export never leaves half a folder's file.
    """
    st = _safetensors()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, config = out / WEIGHTS, out / CONFIG
    meta = {"format": FORMAT, "model_type": cfg.model_type, "step": step,
            "params": int(model.num_params()) if hasattr(model, "num_params") else None,
            "config": config_to_dict(cfg)}
    # Both files to temporary names first, renamed only when both are written (`hope.atomic`).
    with atomic_path(weights) as tmp_weights, atomic_path(config) as tmp_config:
        st.save_model(model, str(tmp_weights), metadata={"format": FORMAT})  # drops the tied head's duplicate
        tmp_config.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return [weights, config]


def export_checkpoint(ckpt: str | Path, out_dir: str | Path) -> list[Path]:
    """`hope-export`: the checkpoint's evaluation model (EMA weights, schedules at its step) into `out_dir`."""
    from hope.checkpoint import load_model

    model, cfg, raw = load_model(ckpt, "cpu")
    step = raw.get("step")
    return export_model(model, cfg, out_dir, step=step if isinstance(step, int) else None)


def read_export_config(folder: str | Path) -> tuple[Config, dict[str, Any]]:
    """(Config, the whole config.json) of an exported folder; HopeError when it is not one."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise HopeError(f"not an exported hope model: {path} not found (write one with hope-export)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HopeError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise HopeError(f"{path} is not a hope export (expected format '{FORMAT}')")
    try:
        return config_from_dict(meta["config"]), meta
    except ConfigError as exc:
        raise HopeError(f"{path}: invalid config: {exc}") from None


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """An exported folder -> (model in eval mode on `device`, its Config). Reads only JSON and safetensors."""
    from hope.models import build_model

    st = _safetensors()
    cfg, meta = read_export_config(folder)
    weights = Path(folder) / WEIGHTS
    if not weights.is_file():
        raise HopeError(f"not an exported hope model: {weights} not found")
    model = build_model(cfg)
    try:
        st.load_model(model, str(weights), strict=True, device="cpu")
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own error types for bad files)
        raise HopeError(f"{weights}: cannot load the weights ({' '.join(str(exc).split())[:200]})") from None
    step = meta.get("step")
    if isinstance(step, int) and hasattr(model, "set_schedules"):  # as training evaluated it at that step
        model.set_schedules(cfg.mem_write.at(step), cfg.surprise_scale.at(step))
    return model.to(device).eval(), cfg


try:  # the Hugging Face Hub integration is optional (pip install 'hope[hub]')
    from huggingface_hub import PyTorchModelHubMixin
except ImportError:  # pragma: no cover - exercised only without huggingface_hub
    PyTorchModelHubMixin = None


if PyTorchModelHubMixin is not None:

    class HopeHub(torch.nn.Module, PyTorchModelHubMixin, library_name="hope", tags=["hope", "byte-level"]):
        """A hope model with `save_pretrained(dir)`, `from_pretrained(dir_or_repo)` and `push_to_hub(repo)`.

        The folder is the `hope-export` one (model.safetensors + config.json), so either side reads the other's.
        `HopeHub.from_checkpoint(path)` wraps a training checkpoint; `.model` is the language model itself.
        """

        def __init__(self, model: torch.nn.Module, cfg: Config, step: int | None = None):
            super().__init__()
            self.model, self.cfg, self.step = model, cfg, step

        @classmethod
        def from_checkpoint(cls, path: str | Path) -> "HopeHub":
            from hope.checkpoint import load_model

            model, cfg, raw = load_model(path, "cpu")
            return cls(model, cfg, raw.get("step") if isinstance(raw.get("step"), int) else None)

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.model(*args, **kwargs)

        def _save_pretrained(self, save_directory: Path) -> None:
            export_model(self.model, self.cfg, save_directory, step=self.step)

        @classmethod
        def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: Any = None,
                             force_download: bool = False, local_files_only: bool = False, token: Any = None,
                             map_location: str = "cpu", strict: bool = False, **model_kwargs: Any) -> "HopeHub":
            folder = Path(model_id)
            if not folder.is_dir():  # a Hub repository: fetch the two files into the cache
                from huggingface_hub import hf_hub_download

                kwargs = dict(repo_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                              local_files_only=local_files_only, token=token)
                hf_hub_download(filename=CONFIG, **kwargs)
                folder = Path(hf_hub_download(filename=WEIGHTS, **kwargs)).parent
            model, cfg = load_exported(folder, map_location)
            _, meta = read_export_config(folder)
            return cls(model, cfg, meta.get("step"))

else:  # pragma: no cover
    HopeHub = None


__all__ = ["FORMAT", "export_model", "export_checkpoint", "read_export_config", "load_exported", "HopeHub"]
