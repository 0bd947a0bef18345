"""Shareable models: hope-export writes model.safetensors + config.json, read back without pickle, also through
huggingface_hub's PyTorchModelHubMixin on a local folder (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hope.checkpoint import load_model
from hope.cli import export as export_cli
from hope.cli import train as train_cli
from hope.errors import HopeError
from hope.export import load_exported

FLAGS = ["--seq_len", "32", "--batch_size", "2", "--steps", "2", "--device", "cpu", "--model_type", "hope",
         "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32", "--set", "attn_window=16",
         "--set", "memory_capacity=8", "--set", "top_k=2", "--set", "eval_batches=1", "--set", "warmup_steps=1",
         "--set", "ema_decay=0.5"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "ck.pt"
    assert train_cli.main(FLAGS + ["--out", str(path)]) == 0
    return path


def _logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.arange(24).remainder(256).view(1, 24)
    with torch.no_grad():
        return model(x)[0]


def test_export_round_trip_without_pickle(ckpt, tmp_path, monkeypatch, capsys):
    out = tmp_path / "exported"
    assert export_cli.main(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == ["wrote", str(out / "model.safetensors"), "wrote", str(out / "config.json")]
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "hope-export-v1" and meta["model_type"] == "hope" and meta["step"] == 2
    assert meta["config"]["dim"] == 32
    reference, _, _ = load_model(ckpt)  # EMA weights, schedules at the checkpoint's step
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the export must load without torch.load"))
    model, cfg = load_exported(out)
    assert cfg.model_type == "hope" and not model.training
    assert torch.equal(_logits(model), _logits(reference))


def test_export_refuses_to_overwrite_and_bad_folders_are_one_line(ckpt, tmp_path, capsys):
    out = tmp_path / "exported"
    assert export_cli.main(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert export_cli.main(["--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert export_cli.main(["--ckpt", str(ckpt), "--out", str(out), "--overwrite"]) == 0
    with pytest.raises(HopeError, match="not an exported hope model"):
        load_exported(tmp_path / "nothing")


def test_hub_mixin_save_and_load_a_local_folder(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from hope.export import HopeHub

    hub = HopeHub.from_checkpoint(ckpt)
    hub.save_pretrained(tmp_path / "hub")
    assert {"model.safetensors", "config.json"} <= {p.name for p in (tmp_path / "hub").iterdir()}
    again = HopeHub.from_pretrained(str(tmp_path / "hub"))
    assert again.step == 2 and again.cfg == hub.cfg
    assert torch.equal(_logits(again.model), _logits(hub.model))
    model, _ = load_exported(tmp_path / "hub")  # the same folder format as hope-export
    assert torch.equal(_logits(model), _logits(hub.model))
