"""A run's files (hope.runs) through the commands: names beside the checkpoint, no silent overwrites, writability
checked first, data paths that work from any folder, readable checkpoints, one metrics schema, TensorBoard."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch

from hope.checkpoint import load_checkpoint, load_model, save_checkpoint
from hope.cli import meta_train as meta_cli
from hope.cli import train as train_cli
from hope.cli import eval as eval_cli
from hope.errors import HopeError
from hope.runs import (METRICS_SCHEMA, MetricsLog, RunFiles, find_metrics_log, read_metrics, refuse_overwrite,
                       unstarted_configs)

FLAGS = ["--seq_len", "32", "--batch_size", "2", "--steps", "2", "--device", "cpu", "--model_type", "baseline",
         "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
         "--set", "eval_batches=1", "--set", "warmup_steps=1", "--set", "log_interval=1"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 80)
    return path


def test_two_runs_in_one_folder_keep_their_own_log_and_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(FLAGS + ["--out", "a.pt"]) == 0
    assert train_cli.main(FLAGS + ["--out", "b.pt", "--steps", "3"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-3:] == ["saved b.pt", "wrote b.metrics.jsonl", "wrote b.config.yaml"]  # the last lines: the files
    for name, steps in (("a", 2), ("b", 3)):
        log = read_metrics(tmp_path / f"{name}.metrics.jsonl")
        assert max(r["step"] for r in log) == steps
        config = (tmp_path / f"{name}.config.yaml").read_text()
        assert f"steps: {steps}\n" in config and f"out: {name}.pt\n" in config
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_second_run_refuses_to_overwrite_unless_told(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(FLAGS) == 0
    before = (tmp_path / "hope_checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert train_cli.main(FLAGS) == 2
    assert "hope_checkpoint.pt already exists" in error_line(capsys)
    assert (tmp_path / "hope_checkpoint.pt").read_bytes() == before  # untouched
    assert train_cli.main(FLAGS + ["--overwrite"]) == 0
    # --resume writes back into the run it continues (no --overwrite needed) and keeps its log
    assert train_cli.main(["--resume", "hope_checkpoint.pt", "--steps", "3"]) == 0
    assert load_checkpoint(tmp_path / "hope_checkpoint.pt")["step"] == 3
    steps = [r["step"] for r in read_metrics(tmp_path / "hope_checkpoint.metrics.jsonl")
             if r["split"] == "train" and not r.get("final")]
    assert steps == [1, 2, 3]


def test_unwritable_outputs_fail_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train_cli.main(FLAGS + ["--out", str(blocker / "ck.pt")]) == 2
    assert "is a file, not a folder" in error_line(capsys)
    assert train_cli.main(FLAGS + ["--out", str(tmp_path)]) == 2
    assert "it is a directory" in error_line(capsys)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert train_cli.main(FLAGS + ["--out", str(locked / "ck.pt")]) == 2
        assert "not writable" in error_line(capsys)


def test_a_run_failed_on_bad_input_does_not_block_the_corrected_one(tmp_path, monkeypatch, capsys):
    """The run writes its config before it reads its data: what a typo leaves is no other run's output."""
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(FLAGS + ["--data", "missing.txt"]) == 2
    assert "data file not found" in error_line(capsys)
    assert train_cli.main(FLAGS) == 0  # not "hope_checkpoint.config.yaml already exists"
    capsys.readouterr()
    assert train_cli.main(FLAGS) == 2  # a run that trained still counts as another run's output
    assert "hope_checkpoint.pt already exists" in error_line(capsys)


def test_only_a_config_without_checkpoint_or_records_is_unstarted(tmp_path):
    files = RunFiles(tmp_path / "a.pt")
    files.config.write_text("steps: 2\n")
    assert unstarted_configs(files.paths()) == [files.config]
    files.metrics.write_text("")  # emptied at the start of training, no record yet
    assert unstarted_configs(files.paths()) == [files.config]
    files.metrics.write_text('{"step": 1, "split": "train"}\n')
    assert unstarted_configs(files.paths()) == []
    with pytest.raises(HopeError, match="a.metrics.jsonl already exists"):
        refuse_overwrite(files.paths())
    files.metrics.unlink()
    files.checkpoint.write_bytes(b"x")
    assert unstarted_configs(files.paths()) == []
    assert unstarted_configs([files.config]) == []  # without its checkpoint in the list, nothing to judge by


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("out, why", [("/proc/nope/x.pt", "cannot create folder /proc/nope"),
                                      ("/proc/x.pt", "cannot create files in /proc")])
def test_out_where_nothing_can_be_created_is_one_line(out, why, capsys):
    """/proc passes every permission check as root, yet no folder or file can be created there."""
    assert train_cli.main(FLAGS + ["--out", out]) == 2
    assert why in error_line(capsys)


