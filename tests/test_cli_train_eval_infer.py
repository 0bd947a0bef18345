"""`hope-train`, `hope-eval`, `hope-infer` as the user runs them: outputs, EMA-aware evaluation, generation with
carried state, signals, and one-line errors (exit 2, no traceback) for bad input.

Most commands run in-process through `main(argv)`; the signal test starts real `hope-train` /
`python -m hope.cli.train` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hope.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from hope.cli import eval as eval_cli
from hope.cli import infer as infer_cli
from hope.cli import train as train_cli
from hope.config import config_to_dict, load_config
from hope.data.corpus import load_corpus, synthetic_corpus
from hope.eval.lm import evaluate_lm
from hope.sampling import stream_logits
from hope.models import build_model

TINY_FLAGS = ["--seq_len", "32", "--batch_size", "2", "--steps", "2", "--device", "cpu",
              "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
              "--set", "attn_window=16", "--set", "memory_capacity=8", "--set", "top_k=2",
              "--set", "eval_batches=2", "--set", "warmup_steps=1", "--set", "log_interval=1",
              "--set", "update_frequencies={mem_write: 8, error_update: 8, optimizer_step: 2}"]
TINY = dict(dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2, memory_capacity=8,
            top_k=2, device="cpu", update_frequencies={"mem_write": 4, "error_update": 8, "optimizer_step": 2})
FINAL_KEYS = {"loss", "ppl", "accuracy", "top5_acc", "top10_acc"}
EVAL_KEYS = {"loss", "ppl", "bpb", "accuracy", "top5_acc", "top10_acc"}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_bytes(bytes(synthetic_corpus(20_000, seed=7).tolist()))
    return path


def untrained_checkpoint(path: Path, model_type: str = "baseline", **overrides) -> Path:
    """A valid checkpoint of a freshly initialised tiny model (no training needed)."""
    cfg = load_config(None, [dict(TINY, model_type=model_type), overrides])
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_checkpoint(path, {"model_type": model_type, "config": config_to_dict(cfg), "model": model.state_dict(),
                                  "ema": None, "step": 0})


def one_line_error(capsys, fragment: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


# ----------------------------------------------------------------------------- hope-train and hope-eval


def test_train_prints_final_json_and_writes_default_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(TINY_FLAGS + ["--model_type", "baseline"]) == 0  # no --data: the synthetic corpus
    out, err = capsys.readouterr()
    final = json.loads(out.strip().splitlines()[-1])
    assert set(final) == FINAL_KEYS
    assert "saved hope_checkpoint.pt" in err
    log = tmp_path / "hope_checkpoint.metrics.jsonl"
    assert (tmp_path / "hope_checkpoint.pt").is_file() and log.is_file()
    assert json.loads(log.read_text().splitlines()[-1])["final"]
    assert err.strip().splitlines()[-2:] == [f"wrote {log.name}", "wrote hope_checkpoint.config.yaml"]

    assert eval_cli.main(["--ckpt", "hope_checkpoint.pt", "--device", "cpu"]) == 0  # no --data: synthetic as well
    report = json.loads(capsys.readouterr().out)
    assert EVAL_KEYS <= report.keys() and report["data"].startswith("synthetic") and report["split"] == "val"
    assert report["bpb"] == pytest.approx(report["loss"] / 0.6931471805599453)

    assert train_cli.main(TINY_FLAGS + ["--model_type", "baseline", "--out", "off/ck.pt", "--set", "metrics.track_ppl=false",
                                        "--set", "metrics.track_accuracy=false"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == {"loss"}
    assert (tmp_path / "off" / "ck.metrics.jsonl").is_file()


def test_eval_uses_ema_weights_and_reproduces_training(tmp_path, data_file, capsys):
    """hope-eval of the checkpoint == the final validation of training (EMA weights, schedules at the last step)."""
    ckpt = tmp_path / "ck.pt"
    flags = TINY_FLAGS + ["--model_type", "hope", "--data", str(data_file), "--out", str(ckpt), "--lr", "0.01",
                          "--set", "ema_decay=0.5", "--set", "mem_write={start: 0.2, end: 1.0, warmup_steps: 10}"]
    assert train_cli.main(flags) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert eval_cli.main(["--ckpt", str(ckpt), "--data", str(data_file), "--device", "cpu", "--max_windows", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert EVAL_KEYS <= report.keys()
    assert report["loss"] == pytest.approx(trained["loss"], abs=2e-6)
    assert report["top10_acc"] == pytest.approx(trained["top10_acc"], abs=2e-6)

    raw, cfg, _ = load_model(ckpt, use_ema=False)
    val = load_corpus(str(data_file)).val
    raw_loss = evaluate_lm(raw, val, cfg.seq_len, cfg.batch_size, torch.device("cpu"), max_windows=4)["loss"]
    assert abs(raw_loss - report["loss"]) > 1e-4  # the raw weights score differently: the EMA is what was used


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("model_type", ["baseline", "hope"])
def test_token_by_token_generation_equals_a_full_forward(model_type):
    """Greedy, float64: the logits each byte was sampled from == one forward over prompt + generated bytes,
    across segment (seq_len 16) and memory-chunk (4, 8) boundaries."""
    cfg = load_config(None, [dict(TINY, model_type=model_type, seq_len=16, max_len=32)])
    torch.manual_seed(0)
    model = build_model(cfg).double().eval()
    with torch.no_grad():  # livelier weights than the init, so greedy does not just repeat one byte
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    prompt = b"Hello, HOPE"
    steps = list(stream_logits(model, prompt, 25, temperature=0.0))
    tokens = [t for t, _ in steps]
    assert len(set(tokens)) > 1
    ids = torch.tensor([list(prompt) + tokens[:-1]])
    with torch.no_grad():
        full, _, _ = model(ids)
    stepped = torch.stack([logits for _, logits in steps])  # (25, 256)
    assert stepped.dtype == torch.float64
    torch.testing.assert_close(stepped, full[0, len(prompt) - 1:], rtol=1e-9, atol=1e-9)
    assert tokens == full[0, len(prompt) - 1:].argmax(-1).tolist()


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, 20)], ids=["greedy", "sampled-top-k"])
def test_generation_reads_one_value_per_byte_and_feeds_the_device_token(temperature, top_k):
    """Per generated byte the host reads exactly one value (the byte it yields), and nothing builds a tensor from
    host data: sampling stays on the model's device and the sampled token is the next forward's input."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.reads = self.lifted = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            self.reads += name == "_local_scalar_dense"
            self.lifted += name in ("lift_fresh", "lift_fresh_copy")
            return func(*args, **(kwargs or {}))

    cfg = load_config(None, [dict(TINY, model_type="hope", seq_len=16, max_len=32)])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    steps = stream_logits(model, b"Hello", 12, temperature=temperature, top_k=top_k, seed=0)
    next(steps)  # the prompt's forward (and the first sample) outside the watch
    watch = Watch()
    with watch:
        rest = list(steps)
    assert len(rest) == 11
    assert watch.reads == 11 and watch.lifted == 0


