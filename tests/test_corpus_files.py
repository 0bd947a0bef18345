"""Corpus files: `--data FILE` is memory-mapped, and its train/validation split is exactly the historical one.

The split of a single file is pinned against the implementation that read the file whole (frozen below) and
against the sha256 of each split it produced, so memory-mapping changes no byte of either split.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hope.data.corpus import VAL_FRACTION, load_corpus
from hope.data.loader import BatchStream
from hope.data.mapped import mapped_region, mapping_of


def _historical_split(path: Path) -> tuple[bytes, bytes]:
    """The split as hope/data/corpus.py computed it before memory mapping (read whole, first 90% train)."""
    raw = path.read_bytes()
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    n_train = int(len(data) * (1 - VAL_FRACTION))
    return data[:n_train].numpy().tobytes(), data[n_train:].numpy().tobytes()


# (file size, train bytes, sha256 of train, sha256 of validation) produced by the whole-file implementation on
# random.Random(size).randbytes(size).
PINNED = [
    (12345, 11110, "c38f69993a7ff9afe155659887c393275355841034e498d1b3debd040c6088cd",
     "fbf962d9595d2efe0913c761e543dea437405bd3c3f8e6f812fe2d8a13fad4de"),
    (10, 9, "959fb797cc0a084d3812bac5ec81575311bf29dcb431dfab258303b52d7d0e14",
     "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
    (1001, 900, "d2b0c8b6f057dc11decfdaa1713032b37b1a7ba64e45ee3a12adb74966edb972",
     "08d90ef48370774c82269223d74067739e93e3f75adf8c366bbe2e3a9a3bdcb8"),
    (1 << 20, 943718, "67baa2b814498a9d082b0ee8f2c78845215d134ced64a92c71331c82a88d198c",
     "95e3e1ecac5cfdd4e2db2c0bf897ed67f22ad2337ba159c502b9048b5b4d8d30"),
]


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("size, n_train, train_sha, val_sha", PINNED)
def test_single_file_split_is_pinned(tmp_path, size, n_train, train_sha, val_sha):
    path = tmp_path / "corpus.bin"
    path.write_bytes(random.Random(size).randbytes(size))
    for seed in (0, 3):  # the seed picks the synthetic corpus only; a file's split never depends on it
        corpus = load_corpus(path, seed=seed)
        assert corpus.train.dtype == corpus.val.dtype == torch.uint8
        assert (len(corpus.train), len(corpus.train) + len(corpus.val)) == (n_train, size)
        assert (_sha(corpus.train), _sha(corpus.val)) == (train_sha, val_sha)


@pytest.mark.parametrize("size", [*range(1, 60), 999, 1000, 1001, 4097, 65_537])
def test_single_file_split_equals_the_whole_file_implementation(tmp_path, size):
    path = tmp_path / "corpus.txt"
    path.write_bytes(random.Random(size + 1).randbytes(size))
    corpus = load_corpus(str(path))
    assert (corpus.train.numpy().tobytes(), corpus.val.numpy().tobytes()) == _historical_split(path)
    assert corpus.name == str(path)


# ----------------------------------------------------------------------------- memory mapping


def test_a_file_is_mapped_not_read(tmp_path):
    path = tmp_path / "corpus.bin"
    content = random.Random(5).randbytes(50_000)
    path.write_bytes(content)
    corpus = load_corpus(path)
    assert mapping_of(corpus.train) == path and mapping_of(corpus.val) == path  # views of the file's mapping
    assert corpus.val.data_ptr() == corpus.train.data_ptr() + len(corpus.train)  # no copy between the splits
    assert corpus.train[100:110].numpy().tobytes() == content[100:110]
    assert mapped_region(corpus.val) == (str(path), len(corpus.train), len(corpus.val))
    assert mapped_region(corpus.train.clone()) is None
    window = corpus.train[10:20].long()  # reading a window copies that window only
    window += 1
    assert path.read_bytes() == content  # the file is never written


def test_a_mapped_slice_pickles_by_reference(tmp_path):
    path = tmp_path / "corpus.bin"
    path.write_bytes(random.Random(6).randbytes(1 << 20))
    stream = BatchStream(load_corpus(path).train, 2, 16, seed=0, start=0, stop=3)
    blob = pickle.dumps(stream)
    assert len(blob) < 4096  # a path and two numbers, not the megabyte
    again = pickle.loads(blob)
    assert mapping_of(again.data) == path and torch.equal(again.data, stream.data)
    assert [b[0].tolist() for b in again] == [b[0].tolist() for b in stream]
    plain = BatchStream(torch.arange(100, dtype=torch.uint8), 2, 16, seed=0, start=0, stop=1)
    assert torch.equal(pickle.loads(pickle.dumps(plain)).data, plain.data)  # an ordinary tensor still pickles


WORKER_PROBE = textwrap.dedent("""
    import json, os, sys
    from torch.utils.data import DataLoader
    from hope.data.corpus import load_corpus
    from hope.data.loader import BatchStream, sample_batch
    from hope.data.mapped import mapping_of


    class ProbedStream(BatchStream):
        def __iter__(self):  # in the worker: which file backs the bytes it reads
            with open(os.path.join(self.seen, f"worker{os.getpid()}"), "w") as fh:
                fh.write(str(mapping_of(self.data)))
            yield from super().__iter__()


    if __name__ == "__main__":
        data = load_corpus(sys.argv[1]).train
        stream = ProbedStream(data, 2, 16, seed=0, start=0, stop=4)
        stream.seen = sys.argv[2]
        loader = DataLoader(stream, batch_size=None, num_workers=2, multiprocessing_context=sys.argv[3])
        batches = [x.tolist() for x, y in loader]
        print(json.dumps({"same": batches == [sample_batch(data, 2, 16, 0, i)[0].tolist() for i in range(4)]}))
