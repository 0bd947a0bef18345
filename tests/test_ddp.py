"""`torchrun --standalone --nproc_per_node=2 -m hope.cli.train` on the CPU (gloo): ranks see different data, keep
identical weights, report identical all-reduced metrics, and only rank 0 prints, logs and saves."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_PROBE

from hope.data.corpus import synthetic_corpus

FLAGS = ["--model_type", "baseline", "--seq_len", "32", "--batch_size", "2", "--steps", "3", "--device", "cpu",
         "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
         "--set", "eval_batches=2", "--set", "warmup_steps=1", "--set", "log_interval=1", "--set", "eval_interval=2"]

# Runs hope.cli.train's main() as `python -m hope.cli.train` would, with probes around the library calls that
# record, per rank, what each process saw and saved.
PROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import hope.train.loop as loop
    from hope.cli import train as cli

    rank, seen = int(os.environ["RANK"]), {"saves": [], "first_batch": None}
    make_loader, save_checkpoint, train = loop.make_loader, loop.save_checkpoint, loop.train

    def probed_loader(*args, **kwargs):
        for i, (x, y) in enumerate(make_loader(*args, **kwargs)):
            if seen["first_batch"] is None:
                seen["first_batch"] = x[0, :16].tolist()
            yield x, y

    def probed_save(path, payload):
        seen["saves"].append(str(path))
        return save_checkpoint(path, payload)

    def probed_train(cfg, **kwargs):
        result = train(cfg, **kwargs)
        seen.update(val=result.val, train=result.train, losses=result.losses, rank=result.dist.rank,
                    world=result.dist.world_size, weights=[p.double().sum().item() for p in result.model.parameters()])
        Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(seen))
        return result

    loop.make_loader, loop.save_checkpoint, loop.train = probed_loader, probed_save, probed_train
    sys.exit(cli.main(sys.argv[2:]))
""")


def test_torchrun_two_processes_on_cpu(tmp_path, torchrun):
    data = tmp_path / "text.txt"
    data.write_bytes(bytes(synthetic_corpus(20_000, seed=7).tolist()))
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / "run" / "ck.pt"
    proc = torchrun(probe, tmp_path, *FLAGS, "--data", data, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]

    json_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1, proc.stdout  # the final metrics, printed by rank 0 only
    assert set(json.loads(json_lines[0])) == {"loss", "ppl", "accuracy", "top5_acc", "top10_acc"}
    assert proc.stdout.count("training baseline:") == 1

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["first_batch"] != r1["first_batch"]  # each rank reads its own batches
    assert r0["weights"] == r1["weights"]  # DDP keeps the replicas identical
    assert r0["val"] == r1["val"] and r0["train"] == r1["train"]  # all-reduced evaluation
    assert r0["losses"] == r1["losses"]  # the logged step loss is the mean over ranks
    assert r0["saves"] == [str(out), str(out)] and r1["saves"] == []  # periodic (step 2) and final, rank 0 only
    records = [json.loads(line) for line in out.with_name(out.stem + ".metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train" and "final" not in r] == [1, 2, 3]  # written once
    final_val = [r for r in records if r.get("final") and r["split"] == "val"][-1]
    assert json.loads(json_lines[0])["loss"] == pytest.approx(final_val["loss"], abs=1e-6)


def test_torchrun_long_streams_with_accumulation_resume_exactly(tmp_path, torchrun):
    """stream.use under torchrun: each rank reads its own streams, the checkpoint holds every rank's carried
    states, and a run interrupted mid-stream (step 2 of streams of 3 steps) resumes to the uninterrupted run."""
    data = tmp_path / "text.txt"
    data.write_bytes(bytes(synthetic_corpus(20_000, seed=7).tolist()))
    probe = tmp_path / "probe.py"
    probe.write_text(TRAIN_PROBE)
    flags = [*FLAGS, "--steps", "4", "--set", "grad_accum_steps=2", "--set", "stream.use=true",
             "--set", "stream.bptt_segments=2", "--set", "stream.reset_bytes=192", "--data", str(data)]

    def torchrun_(tag: str, out: Path, *extra: str, stop_at: int = 0) -> subprocess.CompletedProcess:
        return torchrun(probe, tmp_path, *flags, "--out", out, *extra,
                        env={"HOPE_TEST_TAG": tag, "HOPE_TEST_STOP_AT": str(stop_at)})

    whole = torchrun_("whole", tmp_path / "whole" / "ck.pt")
    assert whole.returncode == 0, whole.stderr[-3000:]
    split_out = tmp_path / "split" / "ck.pt"
    stopped = torchrun_("stopped", split_out, stop_at=1)  # the stop is all-reduced: every rank stops after step 2
    assert stopped.returncode != 0 and "interrupted by SIGINT at step 2/4" in stopped.stdout + stopped.stderr
    ckpt = torch.load(split_out, weights_only=True)
    assert ckpt["step"] == 2 and len(ckpt["stream"]["ranks"]) == 2
    r0, r1 = ckpt["stream"]["ranks"]
    assert len(r0) == 2 and r0[0]["offsets"] != r1[0]["offsets"] and r0[0]["offsets"] != r0[1]["offsets"]
    assert any(isinstance(a, torch.Tensor) and not torch.equal(a, b) for a, b in zip(r0[0]["state"], r1[0]["state"]))
    rest = torchrun_("rest", split_out, "--resume", str(split_out))
    assert rest.returncode == 0, rest.stderr[-3000:]
    w0, w1, g0, g1 = (json.loads((tmp_path / f"{tag}{r}.json").read_text())
                      for tag, r in (("whole", 0), ("whole", 1), ("rest", 0), ("rest", 1)))
    assert w0["weights"] == w1["weights"] and g0["weights"] == g1["weights"]
    assert g0["losses"] == w0["losses"][2:]
    assert g0["weights"] == w0["weights"]