def test_checkpoint_data_path_works_from_another_folder(tmp_path, data_file, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(FLAGS + ["--data", data_file.name, "--out", "run/ck.pt"]) == 0  # a relative --data
    ckpt = load_checkpoint(run / "ck.pt")
    assert ckpt["config"]["data"] == str(data_file.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert eval_cli.main(["--ckpt", str(run / "ck.pt"), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == str(data_file.resolve())
    # an older checkpoint with a data path relative to its own folder
    (run / "corpus.txt").write_bytes(data_file.read_bytes())
    ckpt["config"]["data"] = "corpus.txt"
    save_checkpoint(run / "old.pt", {k: v for k, v in ckpt.items() if k != "format"})
    _, cfg, _ = load_model(run / "old.pt")
    assert cfg.data == str((run / "corpus.txt").resolve())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_are_readable_per_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "ck.pt", {"model": {}, "config": {}})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_meta_train_has_its_own_default_checkpoint(tmp_path, monkeypatch):
    seen = {}

    def fake(cfg, **kwargs):
        seen["out"] = cfg.out
        return {"models": {}, "checkpoint": cfg.out, "files": [cfg.out]}

    monkeypatch.setattr("hope.experiments.meta.run_meta_experiment", fake)
    monkeypatch.chdir(tmp_path)
    assert meta_cli.main(["--device", "cpu"]) == 0
    assert seen["out"] == "hope_meta_checkpoint.pt"  # not hope-train's hope_checkpoint.pt
    assert meta_cli.main(["--device", "cpu", "--out", "m.pt"]) == 0 and seen["out"] == "m.pt"


def test_warmup_warning_and_compile_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)  # the message, not minutes of compiling
    assert train_cli.main(FLAGS + ["--out", str(tmp_path / "a.pt"), "--set", "warmup_steps=5",
                                   "--set", "compile=true"]) == 0
    err = capsys.readouterr().err
    assert "warning: warmup_steps (5) >= steps (2)" in err and "never decays" in err
    assert "compiling the model with torch.compile" in err
    assert train_cli.main(FLAGS + ["--out", str(tmp_path / "b.pt")]) == 0
    err = capsys.readouterr().err
    assert "warmup_steps" not in err and "compiling" not in err


def test_every_record_has_one_schema(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(FLAGS + ["--steps", "4", "--set", "eval_interval=2"]) == 0
    lines = (tmp_path / "hope_checkpoint.metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["split"] for r in records} == {"train", "val"}
    for r in records:
        assert {"step", "split", "tokens", "lr", "loss", "ppl", "accuracy", "top5_acc", "top10_acc"} <= r.keys(), r
        assert not {"acc", "top5", "top10", "tok/s", "val", "train"} & r.keys(), r
    assert set(METRICS_SCHEMA) >= {"step", "split", "tokens", "lr", "loss", "ppl", "accuracy", "top5_acc",
                                   "top10_acc"}


def test_read_metrics_converts_older_logs(tmp_path):
    old = tmp_path / "metrics.jsonl"
    old.write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "loss": 3.0, "acc": 0.1, "top5": 0.2, "top10": 0.3, "lr": 1e-3, "tok/s": 5.0},
        {"step": 1, "split": "val", "loss": 2.9},
        {"step": 2, "final": True, "val": {"loss": 2.5}, "train": {"loss": 2.4}, "tokens_per_s": 1.0},
    ]) + "\n")
    records = read_metrics(old)
    assert records[0]["split"] == "train" and records[0]["accuracy"] == 0.1 and "acc" not in records[0]
    assert [(r["split"], r.get("final", False), r["loss"]) for r in records[1:]] == [
        ("val", False, 2.9), ("val", True, 2.5), ("train", True, 2.4)]
    assert find_metrics_log(tmp_path) == old  # an older run folder


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    assert train_cli.main(FLAGS + ["--out", str(tmp_path / "a.pt"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "pip install 'hope[tensorboard]'" in error_line(capsys)
    assert not (tmp_path / "a.pt").exists()


def test_tensorboard_gets_every_number_by_split(tmp_path, monkeypatch):
    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir, self.scalars = log_dir, []
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            self.closed = True

    writers: list[FakeWriter] = []
    monkeypatch.setattr("hope.runs.require_tensorboard", lambda: FakeWriter)
    monkeypatch.setattr("hope.train.loop.require_tensorboard", lambda: FakeWriter)
    assert train_cli.main(FLAGS + ["--out", str(tmp_path / "a.pt"), "--tensorboard", str(tmp_path / "tb")]) == 0
    (writer,) = writers
    assert writer.log_dir == str(tmp_path / "tb") and writer.closed
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"train/loss", "train/lr", "train/accuracy", "val_final/loss", "train_final/loss"} <= tags
    assert ("train/loss", pytest.approx(read_metrics(tmp_path / "a.metrics.jsonl")[0]["loss"]), 1) in writer.scalars
    log = MetricsLog(tmp_path / "x.jsonl")
    log.start(0)
    log.write({"step": 1, "split": "val", "loss": float("nan")})  # non-finite numbers stay in the JSON only
    assert read_metrics(tmp_path / "x.jsonl")[0]["split"] == "val"


@pytest.mark.parametrize("command", ["track_long", "eval_binned"])
def test_csv_outputs_are_checked_before_evaluating(command, tmp_path, capsys):
    import importlib

    blocker = tmp_path / "file"
    blocker.write_text("x")
    module = importlib.import_module(f"hope.cli.{command}")
    assert module.main(["--ckpt", str(tmp_path / "missing.pt"), "--out", str(blocker / "x.csv")]) == 2
    assert "is a file, not a folder" in error_line(capsys)  # not "checkpoint not found": checked first
