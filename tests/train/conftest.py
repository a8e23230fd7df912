"""Trainer tests run torch on one thread: on a shared 2-core machine two OpenMP threads per process
made a tiny model's DeepSpeed step ~40x slower (spin-waiting against other processes)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
