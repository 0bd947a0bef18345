"""Shared test setup: one torch thread per test; a two-process torchrun launcher (test_ddp, test_fsdp).

The suite runs on 2-core machines (CI, laptops) where torch's default thread pool oversubscribes the cores and
makes tiny models ~10x slower; one thread is faster and keeps timings predictable. Restored after each test.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# Runs hope.cli.train's main() as `python -m hope.cli.train` would, with SIGINT sent to rank 0 after optimiser step
# HOPE_TEST_STOP_AT (when set), and records each rank's losses and weights when training finishes, in
# <argv[1]>/<HOPE_TEST_TAG><rank>.json. Launch it with the `torchrun` fixture: torchrun(probe, out_dir, *flags).
TRAIN_PROBE = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import hope.train.loop as loop
    from hope.cli import train as cli

    rank, stop_at, train = int(os.environ["RANK"]), int(os.environ.get("HOPE_TEST_STOP_AT", "0")), loop.train

    def stopper(step, record):
        if rank == 0 and step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    def probed_train(cfg, **kwargs):
        result = train(cfg, on_step=stopper, **kwargs)
        seen = dict(losses=result.losses, weights=[p.double().sum().item() for p in result.model.parameters()],
                    val=result.val)
        Path(sys.argv[1], f"{os.environ['HOPE_TEST_TAG']}{rank}.json").write_text(json.dumps(seen))
        return result

    loop.train = probed_train
    sys.exit(cli.main(sys.argv[2:]))
""")


SLOW_TIMEOUT_S = 1800  # `-m slow` tests compile with TorchInductor (minutes on a CPU); the rest get pyproject's limit


def pytest_collection_modifyitems(items):
    """Every test has a time limit (pytest-timeout, `timeout` in pyproject.toml), so a hung test fails instead of
    hanging the suite; the slow tests get a longer one unless they set their own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def torchrun():
    """`torchrun(script, *args, env={...})`: `torchrun --standalone --nproc_per_node=2 script *args` on the CPU
    (gloo, one thread per process), the ranks importing this checkout's `hope` rather than whichever copy the
    environment has installed; returns the CompletedProcess. Skips when torchrun or torch.distributed is missing."""
    exe = Path(sys.executable).parent / "torchrun"
    if not exe.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch has no torch.distributed")
    root = str(Path(__file__).resolve().parents[1])

    def launch(script, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
        path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
        full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **(env or {}))
        argv = [str(exe) if exe.exists() else "torchrun", "--standalone", "--nproc_per_node=2", str(script),
                *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout)

    return launch


def save_tiny_gpt2(out, lines: list[str], n_layer: int) -> None:
    """A tiny GPT-2 with a byte-level BPE tokenizer trained on `lines`, saved to `out` like a Hub checkpoint
    (nothing downloaded). Used by the Hugging Face comparison tests."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                     eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=n_layer, n_head=2, n_embd=32, n_positions=64, vocab_size=len(tokenizer),
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    tokenizer.save_pretrained(out)
    transformers.GPT2LMHeadModel(config).save_pretrained(out)
