"""Speed and memory benchmarks of `hope`: HOPE against its parameter-matched Transformer baseline.

Run as:
    python -m bench --quick          # the < 5 minute suite (fewer repeats, generation up to 4096 bytes)
    python -m bench                  # the full suite (more repeats, generation up to 16384 bytes)
    python -m bench --only train op  # a subset: train, train_memory, generate, op, peer

Every figure that compares two implementations is measured in one process, interleaved and repeated, and
reported as the median; ratios are the figures that count on a shared machine. Peak memory is measured in a
fresh subprocess per case (``ru_maxrss`` on CPU, ``torch.cuda.max_memory_allocated`` on CUDA), since a
process-wide high-water mark cannot be reset. The table is printed and the JSON written to
``bench/results/`` (gitignored). Never part of the default test run, except the tiny smoke test in
``tests/test_bench.py``.
"""
