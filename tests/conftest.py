"""Shared test setup: offline hub variables, deterministic CPU threads, small helpers."""

from __future__ import annotations

import os

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

import pytest  # noqa: E402  (after the offline variables are set)
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
