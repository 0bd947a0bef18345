"""Shared test setup: one torch thread per test.

The suite runs on 2-core machines (CI, laptops) where torch's default thread pool oversubscribes the cores and
makes tiny models ~10x slower; one thread is faster and keeps timings predictable. Restored after each test.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
