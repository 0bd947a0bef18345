"""The Python API: five functions for a notebook, re-exported by `hope` (`from hope import train, ...`).

    from hope import load_config, build_model, train, load_model, generate
    cfg = load_config("configs/quick.yaml", steps=20, out="runs/notebook.pt")
    result = train(cfg)                     # result.model, result.val {loss, ppl, accuracy, top5_acc, ...}
    model = load_model("runs/notebook.pt")  # a training checkpoint or a hope-export folder
    print(generate(model, "ROMEO:", max_new_tokens=40))

Imports are deferred to the first call, so `import hope` (and every command's --help) stays fast.

`hope.train` is also the name of a package: importing one of its modules binds `hope.train` to the package, which
is therefore callable as `train` (hope/train/__init__.py), so `from hope import train` gives something that trains
whether or not the package was imported first. Sampling lives in `hope.sampling`, so `hope.generate` is always
the function below.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy imports, for the type hints only
    import torch

    from hope.config import Config
    from hope.models.lm import LanguageModel
    from hope.train.loop import TrainResult


def load_config(path: str | Path | None = None, **keys: Any) -> "Config":
    """A validated Config: the defaults, then the YAML file at `path`, then `keys` (any config key; nested ones as
    dicts, e.g. `update_frequencies={"mem_write": 4}`). Raises `hope.errors.HopeError` for a bad file or value."""
    from hope.config import load_config as _load

    return _load(path, [keys] if keys else [])


def build_model(cfg: "Config") -> "LanguageModel":
    """A fresh, untrained model of `cfg.model_type` (hope or baseline) built from `cfg`."""
    from hope.models import build_model as _build

    return _build(cfg)


def train(cfg: "Config", **kwargs: Any) -> "TrainResult":
    """Train `cfg` for `cfg.steps` steps; returns a TrainResult (`.model` with the EMA weights, `.val` and
    `.train` metrics, `.checkpoint`, `.files`). Writes `cfg.out` with its metrics log and config beside it.
    Keywords go to `hope.train.loop.train` (e.g. `verbose=False`, `resume=PATH`, `overwrite=False`)."""
    from hope.train.loop import train as _train

    return _train(cfg, **kwargs)


def load_model(path: str | Path, device: "str | torch.device" = "cpu") -> "LanguageModel":
    """A trained model in eval mode, from a training checkpoint (EMA weights, loaded with weights_only) or a
    `hope-export` folder (safetensors); its config is `model.cfg`."""
    if Path(path).is_dir():
        from hope.export import load_exported

        return load_exported(path, device)[0]
    from hope.checkpoint import load_model as _load

    return _load(path, device)[0]


def generate(model: "torch.nn.Module", prompt: str | bytes = "", max_new_tokens: int = 200, *,
             temperature: float = 1.0, top_k: int | None = None, seed: int | None = None) -> str:
    """`prompt` followed by `max_new_tokens` sampled bytes, decoded as UTF-8 (invalid bytes become U+FFFD).
    `temperature` 0 is greedy; `seed` makes sampling reproducible."""
    from hope.sampling import generate_bytes

    data = prompt.encode("utf-8") if isinstance(prompt, str) else bytes(prompt)
    device = next(model.parameters()).device
    new = bytes(generate_bytes(model, data, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                               device=device))
    return (data + new).decode("utf-8", errors="replace")


__all__ = ["load_config", "build_model", "train", "load_model", "generate"]
