"""Two ranks (torchrun, gloo on the CPU), two DataLoader workers each, on a prepared collection: every process
reads the one file mapping (none holds a copy of the corpus), and each rank reads its own offsets."""

from __future__ import annotations

import json
import random
import textwrap

import torch

from hope.data.corpus import load_corpus
from hope.data.loader import sample_batch
from hope.data.prepare import FileSource, build_collection

PROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import hope.data.loader as loader
    import hope.train.loop as loop
    from hope.cli import train as cli
    from hope.data.mapped import mapping_of

    rank, out = int(os.environ["RANK"]), Path(sys.argv[1])
    sample_batch, make_loader = loader.sample_batch, loop.make_loader

    def probed_sample(data, batch_size, seq_len, seed, index=0, rank=0, *args):  # runs in the (forked) workers
        x, y = sample_batch(data, batch_size, seq_len, seed, index, rank, *args)
        record = {"pid": os.getpid(), "mapping": str(mapping_of(data)), "x": x.tolist()}
        (out / f"batch-{rank}-{index}.json").write_text(json.dumps(record))
        return x, y

    def probed_loader(data, *args, **kwargs):  # runs in the rank
        (out / f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(), "mapping": str(mapping_of(data))}))
        return make_loader(data, *args, **kwargs)

    loader.sample_batch, loop.make_loader = probed_sample, probed_loader
    sys.exit(cli.main(sys.argv[2:]))
""")

FLAGS = ["--model_type", "baseline", "--seq_len", "32", "--batch_size", "2", "--steps", "3", "--device", "cpu",
         "--workers", "2", "--set", "dim=32", "--set", "depth=1", "--set", "num_heads=2", "--set", "max_len=32",
         "--set", "eval_batches=2", "--set", "warmup_steps=1", "--set", "seed=5"]


def test_ranks_and_workers_share_the_mapping_and_read_their_own_offsets(tmp_path, torchrun):
    books = tmp_path / "books"
    books.mkdir()
    for i in range(12):
        (books / f"b{i:02d}.txt").write_bytes(random.Random(i).randbytes(3000 + 500 * i))
    data = tmp_path / "books.bin"
    build_collection(data, [FileSource(books)], progress=False)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    proc = torchrun(probe, tmp_path, *FLAGS, "--data", data, "--out", tmp_path / "ck.pt")
    assert proc.returncode == 0, proc.stderr[-3000:]

    train = load_corpus(data).train
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["mapping"] for r in ranks] == [str(data)] * 2  # each rank maps the file, holds no copy
    for r, rank in enumerate(ranks):
        batches = [json.loads((tmp_path / f"batch-{r}-{i}.json").read_text()) for i in range(3)]
        assert {b["mapping"] for b in batches} == {str(data)}  # so do the workers
        assert rank["pid"] not in {b["pid"] for b in batches} and len({b["pid"] for b in batches}) == 2
        for i, b in enumerate(batches):  # rank r reads batch i of its own stream
            assert torch.equal(torch.tensor(b["x"]), sample_batch(train, 2, 32, 5, i, r)[0])
    first = [json.loads((tmp_path / f"batch-{r}-0.json").read_text())["x"] for r in (0, 1)]
    assert first[0] != first[1]
