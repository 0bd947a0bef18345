"""Speed and memory benchmarks of `hope`: HOPE against its parameter-matched Transformer baseline.

Run as:
    python -m bench --quick          # the < 5 minute suite (fewer repeats, generation up to 4096 bytes)
    python -m bench                  # the full suite (more repeats, generation up to 16384 bytes)
    python -m bench --only ops train # a subset: ops, train, train_memory, generate, op, store, peer

Every figure that compares two implementations is measured in one process, interleaved and repeated, and
reported as the median; ratios are the figures that count on a shared machine. Peak memory is measured in a
fresh subprocess per case (``ru_maxrss`` on CPU, ``torch.cuda.max_memory_allocated`` on CUDA), since a
process-wide high-water mark cannot be reset. Ops per step (`ops`) are counted, not timed: the aten ops one
training forward + backward dispatches (a `TorchDispatchMode` counter, always on CPU, batch size 2; the count
does not depend on the batch size), which is what launch overhead on a GPU scales with. The table is printed and the JSON written to
``bench/results/`` (gitignored). Never part of the default test run, except the tiny smoke test in
``tests/test_bench.py``.
"""