""")


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_the_shared_mapping(tmp_path, context):
    """Workers read the file's mapping (inherited by fork, mapped again after spawn), never a copy of it."""
    path = tmp_path / "corpus.bin"
    path.write_bytes(random.Random(7).randbytes(200_000))
    probe = tmp_path / "probe.py"
    probe.write_text(WORKER_PROBE)
    seen = tmp_path / "seen"
    seen.mkdir()
    proc = subprocess.run([sys.executable, str(probe), str(path), str(seen), context], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"same": True}
    workers = list(seen.iterdir())
    assert len(workers) == 2 and {w.read_text() for w in workers} == {str(path)}


RSS_PROBE = textwrap.dedent("""
    import json, re, sys
    from hope.config import load_config
    from hope.train.loop import train

    cfg = load_config(None, [dict(model_type="baseline", dim=32, depth=1, num_heads=2, seq_len=64, max_len=64,
                                  batch_size=4, steps=4, eval_batches=4, log_interval=1, eval_interval=2,
                                  warmup_steps=1, device="cpu", num_workers=int(sys.argv[3]), data=sys.argv[1],
                                  out=sys.argv[2])])
    result = train(cfg, save=False, verbose=False)
    status = open("/proc/self/status").read()
    kib = {key: int(re.search(key + r":\\s+(\\d+) kB", status).group(1)) for key in ("VmHWM", "VmRSS")}
    print(json.dumps({"peak_rss": kib["VmHWM"] * 1024, "rss": kib["VmRSS"] * 1024, "val_loss": result.val["loss"],
                      "train_loss": result.train["loss"], "steps": result.step}))
""")


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def _train_rss(tmp_path: Path, data: Path, workers: int = 0) -> dict:
    probe = tmp_path / "rss_probe.py"
    probe.write_text(RSS_PROBE)
    proc = subprocess.run([sys.executable, str(probe), str(data), str(tmp_path / "ck.pt"), str(workers)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SPARSE_BYTES = 6 << 30  # 6 GiB: the whole-file implementation needed ~3x this in RAM


def test_a_sparse_file_of_gigabytes_trains_and_evaluates_in_flat_memory(tmp_path):
    """Training steps and the final evaluation of both splits on a 6 GiB file: the process's peak resident set
    (VmHWM) stays that of a run on a 200 KB file, give or take, far below the file's size."""
    small = tmp_path / "small.bin"
    small.write_bytes(random.Random(8).randbytes(200_000))
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(SPARSE_BYTES)  # a hole: costs no disk, reads as zeros
        fh.seek(SPARSE_BYTES // 2)
        fh.write(random.Random(9).randbytes(4096))
    reference = _train_rss(tmp_path, small)
    mapped = _train_rss(tmp_path, big)
    print(f"peak RSS: {mapped['peak_rss'] / 2**20:.0f} MiB training on a {SPARSE_BYTES / 2**30:.0f} GiB file, "
          f"{reference['peak_rss'] / 2**20:.0f} MiB on a 200 KB file")
    assert mapped["steps"] == 4 and mapped["val_loss"] > 0 and mapped["train_loss"] > 0
    assert mapped["peak_rss"] < reference["peak_rss"] + (64 << 20)
    assert mapped["peak_rss"] < SPARSE_BYTES // 8