def test_infer_streams_and_seed_makes_it_reproducible(tmp_path, capsys):
    ckpt = untrained_checkpoint(tmp_path / "ck.pt", "hope")
    argv = ["--ckpt", str(ckpt), "--prompt", "Hi", "--max_new_tokens", "12", "--device", "cpu", "--top_k", "50"]
    outputs = []
    for seed in ("3", "3", "4"):
        assert infer_cli.main(argv + ["--seed", seed, "--temperature", "1.0"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]
    assert all(out.startswith("Hi") for out in outputs)


class _ForcedBytes(torch.nn.Module):
    """A stand-in model that emits a fixed byte sequence (greedy), one byte per forward."""

    def __init__(self, sequence: list[int]):
        super().__init__()
        self.sequence = sequence

    def forward(self, idx, targets=None, state=None):
        n = 0 if state is None else state["n"]
        logits = torch.zeros(idx.shape[0], idx.shape[1], 256)
        logits[:, -1, self.sequence[min(n, len(self.sequence) - 1)]] = 10.0
        return logits, None, {"n": n + 1}


def test_infer_prints_invalid_utf8_as_replacement_characters_while_streaming(tmp_path, monkeypatch):
    import hope.checkpoint

    sequence = [0x41, 0xFF, 0xC3, 0xA9, 0x42]  # "A", an invalid byte, "é" split over two bytes, "B"
    monkeypatch.setattr(hope.checkpoint, "load_model", lambda path, device: (_ForcedBytes(sequence), None, None))
    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            writes.append(None)

    monkeypatch.setattr(sys, "stdout", Recorder())
    assert infer_cli.main(["--ckpt", "x.pt", "--prompt", ">", "--max_new_tokens", "5", "--temperature", "0",
                           "--device", "cpu"]) == 0
    assert "".join(w for w in writes if w) == ">A\ufffdéB\n"
    assert writes[:6] == [">", None, "A", None, "\ufffd", None]  # each character flushed as soon as it is complete


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    good = untrained_checkpoint(root / "good.pt")
    files = {"good": good, "missing": root / "missing.pt", "corrupt": root / "corrupt.pt",
             "truncated": root / "truncated.pt", "pickle_junk": root / "junk.pt", "foreign": root / "foreign.pt", "pickled": root / "pickled.pt",
             "empty_data": root / "empty.txt", "missing_data": root / "nope.txt", "short_data": root / "short.txt"}
    files["corrupt"].write_bytes(random.Random(0).randbytes(300))
    files["pickle_junk"].write_bytes(b"\x80\x02" + random.Random(1).randbytes(300))  # a pickle header, then noise
    files["truncated"].write_bytes(good.read_bytes()[:2000])
    torch.save({"a": 1}, files["foreign"])
    torch.save({"format": FORMAT, "model": {}, "config": {}, "extra": argparse.Namespace(x=1)}, files["pickled"])
    files["empty_data"].write_bytes(b"")
    files["short_data"].write_bytes(b"too short")
    return files


@pytest.mark.parametrize("command, argv, fragment", [
    ("eval", ["--ckpt", "{missing}"], "checkpoint not found"),
    ("eval", ["--ckpt", "{corrupt}"], "corrupt, truncated or not a PyTorch checkpoint"),
    ("eval", ["--ckpt", "{truncated}"], "corrupt, truncated or not a PyTorch checkpoint"),
    ("eval", ["--ckpt", "{pickle_junk}"], "corrupt, truncated or not a PyTorch checkpoint"),
    ("eval", ["--ckpt", "{foreign}"], "is not a hope checkpoint"),
    ("eval", ["--ckpt", "{pickled}"], "Python objects that safe (weights_only) loading refuses"),
    ("eval", ["--ckpt", "{good}", "--data", "{empty_data}"], "data file is empty"),
    ("eval", ["--ckpt", "{good}", "--data", "{missing_data}"], "data file not found"),
    ("eval", ["--ckpt", "{good}", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    ("eval", ["--ckpt", "{good}", "--max_windows", "-1"], "--samples (--max_windows) must be >= 0"),
    ("eval", ["--ckpt", "{good}", "--amp", "fp8"], "--amp must be bf16, fp16 or off"),
    ("infer", ["--ckpt", "{pickled}"], "refuses to run"),
    ("infer", ["--ckpt", "{foreign}"], "is not a hope checkpoint"),
    ("infer", ["--ckpt", "{good}", "--temperature", "-1"], "--temperature must be >= 0"),
    ("infer", ["--ckpt", "{good}", "--top_k", "0"], "--top_k must be >= 1"),
    ("train", ["--data", "{missing_data}"], "data file not found"),
    ("train", ["--data", "{empty_data}"], "data file is empty"),
    ("train", ["--data", "{short_data}"], "fewer than seq_len + 1"),
    ("train", ["--set", "num_heads=3"], "must be divisible by num_heads"),
    ("train", ["--seq_len", "64"], "max_len (32) must be >= seq_len (64)"),
    ("train", ["--set", "optimizer_type=adam"], "unknown optimizer_type 'adam'"),
    ("train", ["--set", "lr=-1"], "lr must be > 0"),
    ("train", ["--set", "dimm=32"], "unknown config key 'dimm'"),
    ("train", ["--config", "{missing_data}.yaml"], "config file not found"),
    ("train", ["--amp", "fp8"], "--amp must be bf16, fp16 or off"),
    ("train", ["--resume", "{missing}"], "checkpoint not found"),
    ("train", ["--resume", "{foreign}"], "is not a hope checkpoint"),
    ("train", ["--resume", "{good}", "--set", "dim=64"], "different shape than the config"),
    ("train", ["--resume", "{good}", "--model_type", "hope"], "holds a baseline model but the config asks for hope"),
])
def test_bad_input_is_one_line_and_exit_2(command, argv, fragment, bad_files, tmp_path, capsys):
    main = {"train": train_cli.main, "eval": eval_cli.main, "infer": infer_cli.main}[command]
    argv = [a.format(**{k: str(v) for k, v in bad_files.items()}) for a in argv]
    if command == "train":
        argv = TINY_FLAGS + ["--out", str(tmp_path / "ck.pt")] + argv
    elif "--device" not in argv:
        argv += ["--device", "cpu"]
    assert main(argv) == 2
    one_line_error(capsys, fragment)


def test_device_cuda_without_cuda_exits_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert train_cli.main(TINY_FLAGS + ["--device", "cuda:0", "--out", str(tmp_path / "ck.pt")]) == 2
    one_line_error(capsys, "no CUDA device")


# ----------------------------------------------------------------------------- signals


def _console(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", f"hope.cli.{name.split('-')[1]}"]


class Child:
    """A subprocess whose stdout and stderr are read by threads, so that waiting for a line can time out: a plain
    `proc.stdout.readline()` blocks until the child writes, and a hung child would hang the suite."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()  # stdout lines, then None at its end
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.err.append), daemon=True)]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, put) -> None:
        for line in stream:
            put(line)
        put(None)

    def wait_for(self, prefix: str, timeout: float) -> None:
        """Return once the child prints a stdout line starting with `prefix`; fail the test if it exits first or
        `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                pytest.fail(f"no line starting with {prefix!r} within {timeout} s: {self.stderr()}")
            if line is None:
                pytest.fail(f"the child exited before printing {prefix!r}: {self.stderr()}")
            if line.startswith(prefix):
                return

    def finish(self, timeout: float) -> str:
        """Wait for the child to exit (TimeoutExpired fails the test); returns its stderr."""
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        return self.stderr()

    def stderr(self) -> str:
        return "".join(line for line in self.err if line is not None)


def test_a_hung_child_fails_instead_of_hanging():
    child = Child([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    try:
        start = time.monotonic()
        with pytest.raises(pytest.fail.Exception, match="within 0.5 s"):
            child.wait_for("step 1/", timeout=0.5)
        assert time.monotonic() - start < 10
    finally:
        child.proc.kill()
        child.finish(timeout=10)


def test_sigint_and_sigterm_save_a_resumable_checkpoint(tmp_path, data_file, capsys):
    root = str(Path(__file__).resolve().parents[1])  # the children import this checkout's hope, not an installed one
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    runs = {}
    for sig, launcher in ((signal.SIGINT, _console("hope-train")),
                          (signal.SIGTERM, [sys.executable, "-m", "hope.cli.train"])):
        out = tmp_path / sig.name / "ck.pt"
        argv = launcher + TINY_FLAGS + ["--steps", "100000", "--data", str(data_file), "--out", str(out)]
        runs[sig] = (out, Child(argv, env))
    try:
        for sig, (out, child) in runs.items():
            child.wait_for("step 1/", timeout=120)  # training has logged its first step
            child.proc.send_signal(sig)
        for sig, (out, child) in runs.items():
            err = child.finish(timeout=120)
            assert child.proc.returncode == 128 + sig, err
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(f"interrupted by {sig.name} at step "), err
            assert f"--resume {out}" in lines[0] and "Traceback" not in err
            step = load_checkpoint(out)["step"]
            assert step >= 1
            assert train_cli.main(["--resume", str(out), "--steps", str(step + 1)]) == 0  # the checkpoint's config
            final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert set(final) == FINAL_KEYS
            assert load_checkpoint(out)["step"] == step + 1
            steps = [r["step"] for r in map(json.loads, (out.parent / "ck.metrics.jsonl").read_text().splitlines())
                     if r["split"] == "train" and "final" not in r]
            assert steps == list(range(1, step + 2))
    finally:
        for _, child in runs.values():
            if child.proc.poll() is None:
                child.proc.kill()
