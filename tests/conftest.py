"""Shared test setup: offline hub variables, deterministic CPU threads, small helpers."""

from __future__ import annotations

import os

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def randomize_(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised adaLN and output layers included) random values,
    so invariance tests cannot pass just because some output is identically zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
